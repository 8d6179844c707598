"""What an ONNX export's classes (and keypoints) are: from its data.yaml, ``coco`` or a
COCO file, checked against the metadata the exporter wrote into the model.

- an Ultralytics ``data.yaml`` (``.yaml`` / ``.yml``): ``names`` (a list, or a dict of
  class index -> name) become categories 1..N in class order; a pose model's
  ``kpt_shape`` [K, D] and ``flip_idx`` (the index each keypoint becomes when the
  image is mirrored) give the keypoints and the flip map; keypoint names come from
  ``kpt_names`` when the file has them, else COCO's when K is 17 and ``flip_idx`` is
  COCO's, else ``kpt_0`` ...;
- ``coco``: a model trained on COCO (80 classes in COCO id order; pose: COCO's person);
- a COCO JSON: its categories in file order, as ``distill train`` maps them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from distill.card import Task, flip_map_from_names
from distill.coco import oks_sigmas_for
from distill.errors import CardError, ConfigError
from distill.teachers.labels import COCO_PERSON_SKELETON, Categories, load_categories, yolo_coco

# Ultralytics' coco-pose.yaml flip_idx: nose stays, each left/right pair swaps.
COCO_FLIP_IDX = [0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15]
_MAX_YAML_BYTES = 1 << 20


def onnx_categories(spec: str | Path, task: Task | None, metadata: dict[str, Any]
                    ) -> tuple[Categories, tuple[int, int] | None]:
    """The categories and the keypoint shape (None for boxes) of an export.

    ``task`` None lets the categories (or the model's own metadata) decide between boxes
    and keypoints; a detection-only architecture passes ``"boxes"``.
    """
    meta_kpt = metadata.get("kpt_shape")
    meta_pose = metadata.get("task") == "pose" or meta_kpt is not None
    if str(spec) == "coco":
        pose = task != "boxes" and meta_pose
        shape = _kpt_shape(meta_kpt or [17, 3], "the model's metadata") if pose else None
        return yolo_coco("keypoints" if pose else "boxes"), shape
    path = Path(spec)
    if path.suffix.lower() in (".yaml", ".yml"):
        cats, shape = _from_data_yaml(path)
    else:
        json_task: Task = "keypoints" if task != "boxes" and meta_pose else "boxes"
        cats = load_categories(path, json_task)
        shape = None
        if json_task == "keypoints":
            d = _kpt_shape(meta_kpt, "the model's metadata")[1] if meta_kpt else 3
            shape = (cats.num_keypoints, d)
    if task == "boxes" and shape is not None:
        raise CardError(f"{path.name} describes keypoints (kpt_shape {list(shape)}); this "
                        "architecture detects boxes only")
    return cats, shape


def _from_data_yaml(path: Path) -> tuple[Categories, tuple[int, int] | None]:
    try:
        import yaml
    except ImportError as exc:
        raise ConfigError("reading a data.yaml needs PyYAML (pip install 'distill[engine]')") \
            from exc
    if not path.is_file() or path.stat().st_size > _MAX_YAML_BYTES:
        raise CardError(f"{str(path)!r} is not a data.yaml file of at most 1 MiB")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise CardError(f"{path.name} is not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict) or "names" not in data:
        raise CardError(f"{path.name} has no `names`: not an Ultralytics data.yaml")
    names = _names(data["names"], path.name)
    if "nc" in data and data["nc"] != len(names):
        raise CardError(f"{path.name}: nc is {data['nc']} but names lists {len(names)}")
    cats = [{"id": i + 1, "name": n} for i, n in enumerate(names)]
    if "kpt_shape" not in data:
        return Categories("boxes", cats, source=path.name), None
    shape = _kpt_shape(data["kpt_shape"], path.name)
    if len(names) != 1:
        raise CardError(f"{path.name}: a pose model of {len(names)} classes; a keypoint "
                        "teacher has one category")
    k = shape[0]
    flip_idx = data.get("flip_idx")
    if flip_idx is not None and (sorted(flip_idx) != list(range(k))
                                 or any(flip_idx[j] != i for i, j in enumerate(flip_idx))):
        raise CardError(f"{path.name}: flip_idx {flip_idx} does not pair keypoints 0..{k - 1} "
                        "(each keypoint must map to its mirror image, and back)")
    kp_names = _keypoint_names(data.get("kpt_names"), k, flip_idx, path.name)
    person = {**cats[0], "keypoints": kp_names}
    if kp_names == COCO_NAMES:
        person["skeleton"] = COCO_PERSON_SKELETON
    flips = [[i, j] for i, j in enumerate(flip_idx) if i < j] if flip_idx is not None \
        else flip_map_from_names(kp_names)
    return Categories("keypoints", [person], flip_map=flips, oks_sigmas=oks_sigmas_for(person),
                      source=path.name), shape


def _names(raw: Any, source: str) -> list[str]:
    if isinstance(raw, dict) and sorted(raw) == list(range(len(raw))):
        return [str(raw[i]) for i in range(len(raw))]
    if isinstance(raw, list) and raw:
        return [str(n) for n in raw]
    raise CardError(f"{source}: names must be a list or a dict of class indices 0..N-1")


def _kpt_shape(raw: Any, source: str) -> tuple[int, int]:
    if (isinstance(raw, list | tuple) and len(raw) == 2 and all(isinstance(v, int) for v in raw)
            and raw[0] >= 1 and raw[1] in (2, 3)):
        return int(raw[0]), int(raw[1])
    raise CardError(f"{source}: kpt_shape must be [K, 2] or [K, 3], got {raw!r}")


def _keypoint_names(raw: Any, k: int, flip_idx: list[int] | None, source: str) -> list[str]:
    if isinstance(raw, dict) and len(raw) == 1:  # Ultralytics: {class index: [names]}
        raw = next(iter(raw.values()))
    if raw is not None:
        if not isinstance(raw, list) or len(raw) != k:
            raise CardError(f"{source}: kpt_names must list {k} names")
        return [str(n) for n in raw]
    if k == 17 and flip_idx in (None, COCO_FLIP_IDX):
        return list(COCO_NAMES)
    return [f"kpt_{i}" for i in range(k)]


COCO_NAMES: list[str] = list(yolo_coco("keypoints").categories[0]["keypoints"])
