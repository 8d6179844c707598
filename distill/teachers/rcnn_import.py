"""Teachers trained elsewhere, turned into distill checkpoints (DESIGN section 4).

``distill teacher import`` reads a torchvision state dict, a checkpoint of
torchvision's reference training scripts or a distill checkpoint, pairs it with
categories (a COCO file, or ``coco``: torchvision's own COCO label convention,
where the model's label *is* the category id) and, optionally, the labeled
set's statistics, checks that the tensors fit the architecture, and writes a
checkpoint with a card. Everything is checked before anything is loaded, and
the weights are loaded strictly into a freshly built model, so a teacher that
imports is one that runs.
"""

from __future__ import annotations

import argparse
import difflib
import inspect
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import Tensor
from torchvision.models import detection as tvd

from distill.card import CHECKPOINT_FORMAT, LabeledStats, ModelCard, Task
from distill.cardfile import file_sha256
from distill.checkpoint import load_weights_file
from distill.errors import CardError, ConfigError
from distill.models.zoo import BATCHNORM_EPS, build_model, default_sizes
from distill.options import ARCH_TASKS, ARCHITECTURES, TASKS
from distill.teachers.labels import (
    Categories,
    check_stats,
    labeled_stats_from_json,
    load_categories,
)

_CLS_KEY = "roi_heads.box_predictor.cls_score.weight"
_KPS_KEY = "roi_heads.keypoint_predictor.kps_score_lowres.weight"
# Builder arguments the import sets itself (as arch options they would contradict the card),
# and the ones that take modules, which a JSON card cannot hold.
_RESERVED = {"num_classes", "num_keypoints", "min_size", "max_size", "weights",
             "weights_backbone"}
_MODULE_ARGS = {"backbone", "rpn_anchor_generator", "rpn_head", "box_roi_pool", "box_head",
                "box_predictor", "keypoint_roi_pool", "keypoint_head", "keypoint_predictor"}


def task_of(arch: str, state: dict[str, Tensor] | None = None) -> Task:
    """The task of an architecture; ``tiny`` does both, so its weights decide."""
    if arch not in ARCHITECTURES:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES}")
    task = ARCH_TASKS[arch]
    if task is not None:
        return task
    has_keypoints = any(k.startswith("roi_heads.keypoint_") for k in state or {})
    return "keypoints" if has_keypoints else "boxes"


def read_weights(path: Path) -> tuple[dict[str, Tensor], str, dict[str, Any] | None]:
    """The state dict in ``path``, the format detected, and a distill checkpoint's card."""
    path = Path(path)
    # torchvision's reference scripts pickle their argparse.Namespace as "args": an inert
    # record of plain values, so it is the one extra class allowed.
    with torch.serialization.safe_globals([argparse.Namespace]):
        payload = load_weights_file(path)
    if not isinstance(payload, dict):
        raise CardError(f"{path.name} holds a {type(payload).__name__}, not a state dict")
    card = None
    if payload.get("format") == CHECKPOINT_FORMAT:
        fmt, state = "distill-checkpoint", payload.get("state_dict")
        card = payload.get("card") if isinstance(payload.get("card"), dict) else None
    elif isinstance(payload.get("model"), dict):
        fmt, state = "torchvision-reference-checkpoint", payload["model"]
    else:
        fmt, state = "state-dict", payload
    if not isinstance(state, dict) or not state:
        raise CardError(f"{path.name} ({fmt}) holds no state dict")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, Tensor)]
    if bad:
        raise CardError(f"{path.name} ({fmt}) is not a state dict: entries {bad[:3]} are not "
                        "tensors")
    if all(k.startswith("module.") for k in state):  # saved from a DistributedDataParallel
        state, fmt = {k.removeprefix("module."): v for k, v in state.items()}, f"{fmt}+ddp"
    return dict(state), fmt, card


def import_teacher(arch: str, weights: Path, categories: str | Path, *,
                   stats: LabeledStats | None, min_size: int | None, max_size: int | None,
                   name: str | None, arch_options: dict[str, Any] | None = None,
                   stats_source: str | None = None, labeled_json: Path | None = None,
                   labels: str = "contiguous") -> tuple[ModelCard, dict[str, Tensor]]:
    """Builds the card and the checked state dict of an imported teacher.

    ``stats`` (e.g. from :func:`load_stats_file`) or ``labeled_json`` (statistics
    computed for the teacher's task, which for ``tiny`` only the weights tell)
    give the labeled statistics; neither leaves them ``None``. A distill
    checkpoint of the same architecture keeps its own sizes and arch options
    unless they are given. ``labels`` says how a COCO file's categories map to
    labels (see :func:`load_categories`). Raises :class:`CardError` when the
    weights do not fit the architecture or the categories.
    """
    if stats is not None and labeled_json is not None:
        raise ConfigError("give labeled statistics once: a stats file or a labeled JSON")
    task_of(arch)  # an unknown arch fails before the file is read
    weights = Path(weights)
    state, fmt, old_card = read_weights(weights)
    task = task_of(arch, state)
    cls = state.get(_CLS_KEY)
    outputs = int(cls.shape[0]) if cls is not None and cls.ndim == 2 else None
    cats = load_categories(categories, task, labels, num_outputs=outputs)
    if labeled_json is not None:
        stats, stats_source = labeled_stats_from_json(labeled_json, task), Path(labeled_json).name
    inherit = old_card if old_card is not None and old_card.get("arch") == arch else {}
    sizes = (int(inherit["min_size"]), int(inherit["max_size"])) if "min_size" in inherit \
        else default_sizes(arch)
    min_size = sizes[0] if min_size is None else min_size
    max_size = sizes[1] if max_size is None else max_size
    if not 0 < min_size <= max_size:
        raise ConfigError(f"need 0 < min_size <= max_size, got {min_size} and {max_size}")
    options = {**_published_defaults(arch, weights),
               **dict(inherit.get("arch_options") or {}), **(arch_options or {})}
    check_arch_options(arch, task, options)
    try:
        model = build_model(arch, task, num_classes=cats.num_classes,
                            num_keypoints=cats.num_keypoints, min_size=min_size,
                            max_size=max_size, options=options)
    except (TypeError, ValueError) as exc:  # e.g. a string where a number belongs
        raise ConfigError(f"{arch} cannot be built with arch options {options}: {exc}") from exc
    _check_fits(state, model.state_dict(), arch, weights.name, cats)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:  # the checks above should have caught it; say so plainly
        raise CardError(f"weights in {weights.name} do not fit {arch}: {exc}") from exc
    provenance = {
        "name": name or weights.stem, "imported": datetime.now(UTC).isoformat(timespec="seconds"),
        "source": weights.name, "source_sha256": file_sha256(weights), "source_format": fmt,
        "categories_from": cats.source,
        "labeled_stats_from": None if stats is None else stats_source,
        "torch": str(torch.__version__), "torchvision": str(torchvision.__version__)}
    if old_card is not None:
        provenance["source_provenance"] = old_card.get("provenance")
    card = ModelCard(arch=arch, task=task, categories=cats.categories, min_size=min_size,
                     max_size=max_size, labeled_stats=stats, arch_options=options,
                     flip_map=cats.flip_map, oks_sigmas=cats.oks_sigmas,
                     provenance=provenance, label_ids=cats.label_ids)
    check_stats(stats, card)
    # Round-trip through JSON and validation as a loader will, so a bad card fails now.
    return ModelCard.from_dict(json.loads(json.dumps(card.to_dict()))), model.state_dict()


def _published_defaults(arch: str, weights: Path) -> dict[str, Any]:
    """Options that torchvision itself applies to its published COCO weight files.

    Its builders run the COCO_V1 weights of these two architectures with batch-norm
    epsilon 0 (``overwrite_eps``); the files keep their published names
    (``<arch>_coco-<hash>.pth``), which is how they are recognised here.
    """
    published_v1 = ("keypointrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn")
    if arch in published_v1 and weights.name.startswith(f"{arch}_coco-"):
        return {BATCHNORM_EPS: 0.0}
    return {}


def _shape(t: Tensor) -> str:
    return " x ".join(str(d) for d in t.shape)


def check_arch_options(arch: str, task: Task, options: dict[str, Any]) -> None:
    """Raises :class:`ConfigError` for an option the detector does not take.

    torchvision passes unknown keyword arguments on to its image transform, which
    ignores them, so a misspelt threshold would otherwise be silently recorded.
    """
    clash = sorted(_RESERVED & set(options))
    if clash:
        raise ConfigError(f"arch options {clash} are set by the import itself; use "
                          "--categories / --min-size / --max-size instead")
    funcs: list[Any] = [tvd.FasterRCNN.__init__, tvd.transform.GeneralizedRCNNTransform.__init__]
    funcs += [tvd.KeypointRCNN.__init__] if task == "keypoints" else []
    funcs += [getattr(tvd, arch)] if arch != "tiny" else []
    known = {name for f in funcs for name, p in inspect.signature(f).parameters.items()
             if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}
    known -= _RESERVED | _MODULE_ARGS | {"self", "progress"}
    known.add(BATCHNORM_EPS)
    for key in options:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{arch} has no option {key!r}{hint}; options are "
                              f"{', '.join(sorted(known))}")
    try:
        json.dumps(options, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"arch options must be JSON values (the card holds them): {exc}") \
            from exc


def _check_counts(state: dict[str, Tensor], cats: Categories) -> None:
    """Classes and keypoints the tensors imply vs what the categories imply."""
    cls = state.get(_CLS_KEY)
    if cls is not None and cls.ndim == 2 and cls.shape[0] != cats.num_classes:
        slots, real = cats.num_classes - 1, len(cats.categories)
        what = f"{real} categories + background" if slots == real else \
            f"{real} categories in {slots} label slots + background"
        hint = ""
        if not cats.label_ids and cls.shape[0] > max(int(c["id"]) for c in cats.categories):
            hint = ("; if the model was trained with torchvision's reference scripts, whose "
                    "labels are the category ids, add --labels category-id")
        raise CardError(f"weights have {cls.shape[0]} classes ({_CLS_KEY} is {_shape(cls)}) but "
                        f"categories from {cats.source} imply {cats.num_classes} ({what}){hint}")
    kps = state.get(_KPS_KEY)
    # ConvTranspose2d weights are (in, out, k, k): out is the number of keypoints.
    if kps is not None and kps.ndim == 4 and kps.shape[1] != cats.num_keypoints:
        raise CardError(f"weights have {kps.shape[1]} keypoints ({_KPS_KEY} is {_shape(kps)}) "
                        f"but categories from {cats.source} imply {cats.num_keypoints}")


def _check_fits(state: dict[str, Tensor], own: dict[str, Tensor], arch: str, source: str,
                cats: Categories) -> None:
    """Names first (another architecture), then class and keypoint counts (other
    categories), then any other shape: each error names the first offending keys."""
    # BatchNorm fills a missing num_batches_tracked itself (torchvision's published weights
    # come from FrozenBatchNorm models without it), and FrozenBatchNorm drops a stray one.
    def counted(k: str) -> bool:
        return not k.endswith("num_batches_tracked")

    missing = [k for k in own if k not in state and counted(k)]
    unexpected = [k for k in state if k not in own and counted(k)]
    if not missing and not unexpected:
        _check_counts(state, cats)
    shapes = [f"{k} ({_shape(state[k])} in the file, {_shape(own[k])} in {arch})"
              for k in own if k in state and state[k].shape != own[k].shape]
    problems = [f"{len(keys)} {what}: {', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''}"
                for what, keys in (("missing keys", missing), ("unexpected keys", unexpected),
                                   ("shape mismatches", shapes)) if keys]
    if not problems:
        return
    guess = _guess_arch(set(filter(counted, state)), arch)
    hint = f"; they look like {guess} weights (use --arch {guess})" if guess else \
        "; is it another architecture, or weights of another model?"
    raise CardError(f"weights in {source} do not fit {arch}: {'; '.join(problems)}{hint}")


def _guess_arch(keys: set[str], tried: str) -> str | None:
    """The zoo architecture whose parameter names are exactly ``keys``, if any.

    Models are built on the meta device: names and shapes only, no memory or init cost.
    """
    for arch in ARCHITECTURES:
        if arch == tried:
            continue
        try:
            with torch.device("meta"):
                models = [build_model(arch, task, num_classes=2, num_keypoints=17,
                                      min_size=800, max_size=1333)
                          for task in (TASKS if arch == "tiny"
                                       else (task_of(arch),))]
        except Exception:  # a guess only: never let it hide the real error
            continue
        for model in models:
            if {k for k in model.state_dict() if not k.endswith("num_batches_tracked")} == keys:
                return arch
    return None

