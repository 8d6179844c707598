"""The settings of one training run, each field its ``distill train`` flag as well.

Torch-free, so that ``distill --help`` builds the ``train`` parser from these fields
(:mod:`training.config_flags`). The fields are in the order ``--help`` lists them.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from distill.cli_args import parse_arch_options
from distill.options import ARCHITECTURES, Task
from training.config_flags import cli, command_line
from training.defaults import DEFAULT_BATCH, DEFAULT_ITERS, DEFAULT_LABELED_RATIO, DEFAULT_LR

# What training does with iscrowd annotations (COCO crowds, pseudo-label ignore regions).
CrowdRule = Literal["ignore", "drop"]
CROWD_RULES: tuple[CrowdRule, ...] = get_args(CrowdRule)
# The forward pass's arithmetic: float32, or bfloat16 autocast (training.precision).
Precision = Literal["fp32", "bf16"]
PRECISIONS: tuple[Precision, ...] = get_args(Precision)


def _spell_arch_options(options: dict[str, Any]) -> list[str]:
    """``{"x": 1}`` -> ``["x=1"]``: what :func:`parse_arch_options` reads back."""
    return [f"{key}={json.dumps(value)}" for key, value in options.items()]


@dataclass(kw_only=True)
class TrainConfig:
    """Every setting of a run; ``distill train`` has one flag per field (but ``command``)."""

    task: Task = field(metadata=cli())
    train_json: Path = field(metadata=cli("labeled COCO file"))
    images: Path = field(metadata=cli("folder of the labeled images"))
    pseudo_json: Path | None = field(
        default=None, metadata=cli("COCO pseudo-labels (distill annotate)"))
    pseudo_images: Path | None = field(
        default=None, metadata=cli("folder of the pseudo-labeled images"))
    labeled_ratio: float = field(default=DEFAULT_LABELED_RATIO, metadata=cli(
        "probability that a minibatch image is a labeled one (default %(default)s)"))
    arch: str = field(default="tiny", metadata=cli(choices=ARCHITECTURES, always=True))
    # The process's budget, applied by `distill train`; the trainer itself leaves torch's
    # threads as its caller set them.
    threads: int | None = field(default=None, metadata=cli(
        "torch threads per process (default: $DISTILL_TORCH_THREADS, else half the cores, "
        "so that a worker or a second training fits beside)"))
    iters: int = field(default=DEFAULT_ITERS, metadata=cli(always=True))
    batch_size: int = field(default=DEFAULT_BATCH, metadata=cli(  # global: split over ranks
        "images per iteration over all processes", always=True))
    lr: float = field(default=DEFAULT_LR, metadata=cli(always=True))
    momentum: float = field(default=0.9, metadata=cli())
    weight_decay: float = field(default=1e-4, metadata=cli())
    warmup_iters: int | None = field(default=None, metadata=cli(  # None: default_warmup(iters)
        "default: 10%% of --iters, at least 50 (or half of --iters) and at most 200"))
    steps: tuple[float, ...] = field(default=(0.7, 0.9), metadata=cli(
        "fractions of --iters where the rate drops by 10x"))
    out: Path = field(metadata=cli("checkpoint to write"))
    init: str = field(default="scratch", metadata=cli(
        "'scratch' (initial weights, the method's default) or a checkpoint"))
    crowd: CrowdRule = field(default="ignore", metadata=cli(
        "iscrowd annotations (COCO crowds, pseudo-label ignore regions): neither object nor "
        "background (default), or dropped"))
    resume: bool = field(default=False, metadata=cli(
        "continue from <out stem>.last.pt when it exists"))
    stop_at: int | None = field(default=None, metadata=cli(  # for time-sliced jobs
        "leave after this iteration (resumable)"))
    seed: int = field(default=0, metadata=cli(always=True))
    min_size: int | None = field(default=None, metadata=cli(
        "test-time shorter side (arch default)"))
    max_size: int | None = field(default=None, metadata=cli("longer-side cap (arch default)"))
    scale_jitter: tuple[float, float] = field(default=(0.75, 1.25), metadata=cli(
        "training sizes as factors of --min-size", metavar=("LOW", "HIGH")))
    flip_prob: float = field(default=0.5, metadata=cli())
    checkpoint_every: int = field(default=500, metadata=cli())
    log_every: int = field(default=20, metadata=cli())
    num_workers: int = field(default=0, metadata=cli("data-loader processes", flag="--workers"))
    device: str = field(default="auto", metadata=cli("cpu, cuda, cuda:N or auto"))
    backbone_weights: Path | None = field(default=None, metadata=cli(
        "local pretrained backbone file"))
    arch_options: dict[str, Any] = field(default_factory=dict, metadata=cli(
        "detector constructor option, VALUE as JSON (repeatable)", flag="--arch-option",
        metavar="KEY=VALUE", parse=parse_arch_options, spell=_spell_arch_options))
    max_grad_norm: float | None = field(default=None, metadata=cli(
        "clip gradients to this norm"))
    precision: Precision = field(default="fp32", metadata=cli(
        "bf16: the forward pass in bfloat16 autocast (weights, optimizer and checkpoints "
        "stay float32); faster on GPUs and on CPUs with AVX-512 BF16 or AMX, and its "
        "results differ from fp32's (docs/BENCHMARKS.md)"))
    sync_bn: bool = field(default=False, metadata=cli(
        "synchronise BatchNorm statistics across GPUs (torchrun on CUDA)"))
    tensorboard: bool | None = field(default=None, metadata=cli(
        "TensorBoard events next to the checkpoint (default: if installed)"))
    progress: bool = field(default=True, metadata=cli(
        "no progress bar (one log line per checkpoint instead)", flag="--quiet",
        invert=True))
    command: list[str] | None = None  # for the card; None: this process's sys.argv

    def to_command(self) -> list[str]:
        """The ``distill train`` command line that runs this configuration."""
        return command_line(self, ("distill", "train"))

    def settings(self) -> dict[str, Any]:
        """JSON-compatible form for the card's provenance."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, Path):
                out[key] = str(value)
            elif isinstance(value, tuple):
                out[key] = list(value)
        out.pop("command")
        return out
