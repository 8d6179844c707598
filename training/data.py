"""COCO data sets as torchvision detector targets.

Any COCO file works: category ids map to contiguous labels 1..C in the order of
the card's categories (and back through ``ModelCard.category_id``). What a
detector cannot learn from is filtered once, up front, and counted so the log
says what was dropped: crowd annotations, boxes that are degenerate after
clipping to the image, annotations of categories the model does not predict,
and (keypoint task) persons with no visible keypoint, which torchvision's
keypoint loss cannot use. Crowd annotations (``iscrowd: 1``: COCO's crowds and
the pseudo-labels' ignore regions) become ignore regions by default
(``training/ignore.py``: neither object nor background), or are dropped with
``crowd="drop"``. Images left without annotations stay in the set as negatives:
pseudo-labels are treated as complete, so an image where the teacher kept nothing
teaches "background" outside its ignore regions.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from distill.card import Task
from distill.coco import CocoDict, keypoint_category
from distill.errors import DataError
from distill.images import load_image
from training.augment import hflip
from training.ignore import IGNORE_LABEL
from training.train_config import CROWD_RULES, CrowdRule

log = logging.getLogger(__name__)

# Boxes thinner than this (pixels, after clipping) carry no signal and trip
# torchvision's degenerate-box assertion when rounding makes them empty.
MIN_BOX_SIDE = 1.0

Target = dict[str, Tensor]


@dataclass(frozen=True)
class ImageRecord:
    """One image and its filtered annotations, in the model's label space."""

    path: Path
    image_id: int
    boxes: np.ndarray  # (N, 4) float32, xyxy, clipped
    labels: np.ndarray  # (N,) int64, contiguous 1..C
    keypoints: np.ndarray | None  # (N, K, 3) float32; v=0 rows are zeros
    ignore: np.ndarray = field(  # (M, 4) float32, xyxy: ignore regions of the image
        default_factory=lambda: np.zeros((0, 4), dtype=np.float32))


@dataclass
class FilterCounts:
    """What :func:`prepare_records` kept and dropped, for the training log."""

    images: int = 0
    instances: int = 0
    negatives: int = 0
    crowd: int = 0  # dropped crowd annotations
    ignore_regions: int = 0  # crowd annotations kept as ignore regions
    degenerate: int = 0
    no_visible_keypoints: int = 0
    other_category: int = 0

    def describe(self, name: str) -> str:
        """One log line: ``labeled: 100 images (3 negatives), 250 instances; dropped ...``."""
        dropped = {"crowd": self.crowd, "degenerate boxes": self.degenerate,
                   "persons without visible keypoints": self.no_visible_keypoints,
                   "other categories": self.other_category}
        parts = [f"{v} {k}" for k, v in dropped.items() if v]
        return (f"{name}: {self.images} images ({self.negatives} without annotations, used as "
                f"negatives), {self.instances} instances, {self.ignore_regions} ignore "
                f"regions; dropped: "
                f"{', '.join(parts) if parts else 'nothing'}")


def check_compatible(categories: list[dict[str, Any]], coco: CocoDict, task: Task,
                     source: str) -> None:
    """Raises :class:`DataError` when ``coco`` (e.g. pseudo-labels) uses categories
    that do not match the model's (by id, name and, for keypoints, keypoint names)."""
    own = {int(c["id"]): c for c in categories}
    if task == "keypoints":
        cat = keypoint_category(coco)
        mine = categories[0]
        if int(cat["id"]) != int(mine["id"]) or list(cat["keypoints"]) != list(mine["keypoints"]):
            raise DataError(f"{source}: keypoint category id {cat['id']} with keypoints "
                            f"{cat['keypoints']} does not match the model's id {mine['id']} "
                            f"with {mine['keypoints']}")
        return
    for cat in coco["categories"]:
        cid = int(cat["id"])
        if cid in own and own[cid]["name"] != cat["name"]:
            raise DataError(f"{source}: category id {cid} is {cat['name']!r}, but the model's "
                            f"category {cid} is {own[cid]['name']!r}")
    unknown = sorted({int(a["category_id"]) for a in coco["annotations"]} - set(own))
    if unknown:
        raise DataError(f"{source}: annotations use category ids {unknown} that the model does "
                        f"not predict (its ids: {sorted(own)})")


def prepare_records(coco: CocoDict, images_dir: Path, task: Task,
                    categories: list[dict[str, Any]], crowd: CrowdRule = "ignore"
                    ) -> tuple[list[ImageRecord], FilterCounts]:
    """Turns a COCO dict into per-image targets; see the module docstring for the filters."""
    if crowd not in CROWD_RULES:
        raise ValueError(f"crowd must be one of {CROWD_RULES}, got {crowd!r}")
    label_of = {int(c["id"]): i + 1 for i, c in enumerate(categories)}
    num_kp = len(categories[0].get("keypoints", [])) if task == "keypoints" else 0
    counts = FilterCounts(images=len(coco["images"]))
    by_image: dict[Any, list[dict[str, Any]]] = {img["id"]: [] for img in coco["images"]}
    for ann in coco["annotations"]:
        by_image[ann["image_id"]].append(ann)
    records: list[ImageRecord] = []
    missing: list[str] = []
    for img in coco["images"]:
        path = Path(images_dir) / str(img["file_name"])
        if not path.is_file():
            missing.append(str(path))
            continue
        width, height = img.get("width"), img.get("height")
        boxes, labels, kps, ignore = [], [], [], []
        for ann in by_image[img["id"]]:
            if ann.get("iscrowd", 0) and crowd == "drop":
                counts.crowd += 1
                continue
            label = label_of.get(int(ann["category_id"]))
            if label is None:
                counts.other_category += 1
                continue
            x, y, w, h = (float(v) for v in ann["bbox"])
            box = _clip([x, y, x + w, y + h], width, height)
            if box[2] - box[0] < MIN_BOX_SIDE or box[3] - box[1] < MIN_BOX_SIDE:
                counts.degenerate += 1
                continue
            if ann.get("iscrowd", 0):
                ignore.append(box)
                continue
            if task == "keypoints":
                kp = _keypoints(ann, num_kp)
                if not (kp[:, 2] > 0).any():
                    counts.no_visible_keypoints += 1
                    continue
                kps.append(kp)
            boxes.append(box)
            labels.append(label)
        counts.instances += len(boxes)
        counts.ignore_regions += len(ignore)
        counts.negatives += not boxes
        records.append(ImageRecord(
            path=path, image_id=int(img["id"]),
            boxes=np.asarray(boxes, dtype=np.float32).reshape(-1, 4),
            labels=np.asarray(labels, dtype=np.int64),
            keypoints=(np.asarray(kps, dtype=np.float32).reshape(-1, num_kp, 3)
                       if task == "keypoints" else None),
            ignore=np.asarray(ignore, dtype=np.float32).reshape(-1, 4),
        ))
    if missing:
        raise DataError(f"{len(missing)} image files named in the COCO file do not exist under "
                        f"{str(images_dir)!r}, e.g. {missing[:3]}")
    return records, counts


def _clip(box: list[float], width: Any, height: Any) -> list[float]:
    x1, y1, x2, y2 = box
    if width is not None and height is not None:
        x1, x2 = min(max(x1, 0.0), float(width)), min(max(x2, 0.0), float(width))
        y1, y2 = min(max(y1, 0.0), float(height)), min(max(y2, 0.0), float(height))
    return [x1, y1, x2, y2]


def _keypoints(ann: dict[str, Any], num_kp: int) -> np.ndarray:
    raw = ann.get("keypoints") or [0.0] * (3 * num_kp)
    if len(raw) != 3 * num_kp:
        raise DataError(f"annotation {ann.get('id')} has {len(raw)} keypoint values, "
                        f"expected 3 x {num_kp}")
    kp = np.asarray(raw, dtype=np.float32).reshape(num_kp, 3)
    # v=0 means "not labeled": zero it so a flip cannot turn it into a plausible location.
    kp[kp[:, 2] <= 0] = 0.0
    return kp


class DetectionDataset(Dataset[tuple[Tensor, Target]]):
    """Images and targets of one COCO source; ``load(i, flip)`` applies the flip."""

    def __init__(self, records: list[ImageRecord], task: Task,
                 flip_perm: list[int] | None = None) -> None:
        self.records = records
        self.task = task
        self.flip_perm = flip_perm or []

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[Tensor, Target]:
        return self.load(index, flip=False)

    def load(self, index: int, *, flip: bool) -> tuple[Tensor, Target]:
        """Decodes image ``index`` and builds its target dict (mirrored if ``flip``)."""
        rec = self.records[index]
        image = load_image(rec.path)
        height, width = image.shape[-2:]
        # Ignore regions follow the real boxes, labeled IGNORE_LABEL (training/ignore.py).
        boxes = torch.from_numpy(np.concatenate([rec.boxes, rec.ignore]))
        labels = torch.from_numpy(np.concatenate(
            [rec.labels, np.full(len(rec.ignore), IGNORE_LABEL, dtype=np.int64)]))
        # The file's width/height may disagree with the decoded image (EXIF
        # rotation, stale metadata): clip again against the real size.
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        keep = ((boxes[:, 2] - boxes[:, 0]) >= MIN_BOX_SIDE) & (
            (boxes[:, 3] - boxes[:, 1]) >= MIN_BOX_SIDE)
        target: Target = {"boxes": boxes[keep],
                          "labels": labels[keep], "image_id": torch.tensor(rec.image_id)}
        if rec.keypoints is not None:
            blank = np.zeros((len(rec.ignore), *rec.keypoints.shape[1:]), dtype=np.float32)
            target["keypoints"] = torch.from_numpy(np.concatenate([rec.keypoints, blank]))[keep]
        if flip:
            image, target = hflip(image, target, self.flip_perm)
        return image, target


class MixedDataset(Dataset[tuple[Tensor, Target, int]]):
    """Several sources behind one index: ``(source, index, flip)`` keys, as the
    mixed sampler yields them, so the flip decision is part of the sampler's seeded
    stream (reproducible across resumes and data-loader workers)."""

    def __init__(self, sources: list[DetectionDataset]) -> None:
        self.sources = sources

    def __len__(self) -> int:
        return sum(len(s) for s in self.sources)

    def __getitem__(self, key: tuple[int, int, bool]) -> tuple[Tensor, Target, int]:
        source, index, flip = key
        image, target = self.sources[source].load(index, flip=flip)
        return image, target, source


def collate(batch: list[tuple[Tensor, Target, int]]
            ) -> tuple[list[Tensor], list[Target], list[int]]:
    """Detectors take lists (images differ in size); the source ids feed the metrics."""
    images, targets, sources = zip(*batch, strict=True)
    return list(images), list(targets), list(sources)
