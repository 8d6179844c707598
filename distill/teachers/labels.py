"""What an imported teacher's labels mean: categories, label slots, and labeled statistics.

``load_categories`` turns ``coco`` (torchvision's convention: the model's label
*is* the COCO category id, with "N/A" slots) or a COCO annotation file into
the card's categories, label map, flip map and OKS sigmas; the stats helpers
read and write the small labeled-statistics file of ``distill teacher stats``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torchvision.models._meta import _COCO_CATEGORIES, _COCO_PERSON_KEYPOINT_NAMES

from distill.card import LabeledStats, ModelCard, Task, detector_classes, flip_map_from_names
from distill.coco import (
    COCO_SIGMAS,
    flip_map_for,
    labeled_statistics,
    load_coco,
    oks_sigmas_for,
    training_categories,
)
from distill.errors import CardError, ConfigError, DataError
from distill.fileio import read_json

# COCO's person skeleton (1-based keypoint pairs), as published with person_keypoints_*.json.
COCO_PERSON_SKELETON: list[list[int]] = [
    [16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8],
    [7, 9], [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7]]
STATS_FORMAT = "distill-labeled-stats"
_COCO_SOURCE = "coco (torchvision's COCO labels)"
# How a COCO file's categories map to model labels: 1..N in file order (distill train), or
# the category ids themselves (torchvision's reference scripts, which never remap).
LABELS: tuple[str, ...] = ("contiguous", "category-id")


@dataclass(frozen=True)
class Categories:
    """What the categories imply for the card and for the detector's outputs."""

    task: Task
    categories: list[dict[str, Any]]
    label_ids: list[int | None] = field(default_factory=list)  # empty: labels 1..N in order
    flip_map: list[list[int]] = field(default_factory=list)
    oks_sigmas: list[float] | None = None
    source: str = _COCO_SOURCE

    @property
    def num_classes(self) -> int:
        """Detector outputs implied, background included."""
        return detector_classes(self.label_ids, self.categories)

    @property
    def num_keypoints(self) -> int:
        """Keypoints of the keypoint category (0 for boxes)."""
        return len(self.categories[0].get("keypoints", [])) if self.task == "keypoints" else 0


def load_categories(categories: str | Path, task: Task, labels: str = "contiguous",
                    num_outputs: int | None = None) -> Categories:
    """``"coco"`` (torchvision's COCO convention) or a COCO JSON.

    A JSON's categories become labels 1..N in file order, as ``distill train``
    maps them (``labels="contiguous"``), or keep their ids as labels
    (``labels="category-id"``), as torchvision's reference scripts train, with
    ``num_outputs`` (the weights' classes) label slots.
    """
    if str(categories) == "coco":
        return _torchvision_coco(task)
    if labels not in LABELS:
        raise ConfigError(f"labels must be one of {', '.join(LABELS)}; got {labels!r}")
    # The same mapping `distill train` uses.
    path = Path(categories)
    cats = training_categories(load_coco(path), task)
    label_ids: list[int | None] = []
    if labels == "category-id":
        ids = {int(c["id"]) for c in cats}
        slots = num_outputs if num_outputs is not None else max(ids) + 1
        if min(ids) < 1 or max(ids) >= slots:
            raise CardError(f"category ids of {path.name} ({min(ids)}..{max(ids)}) do not fit "
                            f"labels 1..{slots - 1} of the weights (0 is the background)")
        label_ids = [i if i in ids else None for i in range(slots)]
    if task == "boxes":
        return Categories(task, cats, label_ids, source=path.name)
    return Categories(task, cats, label_ids, flip_map=flip_map_for(cats[0]),
                      oks_sigmas=oks_sigmas_for(cats[0]), source=path.name)


def _torchvision_coco(task: Task) -> Categories:
    if task == "keypoints":
        names = list(_COCO_PERSON_KEYPOINT_NAMES)
        person = {"id": 1, "name": "person", "supercategory": "person", "keypoints": names,
                  "skeleton": COCO_PERSON_SKELETON}
        return Categories("keypoints", [person], [None, 1], flip_map_from_names(names),
                          [COCO_SIGMAS[n] for n in _COCO_PERSON_KEYPOINT_NAMES], _COCO_SOURCE)
    # 91 outputs: label i is COCO category id i; "N/A" slots are ids COCO never used.
    label_ids: list[int | None] = [None if i == 0 or name == "N/A" else i
                                   for i, name in enumerate(_COCO_CATEGORIES)]
    cats = [{"id": i, "name": _COCO_CATEGORIES[i]} for i in label_ids if i is not None]
    return Categories("boxes", cats, label_ids, source=_COCO_SOURCE)


def yolo_coco(task: Task) -> Categories:
    """Models trained on COCO by Ultralytics: detection classes 0..79 are COCO's 80
    categories in id order (labels 1..80 here, mapped to the COCO ids); pose models have
    the one person category with COCO's 17 keypoints."""
    if task == "keypoints":
        return _torchvision_coco("keypoints")
    ids = [i for i, name in enumerate(_COCO_CATEGORIES) if i and name != "N/A"]
    cats = [{"id": i, "name": _COCO_CATEGORIES[i]} for i in ids]
    return Categories("boxes", cats, [None, *ids], source="coco (Ultralytics' 80 COCO classes)")


def check_stats(stats: LabeledStats | None, card: ModelCard) -> None:
    """Raises :class:`CardError` when statistics name categories the card does not have."""
    if stats is None:
        return
    ids = {str(c["id"]) for c in card.categories}
    stray = sorted(set(stats.instances_per_image) - ids)
    if stray:
        raise CardError(f"labeled statistics name category ids {stray[:5]} that the teacher's "
                        f"categories ({card.provenance.get('categories_from')}) do not have")
    if card.task == "keypoints" and stats.visible_keypoints_per_instance is None:
        raise CardError("labeled statistics have no visible keypoints per instance (computed "
                        "for boxes?); compute them with `distill teacher stats --task keypoints`")


def labeled_stats_from_json(path: Path, task: Task) -> LabeledStats:
    """Statistics of a labeled COCO file, as ``distill train`` records them."""
    return labeled_statistics(load_coco(Path(path)), task)


def stats_to_json(stats: LabeledStats) -> dict[str, Any]:
    """The small stats file: what calibration needs, without the annotations."""
    return {"format": STATS_FORMAT, "version": 1, "images": stats.images,
            "instances_per_image": dict(stats.instances_per_image),
            "visible_keypoints_per_instance": stats.visible_keypoints_per_instance}


def load_stats_file(path: Path) -> LabeledStats:
    """Reads a stats file written by ``distill teacher stats``; :class:`DataError` if bad."""
    path = Path(path)
    data = read_json(path, "stats file")
    if not isinstance(data, dict) or data.get("format") != STATS_FORMAT:
        raise DataError(f"{str(path)!r} is not a stats file (write one with `distill teacher "
                        "stats LABELED.json --task TASK --out FILE`)")
    try:
        per_image = {str(int(k)): float(v) for k, v in data["instances_per_image"].items()}
        visible = data.get("visible_keypoints_per_instance")
        stats = LabeledStats(images=int(data["images"]), instances_per_image=per_image,
                             visible_keypoints_per_instance=None if visible is None
                             else float(visible))
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise DataError(f"stats file {str(path)!r} is malformed: {exc!r}") from exc
    numbers = [*per_image.values(), stats.visible_keypoints_per_instance or 0.0]
    if stats.images < 1 or any(not math.isfinite(v) or v < 0 for v in numbers):
        raise DataError(f"stats file {str(path)!r} needs images >= 1 and finite, non-negative "
                        "means")
    return stats
