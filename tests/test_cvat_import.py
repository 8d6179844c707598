"""CVAT's COCO export merged into a labeled set (``distill cvat-merge``), on files shaped
as CVAT writes them (datumaro's ``coco_instances`` / ``coco_person_keypoints``: every
project label as a category, ``attributes`` per annotation, unannotated frames listed);
tests/test_cvat_datumaro.py makes such exports with datumaro itself."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import pytest

from distill.coco import validate_coco
from distill.errors import DataError
from distill.imports.cvat import cvat_to_coco, read_export
from tests.conftest import REPO

CATS = [{"id": 1, "name": "person", "keypoints": ["nose", "left_eye"]},
        {"id": 2, "name": "kite"}]
INFO = {"contributor": "", "date_created": "", "description": "", "url": "", "version": "",
        "year": ""}


def _image(i: int, name: str) -> dict[str, Any]:
    return {"id": i, "width": 200, "height": 100, "file_name": name, "license": 0,
            "flickr_url": "", "coco_url": "", "date_captured": 0}


def _ann(i: int, image: int, cat: int, bbox: list[float], rotation: float = 0.0,
         **extra: Any) -> dict[str, Any]:
    return {"id": i, "image_id": image, "category_id": cat, "segmentation": [],
            "area": bbox[2] * bbox[3], "bbox": bbox, "iscrowd": 0,
            "attributes": {"occluded": False, "rotation": rotation}, **extra}


def instances() -> dict[str, Any]:
    """COCO 1.0 of a task with labels Person, kite and an unused one; three frames."""
    return {"licenses": [{"name": "", "id": 0, "url": ""}], "info": INFO,
            "categories": [{"id": 1, "name": "Person", "supercategory": ""},
                           {"id": 2, "name": "kite", "supercategory": ""},
                           {"id": 3, "name": "tree", "supercategory": ""}],
            "images": [_image(1, "cam1/a.png"), _image(2, "cam1/b.png"), _image(3, "c.png")],
            "annotations": [_ann(1, 1, 1, [10, 20, 30, 40]),
                            _ann(2, 1, 2, [50, 50, 40, 20], rotation=90.0),
                            {**_ann(3, 3, 1, [0, 0, 5, 5]), "iscrowd": 1,
                             "segmentation": {"counts": [0, 25], "size": [100, 200]}}]}


def keypoints() -> dict[str, Any]:
    """COCO Keypoints 1.0 of a skeleton whose points CVAT lists in another order."""
    return {"licenses": [], "info": INFO,
            "categories": [{"id": 1, "name": "person", "supercategory": "",
                            "keypoints": ["left_eye", "nose"], "skeleton": [[1, 2]]}],
            "images": [_image(1, "k.png")],
            "annotations": [_ann(1, 1, 1, [10, 10, 50, 50], keypoints=[12, 14, 1, 30, 31, 2],
                                 num_keypoints=2),
                            _ann(2, 1, 1, [70, 10, 20, 20], keypoints=[0, 0, 0, 75, 15, 2],
                                 num_keypoints=1)]}


def _zip(path: Path, members: dict[str, Any]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data if isinstance(data, str) else json.dumps(data))
    return path


def test_boxes_map_by_name_rotated_boxes_enclose_and_empty_frames_stay_out(
        tmp_path: Path) -> None:
    export = _zip(tmp_path / "task.zip", {"annotations/instances_default.json": instances()})
    got = cvat_to_coco(read_export(export), CATS)
    validate_coco(got.coco)
    assert [i["file_name"] for i in got.coco["images"]] == ["cam1/a.png", "c.png"]
    person, kite, crowd = got.coco["annotations"]
    assert person["category_id"] == 1 and person["bbox"] == [10, 20, 30, 40]
    assert person["keypoints"] == [0.0] * 6 and person["num_keypoints"] == 0
    assert kite["category_id"] == 2 and kite["bbox"] == pytest.approx([60, 40, 20, 40])
    assert crowd["iscrowd"] == 1 and crowd["segmentation"] == []
    assert "attributes" not in person
    assert sum(got.skipped.values()) == 1  # cam1/b.png: a frame nobody annotated
    kept = cvat_to_coco(read_export(export), CATS, keep_empty=True)
    assert [i["file_name"] for i in kept.coco["images"]] == ["cam1/a.png", "cam1/b.png",
                                                            "c.png"]


def test_skeleton_points_map_by_name(tmp_path: Path) -> None:
    path = tmp_path / "person_keypoints_default.json"
    path.write_text(json.dumps(keypoints()))
    got = cvat_to_coco(read_export(path), CATS)
    first, second = got.coco["annotations"]
    assert first["keypoints"] == [30, 31, 2, 12, 14, 1] and first["num_keypoints"] == 2
    assert second["keypoints"] == [75, 15, 2, 0, 0, 0] and second["num_keypoints"] == 1


def test_bad_exports_are_clear_errors(tmp_path: Path) -> None:
    unknown = instances()
    unknown["annotations"].append(_ann(4, 2, 3, [1, 1, 1, 1]))  # "tree" is now used
    with pytest.raises(DataError, match=r"'tree' is no category.*person, kite"):
        cvat_to_coco([("x", unknown)], CATS)
    extra = keypoints()
    extra["categories"][0]["keypoints"] = ["left_eye", "tail"]
    with pytest.raises(DataError, match="keypoint 'tail'"):
        cvat_to_coco([("x", extra)], CATS)
    with pytest.raises(DataError, match=r"COCO 1\.0"):
        read_export(_zip(tmp_path / "other.zip", {"annotations.xml": "<annotations/>"}))
    with pytest.raises(DataError, match="not JSON"):
        read_export(_zip(tmp_path / "bad.zip", {"annotations/instances_default.json": "{"}))
    broken = {**instances(), "images": ["a.png"]}
    with pytest.raises(DataError, match="must be an object"):
        cvat_to_coco([("x", broken)], CATS)
    twice = {**instances(), "images": [*instances()["images"], _image(9, "c.png")]}
    with pytest.raises(DataError, match="twice"):
        cvat_to_coco([("x", twice)], CATS)
    bad_box = instances()
    bad_box["annotations"][0]["bbox"] = [0, 0, "wide", 1]
    with pytest.raises(DataError, match="bbox"):
        cvat_to_coco([("x", bad_box)], CATS)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "distill.cli", "cvat-merge", *args],
                          cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_cvat_merge_command(tmp_path: Path) -> None:
    labeled = {"images": [{"id": 4, "file_name": "c.png", "width": 200, "height": 100},
                          {"id": 5, "file_name": "old.png", "width": 200, "height": 100}],
               "annotations": [{"id": 1, "image_id": 4, "category_id": 2, "bbox": [1, 1, 2, 2],
                                "area": 4, "iscrowd": 0}],
               "categories": CATS}
    (tmp_path / "labeled.json").write_text(json.dumps(labeled))
    # A member whose name climbs out of the folder is read by name, never extracted.
    export = _zip(tmp_path / "task.zip", {"annotations/instances_default.json": instances(),
                                          "../../instances_evil.json": keypoints()})
    before = sorted(p.name for p in tmp_path.parent.iterdir())
    run = _cli(str(export), "--labeled", str(tmp_path / "labeled.json"),
               "--out", str(tmp_path / "merged.json"))
    assert run.returncode == 0, run.stderr
    assert "3 annotated images" in run.stdout and "1 image without annotations" in run.stdout
    assert sorted(p.name for p in tmp_path.parent.iterdir()) == before
    merged = json.loads((tmp_path / "merged.json").read_text())
    validate_coco(merged)
    # old.png stays; c.png takes CVAT's annotations; cam1/a.png and k.png are added.
    assert [i["file_name"] for i in merged["images"]] == ["old.png", "cam1/a.png", "c.png",
                                                         "k.png"]
    assert [a["iscrowd"] for a in merged["annotations"]] == [0, 0, 1, 0, 0]
    unknown = instances()
    unknown["annotations"].append(_ann(4, 2, 3, [1, 1, 1, 1]))
    (tmp_path / "unknown.json").write_text(json.dumps(unknown))
    refused = _cli(str(tmp_path / "unknown.json"), "--labeled", str(tmp_path / "labeled.json"),
                   "--out", str(tmp_path / "x.json"))
    assert refused.returncode == 2 and "'tree' is no category" in refused.stderr
    assert "Traceback" not in refused.stderr and not (tmp_path / "x.json").exists()
