"""The experiment's settings and flags, apart from the code that runs it.

Torch-free, so that ``distill --help`` (and the API image, which has no
torch) can build the ``experiment`` parser, and so that the pipeline can type
its settings without importing the orchestrator.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from distill.errors import ConfigError
from distill.options import TASKS, Task

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExperimentConfig:
    """Sizes, schedules and switches; the defaults are explained in the module docstring."""

    out_dir: Path
    tasks: tuple[Task, ...] = TASKS
    family: str = "figures"  # the synthetic look: "blocks" confirms what "figures" chose
    seeds: tuple[int, ...] = (2, 3)  # mean and spread; 0 and 1 served the diagnostics
    labeled: int = 40
    unlabeled: int = 500
    shifted: int = 400  # 0: no shifted-unlabeled student
    test: int = 150
    teacher_iters: int = 1000  # = student_iters: the teacher is the baseline
    student_iters: int = 1000
    batch_size: int = 4
    lr: float = 0.02
    labeled_ratio: float = 0.6  # students: share of labeled images in a minibatch
    student_init: str = "scratch"  # or "teacher": students start from the teacher's weights
    tta: str = "standard"
    rounds: int = 1  # 2: the round-1 student pseudo-labels again, a new student learns
    compare_pooling: bool = False  # boxes: also a student of Detectron's raw box pooling
    ignore_factor: float = 0.0  # > 0: also students whose unsure predictions are ignored
    oracle: bool = False  # also students taught the unlabeled (and shifted) true annotations
    arch: str = "tiny"
    min_size: int | None = None
    max_size: int | None = None
    device: str = "cpu"  # "cuda" / "cuda:N" / "auto" for every training, labeling, eval
    jobs: int = 2  # (task, seed) pipelines run in parallel, one thread each by default
    threads: int = 1
    results_md: Path | None = None
    quick: bool = False
    progress: bool = True
    command: list[str] = field(default_factory=list)


def quick_config(out_dir: Path, **overrides: Any) -> ExperimentConfig:
    """A smoke-test setting: a few images, a few iterations, one seed, one process."""
    settings: dict[str, Any] = {
        "seeds": (0,), "labeled": 6, "unlabeled": 6, "shifted": 4, "test": 4,
        "teacher_iters": 4, "student_iters": 6, "batch_size": 2, "tta": "flip",
        "min_size": 128, "max_size": 224, "jobs": 1, "quick": True, "rounds": 2,
        **overrides}
    return ExperimentConfig(out_dir=out_dir, **settings)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``distill experiment`` flags (also used by ``benchmarks/distill_experiment.py``)."""
    d = ExperimentConfig(out_dir=Path("runs/experiment"))
    p.add_argument("--out-dir", type=Path, default=d.out_dir, help="runs, data and results")
    p.add_argument("--results", type=Path, default=None,
                   help="Markdown report (default docs/RESULTS.md; <out-dir>/RESULTS.md "
                        "with --quick)")
    p.add_argument("--tasks", nargs="+", choices=TASKS, default=list(d.tasks))
    p.add_argument("--family", choices=("figures", "blocks"), default=d.family,
                   help="synthetic data family ('blocks': the look kept for confirmation)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(d.seeds))
    p.add_argument("--labeled", type=int, default=d.labeled)
    p.add_argument("--unlabeled", type=int, default=d.unlabeled)
    p.add_argument("--shifted", type=int, default=d.shifted,
                   help="shifted unlabeled images (0: skip that student)")
    p.add_argument("--test", type=int, default=d.test)
    p.add_argument("--teacher-iters", type=int, default=d.teacher_iters)
    p.add_argument("--student-iters", type=int, default=d.student_iters,
                   help="student AND baseline iterations (the equal budget)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--labeled-ratio", type=float, default=d.labeled_ratio,
                   help="students: probability that a minibatch image is a labeled one")
    p.add_argument("--student-init", choices=("scratch", "teacher"), default=d.student_init,
                   help="students start from their initial weights (the paper) or from the "
                        "teacher's")
    p.add_argument("--tta", default=d.tta, help="preset for pseudo-labels and +TTA rows")
    p.add_argument("--rounds", type=int, choices=(1, 2), default=d.rounds,
                   help="2: the round-1 student pseudo-labels the unlabeled split again and a "
                        "new student trains from scratch on them (reported beside round 1)")
    p.add_argument("--second-round", dest="rounds", action="store_const", const=2,
                   help=argparse.SUPPRESS)  # the old spelling of --rounds 2
    p.add_argument("--compare-pooling", action="store_true",
                   help="boxes: also pseudo-label with Detectron's raw box pooling and train "
                        "that student (rows 'student-raw')")
    p.add_argument("--ignore-factor", type=float, default=d.ignore_factor,
                   help="also students whose pseudo-labels carry ignore regions down to F x "
                        "the labeled instances per image (rows '...-ignore'; 0: none)")
    p.add_argument("--oracle", action="store_true",
                   help="also students taught the true annotations of the unlabeled and "
                        "shifted splits (synthetic data only): the ceiling of what "
                        "pseudo-labels can give")
    p.add_argument("--arch", default=d.arch)
    p.add_argument("--min-size", type=int, default=None)
    p.add_argument("--max-size", type=int, default=None)
    p.add_argument("--device", default=d.device,
                   help="cpu (default), cuda, cuda:N or auto, for every step")
    p.add_argument("--jobs", type=int, default=d.jobs, help="pipelines in parallel")
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads per job")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, few iterations")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace, command: list[str] | None = None
                     ) -> ExperimentConfig:
    """Maps the flags onto :class:`ExperimentConfig` (``--quick`` overrides the sizes);
    ``command`` is the command line recorded in the report (default: this process's)."""
    command = ["distill", *sys.argv[1:]] if command is None else command
    cfg = ExperimentConfig(
        out_dir=args.out_dir, tasks=tuple(args.tasks), family=args.family,
        seeds=tuple(args.seeds),
        labeled=args.labeled, unlabeled=args.unlabeled, shifted=args.shifted, test=args.test,
        teacher_iters=args.teacher_iters, student_iters=args.student_iters,
        batch_size=args.batch_size, lr=args.lr, labeled_ratio=args.labeled_ratio,
        student_init=args.student_init, tta=args.tta, rounds=args.rounds,
        compare_pooling=args.compare_pooling, ignore_factor=args.ignore_factor,
        oracle=args.oracle,
        arch=args.arch, min_size=args.min_size, max_size=args.max_size, jobs=args.jobs,
        device=args.device,
        threads=args.threads, results_md=args.results, progress=not args.quiet,
        command=command)
    if cfg.ignore_factor and cfg.ignore_factor < 1:
        raise ConfigError(f"--ignore-factor must be 0 (none) or >= 1, got {cfg.ignore_factor}")
    if args.quick:
        cfg = quick_config(args.out_dir, tasks=cfg.tasks, family=cfg.family, device=cfg.device,
                           progress=cfg.progress,
                           results_md=args.results, command=command, oracle=cfg.oracle,
                           compare_pooling=cfg.compare_pooling,
                           ignore_factor=cfg.ignore_factor, labeled_ratio=cfg.labeled_ratio,
                           student_init=cfg.student_init)
    elif cfg.results_md is None:
        cfg = replace(cfg, results_md=Path("docs/RESULTS.md"))
    if cfg.student_iters < cfg.teacher_iters and not cfg.quick:
        log.warning("the student schedule (%d) is shorter than the teacher's (%d)",
                    cfg.student_iters, cfg.teacher_iters)
    return cfg
