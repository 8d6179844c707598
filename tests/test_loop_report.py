"""The loop's (and the demo's) report: table, plot and pseudo-label drawings from real files."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image

from training.loop import deltas
from training.loop_report import comparison_table, write_report


def _scores(box: float, kp: float) -> dict[str, dict[str, float]]:
    return {"bbox": {"AP": box, "AP50": box + 10}, "keypoints": {"AP": kp, "AP50": kp + 10}}


def _results(rows: dict[str, Any]) -> dict[str, Any]:
    return {"task": "keypoints", "rows": rows, "deltas": deltas(rows, "keypoints"),
            "held_out": {"source": "2 of 8 labeled images"},
            "config": {"teacher_iters": 3, "student_iters": 4, "tta": "flip", "teacher": None},
            "pseudo": {"pseudo": {"images": 1, "annotations": 1, "ignore_regions": 0,
                                  "per_image": 1.0}},
            "times": {"train teacher": 60.0, "train student": 30.0},
            "commands": ["distill train --task keypoints"]}


def test_report_has_table_deltas_plot_and_drawings(tmp_path: Path) -> None:
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
    rows = {"teacher": {"single": _scores(40.0, 20.0), "tta": _scores(41.0, 21.0)},
            "baseline": {"single": _scores(42.0, 22.0), "tta": _scores(43.0, 24.0)},
            "student": {"single": _scores(45.0, 25.5), "tta": _scores(46.0, 26.0)},
            "student-round2": {"single": _scores(47.0, 28.0), "tta": _scores(48.0, 29.0)}}
    path = write_report(tmp_path, _results(rows), pseudo, images)
    text = path.read_text()
    assert "| student | 45.0 | 55.0 | 25.5 | 35.5 | +3.5 |" in text
    assert "| student + TTA | 46.0 | 56.0 | 26.0 | 36.0 | +2.0 |" in text  # TTA on both sides
    assert "| student round 2 | 47.0 | 57.0 | 28.0 | 38.0 | +6.0 |" in text
    assert "| baseline (equal budget) | 42.0 | 52.0 | 22.0 | 32.0 | |" in text
    assert "1.5 minutes" in text and "2 of 8 labeled images" in text
    assert "teacher 3 iterations, each student and the baseline 4" in text
    assert (path.parent / "ap.png").stat().st_size > 1000
    drawn = Image.open(path.parent / "pseudo_u1.png")
    assert drawn.size == (80, 60)  # drawn at 2x
    table = comparison_table({"teacher": _scores(40.0, 20.0)}, "boxes")
    assert "keypoint AP" not in table and "vs baseline" not in table
