"""Teacher checkpoints on disk (DESIGN section 4): one file, card plus weights.

A checkpoint is what ``torch.load(path, weights_only=True)`` reads:
``{"format": "distill-checkpoint", "version": 1, "card": {...}, "state_dict": {...}}``
plus, for training checkpoints, entries such as the iteration. Nothing here
unpickles an arbitrary object. Reading only the card, without torch, is
:func:`distill.cardfile.read_card`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from distill.card import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, ModelCard
from distill.cardfile import check_header
from distill.errors import CardError
from distill.fileio import atomic_writer


def save_checkpoint(path: Path, card: ModelCard, state_dict: dict[str, torch.Tensor],
                    extra: dict[str, Any] | None = None) -> None:
    """Writes a checkpoint atomically (temp file, fsync, rename)."""
    payload: dict[str, Any] = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "card": card.to_dict(),
        # Standard layout whatever the model ran in (distill/models/layout.py).
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
        **(extra or {}),
    }
    with atomic_writer(Path(path)) as fh:
        torch.save(payload, fh)


def load_weights_file(path: Path) -> Any:
    """``torch.load(path, weights_only=True)`` with every failure as a :class:`CardError`."""
    path = Path(path)
    if not path.is_file():
        raise CardError(f"checkpoint {str(path)!r} does not exist")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, not a torch file, or a forbidden pickle global
        raise CardError(f"{str(path)!r} is not a readable checkpoint: {exc}") from exc


def load_checkpoint(path: Path) -> tuple[ModelCard, dict[str, torch.Tensor], dict[str, Any]]:
    """Reads a checkpoint without unpickling arbitrary objects.

    Returns the card, the model's state dict, and the remaining entries
    (optimizer state, iteration and the like for training checkpoints).
    """
    payload = load_weights_file(path)
    check_header(payload, path)
    card = ModelCard.from_dict(payload["card"])
    state = payload.get("state_dict")
    if not isinstance(state, dict):
        raise CardError(f"{str(path)!r} holds no state_dict")
    rest = {k: v for k, v in payload.items()
            if k not in ("format", "version", "card", "state_dict")}
    return card, state, rest
