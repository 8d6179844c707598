"""The demo's report: table, plot and pseudo-label drawings from real files."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

from training.demo_report import comparison_table, write_report
from training.evaluate import EvalReport


def _report(box: float, kp: float) -> EvalReport:
    return EvalReport(scores={"bbox": {"AP": box, "AP50": box + 10},
                              "keypoints": {"AP": kp, "AP50": kp + 10}},
                      tables={}, images=3, detections=5, seconds=1.0)


def test_report_has_table_plot_and_drawings(tmp_path: Path) -> None:
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (40, 30), (10, 20, 30)).save(images / "u1.png")
    pseudo = tmp_path / "pseudo.json"
    pseudo.write_text(json.dumps({
        "info": {"transforms": ["256"], "thresholds": {}},
        "images": [{"id": 1, "file_name": "u1.png", "width": 40, "height": 30}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 10, 20],
                         "score": 0.9, "keypoints": [8, 8, 2, 0, 0, 0]}],
        "categories": [{"id": 1, "name": "person", "keypoints": ["a", "b"],
                        "skeleton": [[1, 2]]}]}))
    rows = {"teacher": _report(40.0, 20.0), "student": _report(45.0, 25.5)}
    path = write_report(tmp_path, "keypoints", rows, pseudo, images, minutes=1.5)
    text = path.read_text()
    assert "| student | 45.0 | 55.0 | 25.5 | 35.5 |" in text
    assert (path.parent / "ap.png").stat().st_size > 1000
    drawn = Image.open(path.parent / "pseudo_u1.png")
    assert drawn.size == (80, 60)  # drawn at 2x
    assert "keypoint AP" not in comparison_table(rows, "boxes")
