"""The teacher card (DESIGN section 4): what a checkpoint says about its model.

The card holds only JSON-compatible values (strings, numbers, lists, dicts
with string keys) so that it can be served over HTTP as it is, and so that
loading never has to unpickle an arbitrary object. This module is pure
Python: the API reads cards without torch (:mod:`distill.cardfile`); writing
and loading whole checkpoints lives in :mod:`distill.checkpoint`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from distill.errors import CardError
from distill.options import TASKS, Task

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_VERSION", "TASKS", "LabeledStats", "ModelCard",
           "Task", "flip_map_from_names"]
CHECKPOINT_FORMAT = "distill-checkpoint"
CHECKPOINT_VERSION = 1


def detector_classes(label_ids: list[int | None], categories: list[dict[str, Any]]) -> int:
    """Detector outputs, background included: one per ``label_ids`` slot when the card
    maps them, else the categories in order after the background."""
    return len(label_ids) if label_ids else len(categories) + 1


@dataclass(frozen=True)
class LabeledStats:
    """Statistics of the labeled training set, which calibration matches.

    ``instances_per_image`` maps a COCO category id (as a string, JSON style)
    to the mean number of non-crowd instances of that category per image.
    ``visible_keypoints_per_instance`` is the mean number of keypoints with
    v > 0 per keypoint instance (``None`` for box tasks).
    """

    images: int
    instances_per_image: dict[str, float]
    visible_keypoints_per_instance: float | None = None


@dataclass(frozen=True)
class ModelCard:
    """Everything needed to rebuild a teacher and to calibrate its pseudo-labels."""

    arch: str
    task: Task
    categories: list[dict[str, Any]]
    min_size: int
    max_size: int
    # None for a teacher imported without labeled statistics: only explicit thresholds work.
    labeled_stats: LabeledStats | None = None
    arch_options: dict[str, Any] = field(default_factory=dict)
    flip_map: list[list[int]] = field(default_factory=list)
    oks_sigmas: list[float] | None = None
    provenance: dict[str, Any] = field(default_factory=dict)
    # Model output label -> COCO category id, index 0 being the background; None marks a
    # slot no category uses (torchvision's COCO models keep 91 outputs, with "N/A" gaps).
    # Empty: labels 1..N are the categories in order (how ``distill train`` maps them).
    label_ids: list[int | None] = field(default_factory=list)

    @property
    def num_classes(self) -> int:
        """Classes of the detector, background included."""
        return detector_classes(self.label_ids, self.categories)

    @property
    def keypoint_names(self) -> list[str]:
        """Keypoint names of the keypoint category ([] for box tasks)."""
        if self.task != "keypoints":
            return []
        return list(self.categories[0].get("keypoints", []))

    @property
    def keypoint_instances_per_image(self) -> float | None:
        """The keypoint category's labeled instances per image, which bounds the keypoint
        work a calibrated job can keep (0.0 where the statistics leave the category out);
        None for a box task or a card without labeled statistics."""
        if self.task != "keypoints" or self.labeled_stats is None:
            return None
        return self.labeled_stats.instances_per_image.get(str(self.categories[0]["id"]), 0.0)

    def category_id(self, label: int) -> int | None:
        """COCO category id of model label ``label`` (1-based); None for an unused slot."""
        if self.label_ids:
            return self.label_ids[label] if 0 < label < len(self.label_ids) else None
        return int(self.categories[label - 1]["id"]) if 0 < label <= len(self.categories) \
            else None

    def flip_permutation(self) -> list[int]:
        """Keypoint index permutation that swaps each left/right pair."""
        perm = list(range(len(self.keypoint_names)))
        for i, j in self.flip_map:
            perm[i], perm[j] = j, i
        return perm

    def to_dict(self) -> dict[str, Any]:
        """JSON-compatible form, as stored in the checkpoint and served by the API."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelCard:
        """Validates and builds a card; raises :class:`CardError` naming the bad field."""
        if not isinstance(data, dict):
            raise CardError(f"card must be a mapping, got {type(data).__name__}")
        missing = [k for k in ("arch", "task", "categories", "min_size", "max_size")
                   if k not in data]
        if missing:
            raise CardError(f"card lacks required fields {missing}")
        if data["task"] not in TASKS:
            raise CardError(f"card task must be one of {TASKS}, got {data['task']!r}")
        cats = data["categories"]
        if not isinstance(cats, list) or not cats or not all(
            isinstance(c, dict) and "id" in c and "name" in c for c in cats
        ):
            raise CardError("card categories must be a non-empty list of {'id', 'name', ...}")
        if data["task"] == "keypoints" and (len(cats) != 1 or not cats[0].get("keypoints")):
            raise CardError("a keypoint card needs exactly one category with 'keypoints' names")
        stats = data.get("labeled_stats")
        try:
            labeled = None if stats is None else LabeledStats(
                images=int(stats["images"]),
                instances_per_image={str(k): float(v)
                                     for k, v in stats["instances_per_image"].items()},
                visible_keypoints_per_instance=(
                    None if stats.get("visible_keypoints_per_instance") is None
                    else float(stats["visible_keypoints_per_instance"])),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise CardError(f"card labeled_stats malformed: {exc!r}") from exc
        known = {f for f in cls.__dataclass_fields__}
        extra = {k: v for k, v in data.items() if k not in known}
        card = cls(
            arch=str(data["arch"]),
            task=data["task"],
            categories=cats,
            min_size=int(data["min_size"]),
            max_size=int(data["max_size"]),
            labeled_stats=labeled,
            arch_options=dict(data.get("arch_options") or {}),
            flip_map=[[int(i), int(j)] for i, j in data.get("flip_map") or []],
            oks_sigmas=(None if data.get("oks_sigmas") is None
                        else [float(s) for s in data["oks_sigmas"]]),
            provenance={**dict(data.get("provenance") or {}), **extra},
            label_ids=[None if i is None else int(i) for i in data.get("label_ids") or []],
        )
        ids = {int(c["id"]) for c in cats}
        stray = [i for i in card.label_ids if i is not None and i not in ids]
        if card.label_ids and (card.label_ids[0] is not None or stray):
            raise CardError(f"label_ids must start with null (the background) and name only "
                            f"category ids {sorted(ids)}; got {card.label_ids[:8]}...")
        k = len(card.keypoint_names)
        if any(not (0 <= i < k and 0 <= j < k) for i, j in card.flip_map):
            raise CardError(f"flip_map {card.flip_map} has indices outside 0..{k - 1}")
        if card.oks_sigmas is not None and len(card.oks_sigmas) != k:
            raise CardError(f"oks_sigmas has {len(card.oks_sigmas)} entries for {k} keypoints")
        return card


def flip_map_from_names(names: list[str], explicit: list[list[str]] | None = None
                        ) -> list[list[int]]:
    """Left/right keypoint index pairs.

    COCO's convention pairs ``left_x`` with ``right_x`` (prefix; ``x_left`` /
    ``x_right`` suffixes are accepted too). ``explicit`` name pairs, when a
    category supplies them, replace the derivation.
    """
    index = {n: i for i, n in enumerate(names)}
    if explicit is not None:
        try:
            return [[index[a], index[b]] for a, b in explicit]
        except KeyError as exc:
            raise CardError(f"flip map names keypoint {exc.args[0]!r}, not in {names}") from exc
    pairs: list[list[int]] = []
    for name, i in index.items():
        j = index.get(_mirrored_name(name) or "")
        if j is not None and i < j:
            pairs.append([i, j])
    return pairs


def _mirrored_name(name: str) -> str | None:
    """``left_eye`` -> ``right_eye`` (and suffix forms); None for unpaired names."""
    for a, b in (("left_", "right_"), ("right_", "left_")):
        if name.startswith(a):
            return b + name[len(a):]
    for a, b in (("_left", "_right"), ("_right", "_left")):
        if name.endswith(a):
            return name[: -len(a)] + b
    return None
