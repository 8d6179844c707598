"""Label Studio annotations back to COCO and into the labeled set (pure; the real
round trip through Label Studio is in tests/labelstudio/)."""

from __future__ import annotations

import pytest

from distill.coco import validate_coco
from distill.errors import DataError
from distill.imports.labelstudio import LabelMap, merge_labeled, tasks_to_coco
from service.integrations.labelstudio.annotations import file_name, label_map
from service.integrations.labelstudio.config import parse_config

CATS = [{"id": 1, "name": "person", "keypoints": ["nose", "left_eye"]},
        {"id": 2, "name": "kite"}]
CONFIG = """<View><Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="Person"/><Label value="Flyer" predicted_values="kite"/></RectangleLabels>
  <KeyPointLabels name="kp" toName="image">
    <Label value="N" predicted_values="person" model_index="0"/><Label value="left_eye"/>
  </KeyPointLabels></View>"""
SIZE = {"original_width": 200, "original_height": 100}


def _box(rid: str, label: str, x: float, y: float, w: float, h: float,
         rotation: float = 0) -> dict[str, object]:
    return {"id": rid, "type": "rectanglelabels", **SIZE, "value": {
        "x": x, "y": y, "width": w, "height": h, "rotation": rotation,
        "rectanglelabels": [label]}}


def _point(label: str, x: float, y: float, parent: str | None = None) -> dict[str, object]:
    return {"type": "keypointlabels", **SIZE, **({"parentID": parent} if parent else {}),
            "value": {"x": x, "y": y, "width": 1, "keypointlabels": [label]}}


def test_labels_map_back_through_the_config() -> None:
    labels = label_map(parse_config(CONFIG), CATS)
    assert labels == LabelMap({"Person": 1, "Flyer": 2}, {"N": (1, 0), "left_eye": (1, 1)})


def test_annotations_become_coco_boxes_and_keypoints() -> None:
    labels = label_map(parse_config(CONFIG), CATS)
    tasks = [
        {"id": 1, "data": {"image": "/data/local-files/?d=cam1/a.png"}, "annotations": [
            {"id": 1, "updated_at": "2026-01-01", "result": [_box("x", "Person", 0, 0, 5, 5)]},
            {"id": 2, "updated_at": "2026-02-01", "result": [  # the latest one counts
                _box("b", "Person", 10, 10, 50, 50), _box("k", "Flyer", 0, 0, 10, 10, 90),
                _point("N", 20, 20, "b"), _point("left_eye", 30, 30),  # no parent: inside b
                _point("left_eye", 95, 95)]},  # outside every person box
            {"id": 3, "updated_at": "2026-03-01", "was_cancelled": True, "result": []}]},
        {"id": 2, "data": {"image": "/data/upload/3/9f-b.png"}, "annotations": []},
        {"id": 3, "data": {"image": "s3://bkt/c.png"}, "annotations": [{"id": 4, "result": []}]},
    ]
    got = tasks_to_coco(tasks, CATS, labels, lambda t: file_name(t["data"]["image"], t["id"]),
                        sizes={3: (64, 48)})
    validate_coco(got.coco)
    a, c = got.coco["images"]
    assert (a["file_name"], a["width"], a["height"]) == ("cam1/a.png", 200, 100)
    assert (c["file_name"], c["width"]) == ("bkt/c.png", 64)  # empty: size from the image
    person, kite = got.coco["annotations"]
    assert person["bbox"] == [20, 10, 100, 50] and person["num_keypoints"] == 2
    assert person["keypoints"] == [40, 20, 2, 60, 30, 2]
    assert kite["category_id"] == 2 and kite["bbox"] == pytest.approx([0, 0, 0, 20])
    assert got.skipped == {"keypoint outside every box of its category": 1,
                           "task without a finished annotation": 1}
    assert file_name("/data/upload/3/9f-b.png", 2) == "upload/3/9f-b.png"
    assert file_name("https://h/x/../../etc/passwd", 5) == "task5.png"


def test_merge_replaces_images_it_has_and_adds_the_rest() -> None:
    labeled = {"images": [{"id": 7, "file_name": "cam1/a.png", "width": 1, "height": 1},
                          {"id": 9, "file_name": "old.png", "width": 1, "height": 1}],
               "annotations": [{"id": 3, "image_id": 7, "category_id": 2, "bbox": [0, 0, 1, 1]},
                               {"id": 5, "image_id": 9, "category_id": 2, "bbox": [0, 0, 1, 1]}],
               "categories": CATS}
    corrected = {"images": [{"id": 1, "file_name": "cam1/a.png", "width": 2, "height": 2}],
                 "annotations": [{"id": 1, "image_id": 1, "category_id": 2,
                                  "bbox": [0, 0, 2, 2]}], "categories": CATS}
    merged = merge_labeled(labeled, corrected)
    validate_coco(merged)
    assert [i["file_name"] for i in merged["images"]] == ["old.png", "cam1/a.png"]
    assert [(a["id"], a["image_id"]) for a in merged["annotations"]] == [(5, 9), (6, 10)]
    with pytest.raises(DataError, match="categories"):
        merge_labeled(labeled, {**corrected, "categories": CATS[:1]})
