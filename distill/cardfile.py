"""A checkpoint's card and checksum, read without torch.

The API lists and validates teachers but never imports torch (it would
cost about a gigabyte per API process). A checkpoint written by
``torch.save`` is a zip archive whose ``data.pkl`` holds the object tree; the
tensors' bytes are separate members. This module unpickles ``data.pkl``
with an allow-list that turns every tensor into an inert placeholder, so
only plain containers and the JSON-like card come out, and nothing but those
few known names can be constructed: an untrusted file can do no more here
than under ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import hashlib
import io
import pickle
import zipfile
from pathlib import Path
from typing import Any, ClassVar

from distill.card import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, ModelCard
from distill.errors import CardError

_MAX_PICKLE_BYTES = 64 * 1024 * 1024  # the object tree of a checkpoint, not its tensors


class _Placeholder:
    """Stands in for a tensor or storage: accepts any construction, holds nothing."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __setstate__(self, state: Any) -> None:
        pass


def _rebuild(*args: Any, **kwargs: Any) -> _Placeholder:
    return _Placeholder()


class _CardUnpickler(pickle.Unpickler):
    """Allows plain containers and torch's tensor-rebuild names (as placeholders) only."""

    _SAFE: ClassVar[dict[tuple[str, str], type]] = {
        ("collections", "OrderedDict"): dict, ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in self._SAFE:
            return self._SAFE[(module, name)]
        if module == "torch" or module.startswith("torch."):
            # torch._utils._rebuild_tensor_v2, torch.FloatStorage, torch.float32, ...
            return _rebuild
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a checkpoint")

    def persistent_load(self, pid: Any) -> _Placeholder:
        return _Placeholder()  # a tensor storage, kept in another zip member


def read_payload(path: Path) -> dict[str, Any]:
    """The checkpoint's top-level dict with tensors replaced by placeholders."""
    path = Path(path)
    if not path.is_file():
        raise CardError(f"checkpoint {str(path)!r} does not exist")
    try:
        with zipfile.ZipFile(path) as archive:
            member = next((n for n in archive.namelist()
                           if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if member is None:
                raise CardError(f"{str(path)!r} is not a torch checkpoint (no data.pkl)")
            if archive.getinfo(member).file_size > _MAX_PICKLE_BYTES:
                raise CardError(f"{str(path)!r}: its object tree is implausibly large")
            raw = archive.read(member)
        payload = _CardUnpickler(io.BytesIO(raw)).load()
    except CardError:
        raise
    except (zipfile.BadZipFile, pickle.UnpicklingError, EOFError, OSError, ValueError,
            TypeError, AttributeError, IndexError, KeyError) as exc:
        raise CardError(f"{str(path)!r} is not a readable checkpoint: {exc}") from exc
    if not isinstance(payload, dict):
        raise CardError(f"{str(path)!r} is not a distill checkpoint (no card)")
    return payload


def check_header(payload: Any, path: Path) -> None:
    """Raises :class:`CardError` unless ``payload`` (a checkpoint's object tree, however it
    was read) carries the distill format and version; shared with
    :func:`distill.checkpoint.load_checkpoint`."""
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CardError(f"{str(path)!r} is not a distill checkpoint (no card); turn "
                        "torchvision weights into one with `distill teacher import`")
    if payload.get("version") != CHECKPOINT_VERSION:
        raise CardError(f"checkpoint version {payload.get('version')!r} is not supported "
                        f"(expected {CHECKPOINT_VERSION})")


def read_card(path: Path) -> ModelCard:
    """The card of a distill checkpoint; raises :class:`CardError` saying what is wrong."""
    payload = read_payload(path)
    check_header(payload, path)
    return ModelCard.from_dict(payload.get("card"))  # type: ignore[arg-type]


def file_sha256(path: Path) -> str:
    """Checksum of a file, read in chunks: a checkpoint's identity in jobs and outputs."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def card_with_checksum(card: ModelCard, path: Path, sha256: str | None = None) -> ModelCard:
    """The card with the checkpoint's file name and sha256 in its provenance, so every
    output names its teacher exactly."""
    prov = {**card.provenance, "checkpoint": Path(path).name,
            "sha256": sha256 or file_sha256(Path(path))}
    return ModelCard.from_dict({**card.to_dict(), "provenance": prov})
