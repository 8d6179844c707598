"""What a training run writes next to ``--out``, and the card it carries.

``out``                 the model: card + state dict (what ``annotate`` and ``eval`` read)
``<stem>.last.pt``      the latest training state for ``--resume`` (model, optimizer,
                        schedule, sampler and RNG states; weights-only-safe types)
``<stem>.metrics.jsonl`` one JSON object per logging interval
``<stem>.tb/``          TensorBoard events, when TensorBoard is installed
"""

from __future__ import annotations

import json
import platform
import shlex
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torchvision

from distill.card import ModelCard, Task
from distill.coco import CocoDict, flip_map_for, labeled_statistics, oks_sigmas_for


def resume_path(out: Path) -> Path:
    """``teacher.pt`` -> ``teacher.last.pt``."""
    return out.with_name(f"{out.stem}.last{out.suffix or '.pt'}")


def metrics_path(out: Path) -> Path:
    """``teacher.pt`` -> ``teacher.metrics.jsonl``."""
    return out.with_name(f"{out.stem}.metrics.jsonl")


def tensorboard_dir(out: Path) -> Path:
    """``teacher.pt`` -> ``teacher.tb``."""
    return out.with_name(f"{out.stem}.tb")


def build_card(*, arch: str, task: Task, labeled: CocoDict, categories: list[dict[str, Any]],
               min_size: int, max_size: int, arch_options: dict[str, Any],
               provenance: dict[str, Any]) -> ModelCard:
    """The card of a model trained on ``labeled`` (plus, maybe, pseudo-labels).

    The statistics are those of the labeled set only: calibration must match
    real annotation density, never the teacher's own pseudo-labels.
    """
    stats = labeled_statistics(labeled, task)
    flip_map: list[list[int]] = []
    sigmas = None
    if task == "keypoints":
        flip_map = flip_map_for(categories[0])
        sigmas = oks_sigmas_for(categories[0])
    card = ModelCard(arch=arch, task=task, categories=categories, min_size=min_size,
                     max_size=max_size, labeled_stats=stats, arch_options=dict(arch_options),
                     flip_map=flip_map, oks_sigmas=sigmas, provenance=provenance)
    # Round-trip through validation so a bad category fails now, not at load time.
    return ModelCard.from_dict(json.loads(json.dumps(card.to_dict())))


def provenance(command: list[str] | None, settings: dict[str, Any]) -> dict[str, Any]:
    """Where a model came from: the command line, the settings, versions, time, host."""
    argv = command if command is not None else sys.argv
    return {"command": shlex.join(str(a) for a in argv), "training": settings,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version(), "host": platform.node()}


def same_model(a: ModelCard, b: ModelCard) -> str | None:
    """Why two cards describe incompatible models (None when compatible)."""
    if (a.arch, a.task) != (b.arch, b.task):
        return f"{a.arch}/{a.task} vs {b.arch}/{b.task}"
    ids_a = [(c["id"], c.get("keypoints")) for c in a.categories]
    ids_b = [(c["id"], c.get("keypoints")) for c in b.categories]
    if ids_a != ids_b:
        return f"categories {ids_a} vs {ids_b}"
    return None


def rng_state() -> dict[str, Any]:
    """This process's torch RNG states (scale jitter draws from the global generator)."""
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restores what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def truncate_metrics(path: Path, iteration: int) -> None:
    """Drops metric lines logged after ``iteration`` (a resumed run redoes them)."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            if int(json.loads(line).get("iter", 0)) <= iteration:
                kept.append(line)
        except (json.JSONDecodeError, AttributeError, TypeError, ValueError):
            continue  # a torn last line from a killed run
    path.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")
