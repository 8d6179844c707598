"""``distill cvat-merge`` on exports written by datumaro exactly as CVAT's "COCO 1.0" and
"COCO Keypoints 1.0" exporters call it (tests/contract/datumaro_cvat_export.py, run in
``.venv-datumaro``, tests/toolvenv.py): the files CVAT users download."""

from __future__ import annotations

import subprocess
from pathlib import Path

from distill.coco import validate_coco
from distill.imports.cvat import cvat_to_coco, read_export
from distill.imports.labelstudio import merge_labeled
from tests.test_export_datumaro import REQUIREMENT
from tests.toolvenv import tool_python

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "contract" / "datumaro_cvat_export.py"
CATS = [{"id": 1, "name": "person", "keypoints": ["nose", "left_eye"]},
        {"id": 2, "name": "kite"}]


def test_datumaro_written_cvat_exports_merge(tmp_path: Path) -> None:
    python = tool_python("datumaro", [REQUIREMENT])
    run = subprocess.run([str(python), str(SCRIPT), str(tmp_path)], capture_output=True,
                         text=True, timeout=300, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-4000:]
    boxes = cvat_to_coco(read_export(tmp_path / "boxes.zip"), CATS)
    assert [i["file_name"] for i in boxes.coco["images"]] == ["cam1/a.png", "c.png"]
    assert [(i["width"], i["height"]) for i in boxes.coco["images"]] == [(200, 100)] * 2
    person, kite, small = boxes.coco["annotations"]
    assert (person["category_id"], person["bbox"]) == (1, [10, 20, 30, 40])
    assert (kite["category_id"], kite["bbox"]) == (2, [60, 40, 20, 40])  # 90° about its centre
    assert small["image_id"] == 2 and small["category_id"] == 2
    assert sum(boxes.skipped.values()) == 1  # cam1/b.png, exported though unannotated
    points = cvat_to_coco(read_export(tmp_path / "keypoints.zip"), CATS)
    first, second = points.coco["annotations"]
    assert first["keypoints"] == [30, 31, 2, 12, 14, 1] and first["num_keypoints"] == 2
    assert second["keypoints"] == [75, 15, 2, 0, 0, 0] and second["num_keypoints"] == 1
    labeled = {"images": [{"id": 1, "file_name": "c.png", "width": 200, "height": 100}],
               "annotations": [{"id": 1, "image_id": 1, "category_id": 1,
                                "bbox": [0, 0, 9, 9], "area": 81, "iscrowd": 0}],
               "categories": CATS}
    merged = merge_labeled(merge_labeled(labeled, boxes.coco), points.coco)
    validate_coco(merged)
    assert [i["file_name"] for i in merged["images"]] == ["cam1/a.png", "c.png", "k.png"]
    assert len(merged["annotations"]) == 5  # c.png's own box replaced by CVAT's
