"""The experiment's settings, each field its ``distill experiment`` flag as well.

Torch-free, so that ``distill --help`` (and the API image, which has no torch) can
build the ``experiment`` parser, and so that the pipeline can type its settings
without importing the orchestrator. A field marked ``result`` changes results: a run
folder holds one combination of them (``training.experiment``'s ``settings.json``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from distill.errors import ConfigError
from distill.options import DEFAULT_SYNTH_FAMILY, SYNTH_FAMILIES, TASKS, Task
from training import config_flags
from training.config_flags import cli
from training.defaults import DEFAULT_BATCH, DEFAULT_LABELED_RATIO, DEFAULT_LR
from training.train_config import Precision

log = logging.getLogger(__name__)

StudentInit = Literal["scratch", "teacher"]
Rounds = Literal[1, 2]


@dataclass(frozen=True)
class ExperimentConfig:
    """Sizes, schedules and switches; the defaults are explained in the docstring of
    ``training.experiment``. ``before``: the value of run folders made before the field."""

    out_dir: Path = field(default=Path("runs/experiment"), metadata=cli(
        "runs, data and results"))
    results_md: Path | None = field(default=None, metadata=cli(
        "Markdown report (default docs/RESULTS.md; <out-dir>/RESULTS.md with --quick)",
        flag="--results"))
    tasks: tuple[Task, ...] = field(default=TASKS, metadata=cli())
    # The synthetic look: "blocks" confirms what "figures" chose.
    family: str = field(default=DEFAULT_SYNTH_FAMILY, metadata=cli(
        "synthetic data family ('blocks': the look kept for confirmation)",
        choices=SYNTH_FAMILIES, result=True, before="figures"))
    # Mean and spread; 0 and 1 served the diagnostics.
    seeds: tuple[int, ...] = field(default=(2, 3), metadata=cli())
    labeled: int = field(default=40, metadata=cli(result=True))
    unlabeled: int = field(default=500, metadata=cli(result=True))
    shifted: int = field(default=400, metadata=cli(
        "shifted unlabeled images (0: skip that student)", result=True))
    test: int = field(default=150, metadata=cli(result=True))
    # = student_iters: the teacher is the baseline.
    teacher_iters: int = field(default=1000, metadata=cli(result=True))
    student_iters: int = field(default=1000, metadata=cli(
        "student AND baseline iterations (the equal budget)", result=True))
    batch_size: int = field(default=DEFAULT_BATCH, metadata=cli(result=True))
    lr: float = field(default=DEFAULT_LR, metadata=cli(result=True))
    labeled_ratio: float = field(default=DEFAULT_LABELED_RATIO, metadata=cli(
        "students: probability that a minibatch image is a labeled one",
        result=True, before=0.6))
    student_init: StudentInit = field(default="scratch", metadata=cli(
        "students start from their initial weights (the paper) or from the teacher's",
        result=True, before="scratch"))
    tta: str = field(default="standard", metadata=cli(
        "preset for pseudo-labels and +TTA rows", result=True))
    rounds: Rounds = field(default=1, metadata=cli(
        "2: the round-1 student pseudo-labels the unlabeled split again and a new student "
        "trains from scratch on them (reported beside round 1)"))
    compare_pooling: bool = field(default=False, metadata=cli(
        "boxes: also pseudo-label with Detectron's raw box pooling and train that student "
        "(rows 'student-raw')"))
    ignore_factor: float = field(default=0.0, metadata=cli(
        "also students whose pseudo-labels carry ignore regions down to F x the labeled "
        "instances per image (rows '...-ignore'; 0: none)"))
    oracle: bool = field(default=False, metadata=cli(
        "also students taught the true annotations of the unlabeled and shifted splits "
        "(synthetic data only): the ceiling of what pseudo-labels can give"))
    arch: str = field(default="tiny", metadata=cli(result=True))
    min_size: int | None = field(default=None, metadata=cli(result=True))
    max_size: int | None = field(default=None, metadata=cli(result=True))
    device: str = field(default="cpu", metadata=cli(  # for every training, labeling, eval
        "cpu (default), cuda, cuda:N or auto, for every step"))
    precision: Precision = field(default="fp32", metadata=cli(
        "every training's arithmetic: fp32, or bf16 autocast (see distill train "
        "--precision)", result=True, before="fp32"))
    # (task, seed) pipelines run in parallel, one thread each by default.
    jobs: int = field(default=2, metadata=cli("pipelines in parallel"))
    threads: int = field(default=1, metadata=cli("torch threads per job"))
    quick: bool = field(default=False, metadata=cli(
        "smoke test: tiny sizes, few iterations", result=True))
    progress: bool = field(default=True, metadata=cli(
        "no progress bars", flag="--quiet", invert=True))
    command: list[str] = field(default_factory=list)  # recorded in the report


# What --quick sets, whatever the flags say: a few images, a few iterations, one seed,
# one process. Every other setting is the flags'.
_QUICK: dict[str, Any] = {
    "seeds": (0,), "labeled": 6, "unlabeled": 6, "shifted": 4, "test": 4,
    "teacher_iters": 4, "student_iters": 6, "batch_size": 2, "tta": "flip",
    "min_size": 128, "max_size": 224, "jobs": 1, "quick": True, "rounds": 2}


def quick_config(out_dir: Path, **overrides: Any) -> ExperimentConfig:
    """A smoke-test setting: a few images, a few iterations, one seed, one process."""
    return ExperimentConfig(out_dir=out_dir, **{**_QUICK, **overrides})


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``distill experiment`` flags (also used by ``benchmarks/distill_experiment.py``
    and ``distill sweep``): one per field of :class:`ExperimentConfig`."""
    config_flags.add_arguments(p, ExperimentConfig)
    p.add_argument("--second-round", dest="rounds", action="store_const", const=2,
                   help=argparse.SUPPRESS)  # the old spelling of --rounds 2


def config_from_args(args: argparse.Namespace, command: list[str] | None = None
                     ) -> ExperimentConfig:
    """Maps the flags onto :class:`ExperimentConfig` (``--quick`` overrides the sizes);
    ``command`` is the command line recorded in the report (default: this process's)."""
    command = ["distill", *sys.argv[1:]] if command is None else command
    cfg: ExperimentConfig = config_flags.from_namespace(ExperimentConfig, args,
                                                        command=command)
    if cfg.ignore_factor and cfg.ignore_factor < 1:
        raise ConfigError(f"--ignore-factor must be 0 (none) or >= 1, got {cfg.ignore_factor}")
    if cfg.quick:
        cfg = replace(cfg, **_QUICK)
    elif cfg.results_md is None:
        cfg = replace(cfg, results_md=Path("docs/RESULTS.md"))
    if cfg.student_iters < cfg.teacher_iters and not cfg.quick:
        log.warning("the student schedule (%d) is shorter than the teacher's (%d)",
                    cfg.student_iters, cfg.teacher_iters)
    return cfg
