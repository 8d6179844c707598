"""The settings of ``distill loop``, each field its flag as well (:mod:`training.config_flags`).

Torch-free, so that ``distill --help`` builds the ``loop`` parser from these fields. A
field marked ``result`` changes what the run folder holds: a folder is claimed by one
combination of them (``settings.json``), so a rerun resumes instead of mixing.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

from distill.errors import ConfigError
from distill.options import ARCHITECTURES, Task
from training import config_flags
from training.config_flags import cli
from training.defaults import DEFAULT_BATCH
from training.train_config import Precision

StopAfter = Literal["teacher", "labels"]


@dataclass(frozen=True)
class LoopConfig:
    """Teacher -> pseudo-labels -> student (-> more rounds), an equal-budget baseline and
    the evaluation on a held-out split, for a user's COCO set and unlabeled folder."""

    labeled: Path = field(metadata=cli("labeled COCO file (keypoints or boxes)", result=True))
    images: Path = field(metadata=cli("folder of the labeled images", result=True))
    unlabeled: Path | None = field(default=None, metadata=cli(
        "folder of the unlabeled images (required, except with --preflight)", result=True))
    preflight: float | None = field(default=None, metadata=cli(
        "will a student pay on this data? Hide the labels of this share of the labeled "
        "training images and use those images as the unlabeled ones: the report adds how "
        "good their pseudo-labels are against the hidden truth and an oracle taught that "
        "truth (no --unlabeled, --teacher or --url)", result=True, before=None))
    out: Path = field(default=Path("runs/loop"), metadata=cli(
        "run folder: every step's output and the report; run again to resume"))
    test_json: Path | None = field(default=None, metadata=cli(
        "held-out COCO file to evaluate on (default: --test-fraction of the labeled images, "
        "split off by --seed and never trained on)", result=True))
    test_images: Path | None = field(default=None, metadata=cli(
        "folder of the held-out images (default: --images)", result=True))
    test_fraction: float = field(default=0.2, metadata=cli(
        "share of the labeled images held out when there is no --test-json "
        "(default %(default)s)", result=True))
    task: Task | None = field(default=None, metadata=cli(
        "default: keypoints when the labeled file's categories name keypoints, else boxes",
        result=True))
    teacher: Path | None = field(default=None, metadata=cli(
        "a teacher checkpoint (distill train, distill teacher import): no teacher training",
        result=True))
    url: str | None = field(default=None, metadata=cli(
        "pseudo-label round 1 through this running service (distill client annotate) "
        "instead of locally; later rounds label locally with the round's student"))
    key: str | None = field(default=None, metadata=cli(
        "the service's API key (default: $DISTILL_API_KEY)"))
    teacher_name: str | None = field(default=None, metadata=cli(
        "the service's teacher for --url (default: its only one)", result=True))
    rounds: int = field(default=1, metadata=cli(
        "students in a row: round N's student is taught the pseudo-labels of round N-1's "
        "(default %(default)s)"))
    teacher_iters: int = field(default=1000, metadata=cli(result=True))
    student_iters: int = field(default=1000, metadata=cli(
        "each student's AND the baseline's iterations (the equal budget; = --teacher-iters: "
        "the teacher is the baseline)", result=True))
    arch: str = field(default="tiny", metadata=cli(choices=ARCHITECTURES, result=True))
    batch_size: int = field(default=DEFAULT_BATCH, metadata=cli(
        "images per iteration", result=True))
    min_size: int | None = field(default=None, metadata=cli(
        "shorter image side (arch default)", result=True))
    max_size: int | None = field(default=None, metadata=cli(
        "longer-side cap (arch default)", result=True))
    seed: int = field(default=0, metadata=cli(
        "training seed and held-out split", result=True))
    tta: str = field(default="standard", metadata=cli(
        "transform preset of the pseudo-labels and of the '+ TTA' rows", result=True))
    device: str = field(default="cpu", metadata=cli(
        "cpu (default), cuda, cuda:N or auto, for every step"))
    precision: Precision = field(default="fp32", metadata=cli(
        "every training's arithmetic: fp32, or bf16 autocast (see distill train "
        "--precision)", result=True, before="fp32"))
    threads: int | None = field(default=None, metadata=cli(
        "torch threads (default: $DISTILL_TORCH_THREADS, else half the cores)"))
    stop_after: StopAfter | None = field(default=None, metadata=cli(
        "stop after the teacher (to deploy it to a service, then run again with --url) or "
        "after the round-1 pseudo-labels"))
    progress: bool = field(default=True, metadata=cli(
        "no progress bars", flag="--quiet", invert=True))
    command: list[str] = field(default_factory=list)  # recorded in the report

    def to_command(self) -> list[str]:
        """The ``distill loop`` command line of these settings (never with the API key)."""
        return config_flags.command_line(replace(self, key=None), ("distill", "loop"))

    def check(self) -> None:
        """Refuses settings that cannot run (from the command line or built in Python)."""
        if self.rounds < 1:
            raise ConfigError(f"--rounds must be at least 1, got {self.rounds}")
        if not 0 < self.test_fraction < 1:
            raise ConfigError(f"--test-fraction must be between 0 and 1, got {self.test_fraction}")
        if min(self.teacher_iters, self.student_iters) < 1:
            raise ConfigError("--teacher-iters and --student-iters must be at least 1")
        if self.preflight is None and self.unlabeled is None:
            raise ConfigError("--unlabeled is required (the folder of unlabeled images), unless "
                              "--preflight tries the loop on the labeled images alone")
        if self.preflight is not None:
            if not 0 < self.preflight < 1:
                raise ConfigError(f"--preflight must be between 0 and 1, got {self.preflight}")
            if self.unlabeled is not None:
                raise ConfigError("--preflight makes its unlabeled folder from the labeled images "
                                  "it hides: not with --unlabeled")
            given = [flag for flag, value in (("--teacher", self.teacher), ("--url", self.url))
                     if value is not None]
            if given:
                raise ConfigError(f"--preflight trains its own teacher on the labeled images it "
                                  f"does not hide: not with {', '.join(given)} (a teacher trained "
                                  "on the whole labeled set has seen the hidden labels)")

    def api_key(self) -> str | None:
        """``--key``, else ``$DISTILL_API_KEY`` (never written to the run folder)."""
        return self.key or os.environ.get("DISTILL_API_KEY")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``distill loop`` flags: one per field of :class:`LoopConfig`."""
    config_flags.add_arguments(p, LoopConfig)


def config_from_args(args: argparse.Namespace) -> LoopConfig:
    """Maps the flags onto :class:`LoopConfig` and checks what argparse cannot
    (:meth:`LoopConfig.check`)."""
    cfg: LoopConfig = config_flags.from_namespace(LoopConfig, args)
    cfg = replace(cfg, command=cfg.to_command())
    cfg.check()
    return cfg
