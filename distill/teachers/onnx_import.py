"""``distill teacher import --arch yolo-onnx | rtdetr-onnx``: an ONNX export -> a teacher.

Everything is checked before anything is written: onnxruntime must load the file;
its one input must be an image batch [B, 3, H, W] (fixed or dynamic size); its one
output must have the declared layout (:mod:`distill.teachers.onnx_layouts`) for the
categories' class count (and keypoint shape); the exporter's own metadata, where
present, must agree on class names, keypoint shape and task; and a dry run on a grey
image must give that output. A mismatch is a one-line :class:`CardError`.

The checkpoint keeps the ONNX file's bytes as one uint8 tensor (``onnx``) beside the
card (see :mod:`distill.teachers.onnx_family` for why).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch

from distill.card import ModelCard, Task
from distill.cardfile import file_sha256
from distill.errors import CardError, ConfigError
from distill.teachers.interface import ImportRequest
from distill.teachers.labels import Categories, check_stats, labeled_stats_from_json
from distill.teachers.onnx_categories import onnx_categories
from distill.teachers.onnx_detector import OnnxConfig, OnnxDetector
from distill.teachers.onnx_layouts import Layout
from distill.teachers.onnx_session import Signature, open_session

# What --arch-option may set; the rest of the ONNX arch options come from the file.
SETTABLE = ("score_thresh", "nms_thresh", "max_det", "stride")
DEFAULT_IMGSZ = 640  # Ultralytics' default export size, for a dynamic model without metadata


def import_onnx(request: ImportRequest) -> tuple[ModelCard, dict[str, torch.Tensor]]:
    """The card and tensors of an ONNX teacher (see the module docstring)."""
    r = request
    if r.stats is not None and r.labeled_json is not None:
        raise ConfigError("give labeled statistics once: a stats file or a labeled JSON")
    if r.labels != "contiguous":
        raise ConfigError("--labels is for torchvision weights; an export's classes are "
                          "its categories in order")
    extra = sorted(set(r.arch_options or {}) - set(SETTABLE))
    if extra:
        raise ConfigError(f"{r.arch} has no option {extra[0]!r}; options are "
                          f"{', '.join(SETTABLE)} (the rest is read from the model)")
    weights = Path(r.weights)
    if not weights.is_file():
        raise CardError(f"weights {str(weights)!r} do not exist")
    data = weights.read_bytes()
    sig = Signature.of(open_session(data))
    task: Task | None = "boxes" if r.arch == "rtdetr-onnx" else None
    cats, kpt_shape = onnx_categories(r.categories, task, sig.metadata)
    nc = len(cats.label_ids) - 1 if cats.label_ids else len(cats.categories)
    kind = "rtdetr" if r.arch == "rtdetr-onnx" else "yolo-pose" if kpt_shape else "yolo-detect"
    layout = Layout(kind, nc, kpt_shape)  # type: ignore[arg-type]
    layout.check(sig, weights.name)
    _check_metadata(sig.metadata, cats, kpt_shape, weights.name)
    fixed = sig.input_shape[2:] if sig.input_shape[2] is not None else None
    base = _base_size(fixed, r, sig.metadata, weights.name)
    config = OnnxConfig.from_options({
        "layout": kind, "num_classes": nc, "kpt_shape": kpt_shape,
        "input_size": None if fixed is None else list(fixed),
        "batch": sig.input_shape[0], "stride": _int(sig.metadata.get("stride"), 32),
        **(r.arch_options or {})})
    stats, stats_source = r.stats, r.stats_source
    if r.labeled_json is not None:
        stats = labeled_stats_from_json(r.labeled_json, cats.task)
        stats_source = Path(r.labeled_json).name
    provenance = {
        "name": r.name or weights.stem,
        "imported": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": weights.name, "source_sha256": file_sha256(weights),
        "source_format": f"onnx ({kind})", "categories_from": cats.source,
        "labeled_stats_from": None if stats is None else stats_source,
        "exporter": {k: sig.metadata[k] for k in ("author", "version", "date", "task")
                     if k in sig.metadata}}
    card = ModelCard(arch=r.arch, task=cats.task, categories=cats.categories, min_size=base,
                     max_size=base, labeled_stats=stats, arch_options=config.options(),
                     flip_map=cats.flip_map, oks_sigmas=cats.oks_sigmas,
                     provenance=provenance, label_ids=cats.label_ids)
    check_stats(stats, card)
    card = ModelCard.from_dict(json.loads(json.dumps(card.to_dict())))
    _dry_run(data, card, weights.name)
    return card, {"onnx": torch.frombuffer(bytearray(data), dtype=torch.uint8)}


def _check_metadata(meta: dict[str, Any], cats: Categories, kpt_shape: tuple[int, int] | None,
                    source: str) -> None:
    """The exporter's own record of the classes and keypoints must agree with ours."""
    names = meta.get("names")
    if isinstance(names, dict) and names:
        own = [str(names[i]) for i in sorted(names)]
        given = [str(c["name"]) for c in cats.categories]
        if len(own) != len(given):
            raise CardError(f"{source} was trained on {len(own)} classes ({', '.join(own[:4])}"
                            f"...) but the categories from {cats.source} name {len(given)}")
        differ = [(a, b) for a, b in zip(own, given, strict=True)
                  if a.strip().lower() != b.strip().lower()]
        if differ:
            raise CardError(f"{source}'s class names differ from the categories from "
                            f"{cats.source}: {differ[0][0]!r} vs {differ[0][1]!r} (first of "
                            f"{len(differ)}); give the data.yaml it was trained with")
    own_kpt = meta.get("kpt_shape")
    if own_kpt is not None and kpt_shape is not None and list(own_kpt) != list(kpt_shape):
        raise CardError(f"{source} has kpt_shape {list(own_kpt)} but the categories from "
                        f"{cats.source} imply {list(kpt_shape)}")


def _base_size(fixed: tuple[int | None, ...] | None, r: ImportRequest, meta: dict[str, Any],
               source: str) -> int:
    """The card's size: the fixed input's longer side, or for a dynamic input the size
    given (--min-size / --max-size), else the exporter's imgsz, else 640."""
    given = {s for s in (r.min_size, r.max_size) if s is not None}
    if len(given) > 1:
        raise ConfigError("an ONNX teacher has one size (its input's longer side); give "
                          "--min-size and --max-size equal, or one of them")
    if fixed is not None:
        base = max(int(d or 0) for d in fixed)
        if given and given != {base}:
            raise ConfigError(f"{source} has a fixed input of {list(fixed)}; its size is {base}"
                              " (export with dynamic=True to run it at other sizes)")
        return base
    if given:
        return given.pop()
    imgsz = meta.get("imgsz")
    if isinstance(imgsz, list | tuple) and imgsz:
        return max(_int(v, DEFAULT_IMGSZ) for v in imgsz)
    return DEFAULT_IMGSZ


def _int(value: Any, default: int) -> int:
    return value if isinstance(value, int) and value > 0 else default


def _dry_run(data: bytes, card: ModelCard, source: str) -> None:
    """One grey image through the detector as the worker will run it."""
    grey = torch.full((3, card.max_size, card.max_size), 114 / 255)
    try:
        OnnxDetector(data, card).detect([grey], card.max_size, card.max_size, raw_cap=None)
    except CardError as exc:
        raise CardError(f"{source}: {exc}") from exc
    except Exception as exc:  # onnxruntime's own errors: a shape the graph refuses, ...
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CardError(f"{source} fails on a {card.max_size} px image: {first}") from exc
