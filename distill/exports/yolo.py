"""The ``yolo`` export: an Ultralytics YOLO zip of a COCO pseudo-label file.

``labels/<file_name stem>.txt`` per image (the image's relative path kept, an empty file
for an image without labels), one line ``class cx cy w h`` per instance normalised by the
image size, or the pose layout ``class cx cy w h px1 py1 v1 ... pxK pyK vK`` when the
categories carry keypoints; ``data.yaml`` (``names``, and ``kpt_shape`` / ``flip_idx``
for keypoints) and ``classes.txt``. Class indices are 0..C-1 in the order of
``categories``. Boxes and keypoints are clipped to the image, as Ultralytics refuses
coordinates outside [0, 1]. Ignore regions (``iscrowd: 1``) are left out.
"""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from distill.coco import flip_map_for
from distill.errors import DataError
from distill.exports._common import (
    box_xywh,
    category_name,
    check_coco,
    images_with_objects,
    keypoint_triples,
    relative_path,
)

_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member times: the same labels give the same bytes


def to_yolo(coco: dict[str, Any], *, images_dir: Path | None = None) -> bytes:
    """The Ultralytics YOLO zip of ``coco`` (see the module docstring), in memory.

    With ``images_dir`` (the folder the ``file_name``s are relative to) the images are
    copied into the archive under ``images/``, which makes it a complete data set;
    without, put the images under ``images/`` beside ``labels/`` after unpacking.
    """
    check_coco(coco)
    cats = coco["categories"]
    k = _num_keypoints(cats)
    class_of = {c["id"]: i for i, c in enumerate(cats)}
    files: dict[str, str] = {}
    for img, anns in images_with_objects(coco):
        path = "labels/" + relative_path(img).with_suffix(".txt").as_posix()
        if path in files:
            raise DataError(f"two images map to the label file {path!r}; rename one of them "
                            f"(second: {img['file_name']!r})")
        w, h = float(img["width"]), float(img["height"])
        lines = []
        for ann in anns:
            x, y, bw, bh = box_xywh(ann)
            x1, y1 = _clip(x / w), _clip(y / h)
            x2, y2 = _clip((x + bw) / w), _clip((y + bh) / h)
            fields = [f"{class_of[ann['category_id']]}", *(
                f"{v:.6f}" for v in ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1))]
            if k:
                for px, py, v in keypoint_triples(ann, k) or [(0.0, 0.0, 0)] * k:
                    fields += ([f"{_clip(px / w):.6f}", f"{_clip(py / h):.6f}", str(v)]
                               if v > 0 else ["0.000000", "0.000000", "0"])
            lines.append(" ".join(fields))
        files[path] = "".join(line + "\n" for line in lines)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in [("data.yaml", _data_yaml(cats, k)),
                           ("classes.txt", "".join(f"{category_name(c)}\n" for c in cats)),
                           *files.items()]:
            zf.writestr(zipfile.ZipInfo(name, _ZIP_TIME), text.encode("utf-8"),
                        zipfile.ZIP_DEFLATED)
        if images_dir is not None:
            for img in coco["images"]:
                src = Path(images_dir) / relative_path(img)
                try:
                    data = src.read_bytes()
                except OSError as exc:
                    raise DataError(f"image {img['file_name']!r} not readable under "
                                    f"{str(images_dir)!r}: {exc}") from exc
                zf.writestr(zipfile.ZipInfo("images/" + relative_path(img).as_posix(), _ZIP_TIME),
                            data, zipfile.ZIP_STORED)  # images are compressed already
    return buf.getvalue()


def read_yolo(zip_bytes: bytes, coco: dict[str, Any]) -> list[dict[str, Any]]:
    """Reads the label files of a :func:`to_yolo` archive back into COCO-style
    annotations in pixels (``image_id``, ``category_id``, ``bbox`` [x, y, w, h], and
    ``keypoints`` [x, y, v] * K for the pose layout), image by image in ``coco``'s order."""
    check_coco(coco)
    cats = coco["categories"]
    out: list[dict[str, Any]] = []
    try:
        with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
            names = set(zf.namelist())
            for img in coco["images"]:
                path = "labels/" + relative_path(img).with_suffix(".txt").as_posix()
                if path not in names:
                    raise DataError(f"the YOLO archive has no {path!r}")
                w, h = float(img["width"]), float(img["height"])
                for n, line in enumerate(zf.read(path).decode("utf-8").splitlines(), 1):
                    try:
                        cls, *vals = line.split()
                        cat = cats[int(cls)]
                        cx, cy, bw, bh = (float(v) for v in vals[:4])
                        points = [float(v) for v in vals[4:]]
                    except (ValueError, IndexError) as exc:
                        raise DataError(f"{path} line {n}: {line!r} is not "
                                        f"'class cx cy w h [px py v ...]'") from exc
                    ann: dict[str, Any] = {
                        "image_id": img["id"], "category_id": cat["id"],
                        "bbox": [(cx - bw / 2) * w, (cy - bh / 2) * h, bw * w, bh * h]}
                    if points:
                        ann["keypoints"] = [c for i in range(0, len(points), 3) for c in (
                            points[i] * w, points[i + 1] * h, int(points[i + 2]))]
                    out.append(ann)
    except zipfile.BadZipFile as exc:
        raise DataError(f"not a zip archive: {exc}") from exc
    return out


def _num_keypoints(cats: list[dict[str, Any]]) -> int:
    """K of the YOLO pose layout: one kpt_shape serves every class (0: plain boxes)."""
    counts = {len(c["keypoints"]) for c in cats if c.get("keypoints")}
    if len(counts) > 1:
        raise DataError(f"categories name different numbers of keypoints {sorted(counts)}; "
                        "the YOLO pose layout needs one kpt_shape")
    return counts.pop() if counts else 0


def _data_yaml(cats: list[dict[str, Any]], k: int) -> str:
    lines = ["# Ultralytics YOLO data set written by `distill export` from pseudo-labels.",
             "# Images go under images/, mirroring labels/. With no `path:` key Ultralytics",
             "# takes this file's folder as the root: give it this file's absolute path.",
             "train: images", "val: images", f"nc: {len(cats)}", "names:",
             *(f"  {i}: {_yaml_str(category_name(c))}" for i, c in enumerate(cats))]
    if k:
        kp_cat = next(c for c in cats if c.get("keypoints"))
        flip = list(range(k))
        for a, b in flip_map_for(kp_cat):
            flip[a], flip[b] = b, a
        lines += [f"kpt_shape: [{k}, 3]", f"flip_idx: {flip}",
                  "# keypoints: " + ", ".join(" ".join(str(n).split())
                                              for n in kp_cat["keypoints"])]
    return "\n".join(lines) + "\n"


def _yaml_str(s: str) -> str:
    """A YAML double-quoted scalar (JSON's escapes are YAML's; C1 controls escaped too)."""
    return "".join(f"\\x{ord(ch):02x}" if 0x7F <= ord(ch) <= 0x9F else ch
                   for ch in json.dumps(s, ensure_ascii=False))


def _clip(v: float) -> float:
    return min(1.0, max(0.0, v))
