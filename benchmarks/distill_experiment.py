"""The data-distillation experiment: teacher, pseudo-labels, student vs. equal-budget baseline.

A thin wrapper over ``training.experiment`` (the same as ``distill experiment``)::

    python benchmarks/distill_experiment.py                # default: about two hours on 2 CPU cores
    python benchmarks/distill_experiment.py --quick        # smoke test, about a minute

Writes ``docs/RESULTS.md`` (``<out-dir>/RESULTS.md`` with ``--quick``) and
``<out-dir>/results.json``. Rerunning the same command resumes finished steps.
"""

from __future__ import annotations

import argparse
import logging
import sys

from training.experiment import run_from_args
from training.experiment_config import add_arguments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    argv = sys.argv[1:] if argv is None else argv
    return run_from_args(args, ["python", "benchmarks/distill_experiment.py", *argv])


if __name__ == "__main__":
    sys.exit(main())
