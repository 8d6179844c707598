"""``make demo``: the whole job once, small, on synthetic data (a few minutes on a CPU).

Generates data, trains a teacher, pseudo-labels the unlabeled images with
multi-transform inference, trains a student and the equal-budget baseline, and
prints their test AP: the experiment of :mod:`training.experiment` for one task
and one seed at demo sizes. ``distill experiment`` runs the full version.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from training.experiment import ExperimentConfig, run_experiment


def main(argv: list[str] | None = None) -> int:
    """Runs the demo; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", choices=("keypoints", "boxes"), default="keypoints")
    p.add_argument("--out", type=Path, default=Path("out/demo"))
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    threads = torch.get_num_threads()
    cfg = ExperimentConfig(out_dir=args.out, tasks=(args.task,), seeds=(args.seed,), jobs=1,
                           threads=threads, tta="standard", results_md=args.out / "RESULTS.md",
                           labeled=60, unlabeled=120, shifted=0, test=40, teacher_iters=200,
                           student_iters=300,
                           command=["python", "-m", "training.demo",
                                    *(sys.argv[1:] if argv is None else argv)])
    run_experiment(cfg)
    print(f"checkpoints, pseudo-labels and scores under {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
