"""Writes two exports as CVAT writes them, with datumaro: its "COCO 1.0" and "COCO
Keypoints 1.0" exporters (``cvat/apps/dataset_manager/formats/coco.py``) call datumaro's
``coco_instances`` / ``coco_person_keypoints`` without images and zip the folder.

Runs in datumaro's own virtual environment (tests/test_cvat_datumaro.py makes it):

    .venv-datumaro/bin/python tests/contract/datumaro_cvat_export.py OUT_DIR

and writes ``OUT_DIR/boxes.zip`` and ``OUT_DIR/keypoints.zip``. The items are those of
CVAT's extractor: one per frame, annotated or not, with every project label as a
category and CVAT's ``occluded`` and ``rotation`` attributes on every shape.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from datumaro.components.annotation import (
    AnnotationType,
    Bbox,
    LabelCategories,
    Points,
    PointsCategories,
)
from datumaro.components.dataset import Dataset
from datumaro.components.dataset_base import DatasetItem
from datumaro.components.media import Image

SIZE = (100, 200)  # height, width


def _frame(name: str, annotations: list[object]) -> DatasetItem:
    return DatasetItem(id=name.rsplit(".", 1)[0], annotations=annotations,
                       media=Image.from_file(path=name, size=SIZE))


def _attrs(rotation: float = 0.0, occluded: bool = False) -> dict[str, object]:
    return {"occluded": occluded, "rotation": rotation}


def _export(dataset: Dataset, fmt: str, out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        dataset.export(tmp, fmt, save_media=False, merge_images=False)
        shutil.make_archive(str(out.with_suffix("")), "zip", tmp)


def main(out: Path) -> None:
    labels = LabelCategories.from_iterable(["Person", "kite", "tree"])
    boxes = [
        _frame("cam1/a.png", [Bbox(10, 20, 30, 40, label=0, id=1, group=1, attributes=_attrs()),
                              Bbox(50, 50, 40, 20, label=1, id=2, group=2,
                                   attributes=_attrs(90.0, occluded=True))]),
        _frame("cam1/b.png", []),  # a frame nobody annotated
        _frame("c.png", [Bbox(0, 0, 5, 5, label=1, id=3, group=3, attributes=_attrs())]),
    ]
    _export(Dataset.from_iterable(boxes, categories={AnnotationType.label: labels}),
            "coco_instances", out / "boxes.zip")
    skeleton = {AnnotationType.label: LabelCategories.from_iterable(["person"]),
                AnnotationType.points: PointsCategories.from_iterable(
                    [(0, ["left_eye", "nose"], [[0, 1]])])}
    visible, hidden = Points.Visibility.visible, Points.Visibility.hidden
    points = [_frame("k.png", [
        Points([12, 14, 30, 31], visibility=[hidden, visible], label=0, id=1, group=1,
               attributes={"occluded": False}),
        Bbox(10, 10, 50, 50, label=0, id=1, group=1, attributes=_attrs()),
        Points([0, 0, 75, 15], visibility=[Points.Visibility.absent, visible], label=0,
               id=2, group=2, attributes={"occluded": False}),
        Bbox(70, 10, 20, 20, label=0, id=2, group=2, attributes=_attrs())])]
    _export(Dataset.from_iterable(points, categories=skeleton), "coco_person_keypoints",
            out / "keypoints.zip")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
