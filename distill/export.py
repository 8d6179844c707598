"""Exports of a COCO pseudo-label file (DESIGN section 4) for labeling and training tools.

Three formats, for people who review pseudo-labels rather than train on them blindly:

``coco``
    The file itself. CVAT reads it as "COCO 1.0" (boxes) or "COCO Keypoints 1.0"
    (keypoints); see the README.
``yolo``
    A zip in the Ultralytics YOLO layout: ``labels/<file_name stem>.txt`` per image
    (the image's relative path kept, an empty file for an image without labels), one
    line ``class cx cy w h`` per instance normalised by the image size, or the pose
    layout ``class cx cy w h px1 py1 v1 ... pxK pyK vK`` when the categories carry
    keypoints; ``data.yaml`` (``names``, and ``kpt_shape`` / ``flip_idx`` for
    keypoints) and ``classes.txt``. Class indices are 0..C-1 in the order of
    ``categories``. Boxes and keypoints are clipped to the image, as Ultralytics
    refuses coordinates outside [0, 1].
``labelstudio``
    Label Studio tasks with pre-annotations, following "Import pre-annotated data into
    Label Studio" (https://labelstud.io/guide/predictions) and the result formats of
    the RectangleLabels and KeyPointLabels tags (https://labelstud.io/tags/rectanglelabels,
    https://labelstud.io/tags/keypointlabels): one task per image, ``{"data": {"image":
    URL}, "predictions": [{"model_version", "score", "result"}]}``; each box a
    ``rectanglelabels`` result with ``x``, ``y``, ``width``, ``height`` in percent of
    the image (0-100), ``original_width`` / ``original_height``, ``image_rotation: 0``;
    each kept keypoint (v > 0) a ``keypointlabels`` result whose ``parentID`` is its
    box's result ``id``, the link Label Studio's own converter reads to group keypoints
    into instances (label_studio_sdk/converter/exports/yolo.py). The labeling config
    (:func:`labelstudio_config`) names the same ``from_name`` / ``to_name`` and gives
    each keypoint label a ``model_index`` (its position in the category), which Label
    Studio's COCO / YOLO export of keypoints requires.

Crowd / ignore regions (``iscrowd: 1``) are left out of the YOLO and Label Studio
exports. Pure Python: no torch, no HTTP (the service serves these formats too).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Iterator
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

from distill.coco import flip_map_for, validate_coco
from distill.errors import ConfigError, DataError
from distill.fileio import atomic_writer, write_json_atomic

EXPORT_FORMATS = ("coco", "yolo", "labelstudio")
LS_IMAGE, LS_BOXES, LS_KEYPOINTS = "image", "label", "keypoint"  # to_name / from_names
LS_POINT_SIZE = 0.5  # keypoint size in percent of the image, as Label Studio's `width`
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)  # fixed member times: the same labels give the same bytes


def to_yolo(coco: dict[str, Any], *, images_dir: Path | None = None) -> bytes:
    """The Ultralytics YOLO zip of ``coco`` (see the module docstring), in memory.

    With ``images_dir`` (the folder the ``file_name``s are relative to) the images are
    copied into the archive under ``images/``, which makes it a complete data set;
    without, put the images under ``images/`` beside ``labels/`` after unpacking.
    """
    _check(coco)
    cats = coco["categories"]
    k = _num_keypoints(cats)
    class_of = {c["id"]: i for i, c in enumerate(cats)}
    files: dict[str, str] = {}
    for img, anns in _images_with_annotations(coco):
        path = "labels/" + _relative(img).with_suffix(".txt").as_posix()
        if path in files:
            raise DataError(f"two images map to the label file {path!r}; rename one of them "
                            f"(second: {img['file_name']!r})")
        w, h = float(img["width"]), float(img["height"])
        lines = []
        for ann in anns:
            x, y, bw, bh = _bbox(ann)
            x1, y1 = _clip(x / w), _clip(y / h)
            x2, y2 = _clip((x + bw) / w), _clip((y + bh) / h)
            fields = [f"{class_of[ann['category_id']]}", *(
                f"{v:.6f}" for v in ((x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1))]
            if k:
                for px, py, v in _keypoints(ann, k) or [(0.0, 0.0, 0)] * k:
                    fields += ([f"{_clip(px / w):.6f}", f"{_clip(py / h):.6f}", str(v)]
                               if v > 0 else ["0.000000", "0.000000", "0"])
            lines.append(" ".join(fields))
        files[path] = "".join(line + "\n" for line in lines)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in [("data.yaml", _data_yaml(cats, k)),
                           ("classes.txt", "".join(f"{_name(c)}\n" for c in cats)),
                           *files.items()]:
            zf.writestr(zipfile.ZipInfo(name, _ZIP_TIME), text.encode("utf-8"),
                        zipfile.ZIP_DEFLATED)
        if images_dir is not None:
            for img in coco["images"]:
                src = Path(images_dir) / _relative(img)
                try:
                    data = src.read_bytes()
                except OSError as exc:
                    raise DataError(f"image {img['file_name']!r} not readable under "
                                    f"{str(images_dir)!r}: {exc}") from exc
                zf.writestr(zipfile.ZipInfo("images/" + _relative(img).as_posix(), _ZIP_TIME),
                            data, zipfile.ZIP_STORED)  # images are compressed already
    return buf.getvalue()


def read_yolo(zip_bytes: bytes, coco: dict[str, Any]) -> list[dict[str, Any]]:
    """Reads the label files of a :func:`to_yolo` archive back into COCO-style
    annotations in pixels (``image_id``, ``category_id``, ``bbox`` [x, y, w, h], and
    ``keypoints`` [x, y, v] * K for the pose layout), image by image in ``coco``'s order."""
    _check(coco)
    cats = coco["categories"]
    out: list[dict[str, Any]] = []
    try:
        with zipfile.ZipFile(io.BytesIO(zip_bytes)) as zf:
            names = set(zf.namelist())
            for img in coco["images"]:
                path = "labels/" + _relative(img).with_suffix(".txt").as_posix()
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


def to_labelstudio(coco: dict[str, Any], *,
                   image_url_prefix: str = "/data/local-files/?d=") -> list[dict[str, Any]]:
    """Label Studio tasks with predictions, one per image (see the module docstring).

    ``data.image`` is ``image_url_prefix`` + the URL-quoted ``file_name``: the default
    serves files from Label Studio's local storage, an ``http(s)://`` prefix serves them
    from a web server. A prediction's ``score`` is the mean instance score (0 for an image
    without pseudo-labels, so that sorting by it shows those first).
    """
    _check(coco)
    cats = {c["id"]: c for c in coco["categories"]}
    teacher = (coco.get("info") or {}).get("teacher") or {}
    version = str(teacher.get("name") or teacher.get("arch") or "distill")
    if teacher.get("sha256"):
        version += f"@{str(teacher['sha256'])[:12]}"
    tasks = []
    for img, anns in _images_with_annotations(coco):
        size = {"original_width": int(img["width"]), "original_height": int(img["height"]),
                "image_rotation": 0}
        w, h = float(img["width"]), float(img["height"])
        result: list[dict[str, Any]] = []
        scores = [s for s in (_score(a) for a in anns) if s is not None]
        for n, ann in enumerate(anns, 1):
            cat, box_id = cats[ann["category_id"]], f"box{n}"
            s = _score(ann)
            score = {} if s is None else {"score": s}
            x, y, bw, bh = _bbox(ann)
            result.append({
                "id": box_id, "type": "rectanglelabels", "from_name": LS_BOXES,
                "to_name": LS_IMAGE, **size, **score,
                "value": {"x": x / w * 100, "y": y / h * 100, "width": bw / w * 100,
                          "height": bh / h * 100, "rotation": 0,
                          "rectanglelabels": [_name(cat)]}})
            names = list(cat.get("keypoints") or [])
            for j, (px, py, v) in enumerate(_keypoints(ann, len(names)) or []):
                if v > 0:
                    result.append({
                        "id": f"{box_id}_kp{j}", "parentID": box_id, "type": "keypointlabels",
                        "from_name": LS_KEYPOINTS, "to_name": LS_IMAGE, **size, **score,
                        "value": {"x": px / w * 100, "y": py / h * 100,
                                  "width": LS_POINT_SIZE, "keypointlabels": [str(names[j])]}})
        tasks.append({
            "data": {LS_IMAGE: image_url_prefix + quote(_relative(img).as_posix())},
            "predictions": [{"model_version": version,
                             "score": sum(scores) / len(scores) if scores else 0.0,
                             "result": result}]})
    return tasks


def labelstudio_config(coco: dict[str, Any]) -> str:
    """The Label Studio labeling config (XML) matching :func:`to_labelstudio`'s tasks:
    one RectangleLabels label per category, one KeyPointLabels label per keypoint name."""
    _check(coco)
    cats = coco["categories"]
    keypoints = list(dict.fromkeys(str(n) for c in cats for n in c.get("keypoints") or []))
    lines = ["<View>", f'  <Image name="{LS_IMAGE}" value="${LS_IMAGE}" zoom="true"/>',
             f'  <RectangleLabels name="{LS_BOXES}" toName="{LS_IMAGE}">',
             *(f'    <Label value="{_xml(_name(c))}"/>' for c in cats), "  </RectangleLabels>"]
    if keypoints:
        lines += [f'  <KeyPointLabels name="{LS_KEYPOINTS}" toName="{LS_IMAGE}">',
                  *(f'    <Label value="{_xml(n)}" model_index="{i}"/>'
                    for i, n in enumerate(keypoints)), "  </KeyPointLabels>"]
    return "\n".join([*lines, "</View>"]) + "\n"


def labelstudio_config_path(out: Path) -> Path:
    """Where :func:`write_export` puts the labeling config beside a Label Studio file."""
    return out.with_name(f"{out.stem}.labelstudio.xml")


def write_export(coco: dict[str, Any], fmt: str, out: Path, *,
                 image_url_prefix: str = "/data/local-files/?d=",
                 images_dir: Path | None = None) -> Path:
    """Writes ``coco`` as ``fmt`` (one of :data:`EXPORT_FORMATS`) to ``out``, atomically,
    and returns ``out``. ``labelstudio`` also writes :func:`labelstudio_config_path`."""
    out = Path(out)
    if fmt not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {fmt!r}; choose one of {EXPORT_FORMATS}")
    _check(coco)
    if fmt == "coco":
        write_json_atomic(out, coco)
    elif fmt == "yolo":
        data = to_yolo(coco, images_dir=images_dir)
        with atomic_writer(out) as fh:
            fh.write(data)
    else:
        tasks = to_labelstudio(coco, image_url_prefix=image_url_prefix)
        config = labelstudio_config(coco)
        write_json_atomic(out, tasks)
        with atomic_writer(labelstudio_config_path(out)) as fh:
            fh.write(config.encode("utf-8"))
    return out


def _check(coco: Any) -> None:
    """The COCO contract, plus what the exports rely on: sizes, names, keypoint lengths."""
    validate_coco(coco, source="pseudo-label file")
    for img in coco["images"]:
        _relative(img)
        for key in ("width", "height"):
            v = img.get(key)
            if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
                raise DataError(f"image {img.get('file_name')!r} has {key} {v!r}; "
                                "expected a positive number")
    for c in coco["categories"]:
        if not isinstance(c.get("name"), str) or not c["name"] or "\n" in c["name"]:
            raise DataError(f"category {c.get('id')!r} has name {c.get('name')!r}; "
                            "expected a one-line string")


def _relative(img: dict[str, Any]) -> PurePosixPath:
    name = img.get("file_name")
    path = PurePosixPath(name) if isinstance(name, str) else None
    if path is None or not name or path.is_absolute() or ".." in path.parts or "\\" in name:
        raise DataError(f"image {img.get('id')!r} has file_name {name!r}; expected a "
                        "relative path such as 'cam1/0001.png'")
    return path


def _images_with_annotations(coco: dict[str, Any]
                             ) -> Iterator[tuple[dict[str, Any], list[dict[str, Any]]]]:
    by_image: dict[Any, list[dict[str, Any]]] = {img["id"]: [] for img in coco["images"]}
    for ann in coco["annotations"]:
        if not ann.get("iscrowd", 0):
            by_image[ann["image_id"]].append(ann)
    for img in coco["images"]:
        yield img, by_image[img["id"]]


def _bbox(ann: dict[str, Any]) -> tuple[float, float, float, float]:
    try:
        x, y, w, h = (float(v) for v in ann["bbox"])
    except (TypeError, ValueError) as exc:
        raise DataError(f"annotation {ann.get('id')} has bbox {ann['bbox']!r}") from exc
    return x, y, w, h


def _score(ann: dict[str, Any]) -> float | None:
    s = ann.get("score")
    return float(s) if isinstance(s, int | float) and not isinstance(s, bool) else None


def _keypoints(ann: dict[str, Any], k: int) -> list[tuple[float, float, int]] | None:
    """[(x, y, v)] * k, or None when the annotation has no keypoints."""
    kps = ann.get("keypoints")
    if not kps:
        return None
    if len(kps) != 3 * k:
        raise DataError(f"annotation {ann.get('id')} has {len(kps)} keypoint values; its "
                        f"category names {k} keypoints, so expected {3 * k}")
    return [(float(kps[i]), float(kps[i + 1]), int(kps[i + 2])) for i in range(0, 3 * k, 3)]


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
             *(f"  {i}: {_yaml_str(_name(c))}" for i, c in enumerate(cats))]
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


def _xml(s: str) -> str:
    return escape(s, {'"': "&quot;", "'": "&apos;"})


def _name(cat: dict[str, Any]) -> str:
    return str(cat["name"])


def _clip(v: float) -> float:
    return min(1.0, max(0.0, v))
