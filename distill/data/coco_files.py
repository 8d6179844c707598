"""Writes the synthetic data set (``synth.py``'s scenes) as PNG images and COCO files.

One module for what lands on disk: the layout (:class:`SplitFiles`), the image ids and
file names, and the two annotation files per split. ``synth.py`` owns what a scene
looks like; nothing here draws.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from distill.data.synth import (
    GENERATOR_VERSION,
    PERSON_CATEGORY,
    SPLIT_CODE,
    Instance,
    family_of,
    render_scene,
)
from distill.fileio import write_json_atomic
from distill.options import DEFAULT_SYNTH_FAMILY, Task


@dataclass(frozen=True)
class SplitFiles:
    """The paths written for one split."""

    images_dir: Path
    keypoints_json: Path
    boxes_json: Path

    @classmethod
    def under(cls, out_dir: Path, split: str) -> SplitFiles:
        """Where :func:`generate` writes ``split`` under ``out_dir``."""
        annotations = out_dir / "annotations"
        return cls(out_dir / "images" / split, annotations / f"{split}_keypoints.json",
                   annotations / f"{split}_boxes.json")

    def json_for(self, task: Task) -> Path:
        """The annotation file a ``task`` model trains on or is scored against."""
        return self.keypoints_json if task == "keypoints" else self.boxes_json


def generate(out_dir: Path, *, labeled: int, unlabeled: int, test: int, seed: int,
             shifted: int = 0, min_side: int | None = None, max_side: int | None = None,
             family: str = DEFAULT_SYNTH_FAMILY, progress: bool = False
             ) -> dict[str, SplitFiles]:
    """Writes ``out_dir/images/<split>/<name>.png`` and
    ``out_dir/annotations/<split>_keypoints.json``, ``<split>_boxes.json`` for splits
    "labeled", "unlabeled", "test" and (if ``shifted > 0``) "shifted".

    The same arguments give byte-identical files. Image ids and file names are unique
    across splits (``<split>_<index>.png``), so splits can be merged. The keypoints file
    holds person annotations only; the boxes file holds the same persons (same ids,
    without keypoint fields) plus the family's objects (figures: balls, cones and kites;
    blocks: rings, stars and crates). Sizes default to the family's. Returns split -> paths.
    """
    if min(labeled, unlabeled, test, shifted) < 0 or seed < 0:
        raise ValueError("image counts and seed must be non-negative")
    look = family_of(family)
    min_side = look.sizes[0] if min_side is None else min_side
    max_side = look.sizes[1] if max_side is None else max_side
    if not 32 <= min_side <= max_side:
        raise ValueError(f"need 32 <= min_side <= max_side, got {min_side}, {max_side}")
    counts = {"labeled": labeled, "unlabeled": unlabeled, "test": test}
    if shifted > 0:
        counts["shifted"] = shifted
    out_dir = Path(out_dir)
    (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
    result: dict[str, SplitFiles] = {}
    with tqdm(total=sum(counts.values()), desc="synth", disable=not progress) as bar:
        for split, n in counts.items():
            files = SplitFiles.under(out_dir, split)
            files.images_dir.mkdir(parents=True, exist_ok=True)
            _remove_stale(files.images_dir, split, n)
            images: list[dict[str, Any]] = []
            kp_anns: list[dict[str, Any]] = []
            box_anns: list[dict[str, Any]] = []
            for index in range(n):
                image, instances = render_scene(seed, split, index, min_side, max_side,
                                                family)
                image_id = SPLIT_CODE[split] * 1_000_000 + index + 1
                file_name = f"{split}_{index:06d}.png"
                image.save(files.images_dir / file_name, format="PNG", optimize=False)
                images.append({"id": image_id, "file_name": file_name,
                               "width": image.width, "height": image.height})
                _annotate(image_id, instances, box_anns, kp_anns)
                bar.update(1)
            info = {"description": f"distill synthetic data, family {family}", "split": split,
                    "seed": seed, "family": family, "version": GENERATOR_VERSION}
            write_json_atomic(files.keypoints_json, {
                "info": info, "licenses": [], "images": images, "annotations": kp_anns,
                "categories": [PERSON_CATEGORY]})
            write_json_atomic(files.boxes_json, {
                "info": info, "licenses": [], "images": images, "annotations": box_anns,
                "categories": look.box_categories})
            result[split] = files
    return result


def _remove_stale(images_dir: Path, split: str, n: int) -> None:
    """Deletes images an earlier, larger run of ``split`` left beyond index ``n - 1``."""
    for stale in images_dir.glob(f"{split}_*.png"):
        number = stale.stem[len(split) + 1:]
        if number.isdigit() and int(number) >= n:
            stale.unlink()


def _annotate(image_id: int, instances: list[Instance], box_anns: list[dict[str, Any]],
              kp_anns: list[dict[str, Any]]) -> None:
    """Appends one image's boxes (every instance) and keypoints (persons) annotations."""
    for k, inst in enumerate(instances, start=1):
        x, y, bw, bh = inst.bbox
        ann = {"id": image_id * 100 + k, "image_id": image_id,
               "category_id": inst.category_id, "bbox": [x, y, bw, bh],
               "area": bw * bh, "iscrowd": 0}
        box_anns.append(ann)
        if inst.keypoints is not None:
            kp_anns.append({**ann, "keypoints": inst.keypoints,
                            "num_keypoints": sum(v > 0 for v in inst.keypoints[2::3])})
