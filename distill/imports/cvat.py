"""CVAT's COCO export as annotations of a labeled set (``distill cvat-merge``): how boxes
and skeletons corrected in CVAT become the labeled set of the next teacher.

What CVAT writes (``cvat/apps/dataset_manager/formats/coco.py``: datumaro's
``coco_instances`` for "COCO 1.0", ``coco_person_keypoints`` for "COCO Keypoints 1.0"):
a zip holding ``annotations/instances_<subset>.json`` or
``annotations/person_keypoints_<subset>.json`` (``default`` unless the task has subsets),
or one such file alone. Categories are numbered from 1 in the project's label order and
named as its labels; each annotation has ``bbox``, ``iscrowd`` (1 for a mask drawn as a
crowd), ``attributes`` (``occluded``, ``rotation`` in degrees about the box's centre,
``track_id``/``keyframe`` for tracks, the label's own); for skeletons the category's
``keypoints`` are its point names and an annotation's ``keypoints`` are x y v (0 absent,
1 occluded, 2 visible).

Mapping: a category by name to the labeled set's (exactly, else ignoring case); an
annotation whose label is no category is an error that names it (an unused label is
fine: CVAT exports every label of the project), and so is a placed keypoint whose name
the category lacks. A rotated box becomes its enclosing box; segmentation and attributes
are dropped. CVAT exports every frame, annotated or not, and cannot tell an image
annotated as empty from one not annotated yet, so images without annotations are left
out unless ``keep_empty``. The images keep their ``file_name``, by which
:func:`distill.imports.labelstudio.merge_labeled` matches them with the labeled set.

The export is untrusted: zip members are found by name and read into memory, never
extracted, and their names are never used as paths. Pure Python.
"""

from __future__ import annotations

import json
import math
import re
import zipfile
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import Any

from distill.coco import validate_coco
from distill.errors import DataError
from distill.imports.labelstudio import Imported

MAX_JSON_BYTES = 1 << 30  # a declared member size above this is refused, not read
_ANNOTATIONS = re.compile(r"^(instances|person_keypoints)_[^/\\]+\.json$")


def read_export(path: Path) -> list[tuple[str, dict[str, Any]]]:
    """The COCO files of a CVAT export (a zip, or one JSON file), each with its name."""
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as zf:
                members = [i for i in zf.infolist() if not i.is_dir()
                           and _ANNOTATIONS.match(PurePosixPath(i.filename).name)]
                if not members:
                    raise DataError(f"{path}: no annotations/instances_*.json or "
                                    "person_keypoints_*.json: export the task from CVAT as "
                                    "'COCO 1.0' or 'COCO Keypoints 1.0'")
                return [(i.filename, _parse(zf, i)) for i in members]
        except (zipfile.BadZipFile, RuntimeError, OSError) as exc:  # RuntimeError: encrypted
            raise DataError(f"{path}: unreadable zip: {exc}") from exc
    try:
        return [(path.name, json.loads(path.read_bytes()))]
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a CVAT COCO export (a zip or JSON file): {exc}") from exc


def _parse(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> dict[str, Any]:
    if info.file_size > MAX_JSON_BYTES:
        raise DataError(f"{info.filename!r}: {info.file_size} bytes, more than "
                        f"{MAX_JSON_BYTES} allowed")
    try:
        data: dict[str, Any] = json.loads(zf.read(info))
    except ValueError as exc:
        raise DataError(f"{info.filename!r} is not JSON: {exc}") from exc
    return data


def cvat_to_coco(exports: Iterable[tuple[str, dict[str, Any]]],
                 categories: list[dict[str, Any]], keep_empty: bool = False) -> Imported:
    """COCO with the labeled set's ``categories`` of the exports' annotated images."""
    out = Imported({"images": [], "annotations": [], "categories": categories})
    seen: set[str] = set()
    for source, data in exports:
        _check(source, data)
        mapping = {int(c["id"]): c for c in data["categories"]}
        by_image: dict[Any, list[dict[str, Any]]] = {}
        for ann in data["annotations"]:
            by_image.setdefault(ann["image_id"], []).append(ann)
        for img in data["images"]:
            name, anns = str(img.get("file_name") or ""), by_image.get(img["id"], [])
            if not name:
                raise DataError(f"{source}: image {img['id']} has no file_name")
            if name in seen:
                raise DataError(f"{source}: image {name!r} is in the export twice")
            seen.add(name)
            if not anns and not keep_empty:
                out.skipped["image without annotations (CVAT exports every frame; "
                            "--keep-empty keeps them as images without objects)"] += 1
                continue
            image_id = len(out.coco["images"]) + 1
            try:
                out.coco["images"].append({"id": image_id, "file_name": name,
                                           "width": int(img["width"]),
                                           "height": int(img["height"])})
                for ann in anns:
                    label = mapping[int(ann["category_id"])]
                    target = _category(source, label, categories)
                    out.coco["annotations"].append(
                        _object(source, ann, label, target, image_id,
                                len(out.coco["annotations"]) + 1, out))
            except (KeyError, TypeError, ValueError) as exc:
                raise DataError(f"{source}: image {name!r}: a malformed entry ({exc!r})"
                                ) from exc
    return out


def _check(source: str, data: Any) -> None:
    """The COCO contract, and dicts where the rest reads keys."""
    if isinstance(data, dict):
        for key in ("images", "annotations", "categories"):
            if any(not isinstance(e, dict) for e in data.get(key) or []):
                raise DataError(f"{source}: every entry of '{key}' must be an object")
    validate_coco(data, source=source)


def _category(source: str, label: dict[str, Any], categories: list[dict[str, Any]]
              ) -> dict[str, Any]:
    name = str(label.get("name"))
    for same in (lambda n: n == name, lambda n: n.casefold() == name.casefold()):
        found = next((c for c in categories if same(str(c.get("name")))), None)
        if found is not None:
            return found
    raise DataError(f"{source}: CVAT label {name!r} is no category of the labeled set "
                    f"({', '.join(str(c.get('name')) for c in categories)}): rename it in "
                    "CVAT, or remove its annotations")


def _object(source: str, ann: dict[str, Any], label: dict[str, Any],
            target: dict[str, Any], image_id: int, ann_id: int, out: Imported
            ) -> dict[str, Any]:
    try:
        x, y, w, h = (float(v) for v in ann["bbox"])
        rotation = float((ann.get("attributes") or {}).get("rotation") or 0.0)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{source}: annotation {ann.get('id')} has bbox {ann.get('bbox')!r}"
                        ) from exc
    if not all(math.isfinite(v) for v in (x, y, w, h, rotation)) or w < 0 or h < 0:
        raise DataError(f"{source}: annotation {ann.get('id')} has bbox {ann['bbox']!r}")
    if rotation % 180:
        x, y, w, h = _enclosing(x, y, w, h, rotation)
    obj: dict[str, Any] = {"id": ann_id, "image_id": image_id, "category_id": target["id"],
                           "bbox": [x, y, w, h], "area": w * h,
                           "iscrowd": 1 if ann.get("iscrowd") else 0, "segmentation": []}
    names = [str(n) for n in target.get("keypoints") or []]
    if names:
        obj["keypoints"] = [0.0] * 3 * len(names)
        placed = ann.get("keypoints") or []
        if not isinstance(placed, list):
            raise DataError(f"{source}: annotation {ann.get('id')} has keypoints {placed!r}")
        own = [str(n) for n in label.get("keypoints") or []]
        for j, kp in enumerate(own):
            px, py, v = ([*placed[3 * j:3 * j + 3], 0, 0, 0])[:3]
            if not v:
                continue
            k = _index(names, kp)
            if k is None:
                raise DataError(f"{source}: keypoint {kp!r} of label {label.get('name')!r} "
                                f"is not one of the category's ({', '.join(names)})")
            obj["keypoints"][3 * k:3 * k + 3] = [float(px), float(py), int(v)]
        obj["num_keypoints"] = sum(1 for v in obj["keypoints"][2::3] if v > 0)
    elif ann.get("keypoints"):
        out.skipped["keypoints on a category without keypoints (the box is kept)"] += 1
    return obj


def _index(names: list[str], name: str) -> int | None:
    for same in (lambda n: n == name, lambda n: n.casefold() == name.casefold()):
        found = next((k for k, n in enumerate(names) if same(n)), None)
        if found is not None:
            return found
    return None


def _enclosing(x: float, y: float, w: float, h: float, degrees: float
               ) -> tuple[float, float, float, float]:
    """The axis-aligned box around a box rotated about its centre (CVAT's rotation)."""
    a = math.radians(degrees)
    c, s = abs(math.cos(a)), abs(math.sin(a))
    ew, eh = w * c + h * s, w * s + h * c
    cx, cy = x + w / 2, y + h / 2
    x1, y1 = max(0.0, cx - ew / 2), max(0.0, cy - eh / 2)  # clipped to the image's origin
    return x1, y1, cx + ew / 2 - x1, cy + eh / 2 - y1
