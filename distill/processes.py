"""Child processes the project starts itself: a free local port to give one, and a stop
that signals it, waits, and kills it if it lingers.

``distill serve --with-worker`` stops its worker with it, ``make demo`` its stack, and
the benchmarks and tests their servers; one spelling, so that every caller reaps what it
started (no zombie) and signals only its own process, by its handle.
"""

from __future__ import annotations

import signal
import socket
import subprocess


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM,
                 timeout: float = 30) -> None:
    """Sends ``sig`` to a process we started (SIGTERM: a graceful stop, such as a worker
    finishing its job in flight) and reaps it, killing it if it outlives ``timeout``
    seconds; nothing when it has already exited."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
