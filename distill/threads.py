"""One thread budget per torch process, so that two processes on one machine do not thrash.

torch starts as many threads as the machine has cores. Two such processes on
the same cores (a worker beside a training, two workers, the demo's worker and
its student) oversubscribe them and slow each other five to ten times (measured:
a 0.8 s training step became 5 s). The default budget is half the usable cores:
two processes then fill the machine exactly, and a process alone loses little,
since on the small machines where this matters a second thread adds far less
than a second process does (docs/BENCHMARKS.md). ``--threads`` or
``DISTILL_TORCH_THREADS`` set it explicitly.
"""

from __future__ import annotations

import os

ENV = "DISTILL_TORCH_THREADS"
SHARES = 2  # torch processes a machine is assumed to host at once


def usable_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def thread_budget(explicit: int | None = None) -> int:
    """``explicit`` if given, else ``$DISTILL_TORCH_THREADS``, else half the usable cores."""
    if explicit is not None:
        return max(1, explicit)
    from_env = os.environ.get(ENV, "").strip()
    if from_env.isdigit() and int(from_env) > 0:
        return int(from_env)
    return max(1, usable_cores() // SHARES)


def apply_thread_budget(explicit: int | None = None) -> int:
    """Sets torch's intra-op threads to the budget (imports torch); returns it."""
    import torch

    threads = thread_budget(explicit)
    torch.set_num_threads(threads)
    return threads
