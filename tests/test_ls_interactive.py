"""Interactive pre-annotation's choices (``service.integrations.labelstudio.interactive``)
on a COCO file: a drawn box takes the keypoints of the detection it overlaps most (of
its label), whatever that detection's score, and comes back as drawn; a box over
nothing comes back alone; regions that are no drawn box of the config are ignored."""

from __future__ import annotations

from typing import Any

import pytest

from jobs.records import JobRequest
from service.integrations.labelstudio.config import parse_config
from service.integrations.labelstudio.interactive import (
    drawn_boxes,
    fractions,
    interactive_request,
    suggestion,
)

CONFIG = parse_config("""<View>
  <Image name="photo" value="$img"/>
  <RectangleLabels name="body" toName="photo"><Label value="person"/></RectangleLabels>
  <KeyPointLabels name="joints" toName="photo" model_score_threshold="0.5">
    <Label value="head" predicted_values="person" model_index="0"/>
    <Label value="foot" predicted_values="person" model_index="1"/>
  </KeyPointLabels>
</View>""")


def _coco() -> dict[str, Any]:
    def person(n: int, bbox: list[float], score: float, kps: list[float]) -> dict[str, Any]:
        return {"id": n, "image_id": 1, "category_id": 1, "bbox": bbox, "score": score,
                "keypoints": kps, "num_keypoints": 2}
    return {"images": [{"id": 1, "file_name": "task00000", "width": 200, "height": 100}],
            "categories": [{"id": 1, "name": "person", "keypoints": ["head", "foot"]}],
            "annotations": [person(1, [10, 10, 40, 80], 0.9, [30, 12, 2, 30, 88, 2]),
                            person(2, [100, 10, 40, 80], 0.08, [120, 15, 2, 121, 85, 2])]}


def _drawn(x: float, y: float, w: float, h: float, **extra: Any) -> dict[str, Any]:
    return {"id": "abc", "type": "rectanglelabels", "from_name": "body", "to_name": "photo",
            "original_width": 200, "original_height": 100, "image_rotation": 0,
            "value": {"x": x, "y": y, "width": w, "height": h, "rotation": 0,
                      "rectanglelabels": ["person"]}, **extra}


def test_a_drawn_box_takes_the_keypoints_of_the_detection_under_it() -> None:
    # percent of 200 x 100: (102, 12, 36, 76) px over person 2 (score 0.08, under the
    # config's 0.5); (0, 0, 4, 4) px over nobody; then regions that are not drawn boxes.
    context = {"result": [
        _drawn(51, 12, 18, 76), _drawn(0, 0, 2, 4),
        {**_drawn(1, 1, 1, 1), "from_name": "other"},
        {**_drawn(1, 1, 1, 1), "type": "keypointlabels"},
        _drawn(10, 10, 0, 5), {"value": None}, "junk"]}
    drawn = drawn_boxes({"context": context}, CONFIG)
    assert drawn is not None and len(drawn) == 2
    got = suggestion(_coco(), drawn, CONFIG, "v")
    boxes = [r for r in got["result"] if r["type"] == "rectanglelabels"]
    points = [r for r in got["result"] if r["type"] == "keypointlabels"]
    assert [b["id"] for b in boxes] == ["drawn1", "drawn2"]
    assert [round(v, 6) for v in (boxes[0]["value"]["x"], boxes[0]["value"]["width"])] == \
        [51, 18]  # as drawn, not the detection's box
    assert boxes[0]["value"]["rectanglelabels"] == ["person"] and boxes[0]["score"] == 0.08
    assert "score" not in boxes[1] and boxes[1]["value"]["x"] == 0
    assert sorted((p["value"]["keypointlabels"][0], round(p["value"]["x"], 3)) for p in points
                  ) == [("foot", 60.5), ("head", 60.0)]  # person 2's, not person 1's
    assert {p["parentID"] for p in points} == {"drawn1"}
    assert len({r["id"] for r in got["result"]}) == len(got["result"])


def test_no_context_is_a_plain_predict_and_the_request_keeps_every_detection() -> None:
    assert drawn_boxes({}, CONFIG) is None and drawn_boxes(None, CONFIG) is None
    assert drawn_boxes({"context": None}, CONFIG) is None  # Label Studio's plain predict
    # A context with nothing of the config's tags: nothing to answer (not a plain predict).
    assert drawn_boxes({"context": {"result": []}}, CONFIG) == []
    assert drawn_boxes({"context": {"result": [{"type": "keypointlabels"}]}}, CONFIG) == []
    assert drawn_boxes({"context": "junk"}, CONFIG) == []
    request = interactive_request(JobRequest(tta="flip", fusion="vote", score_threshold=0.4,
                                             keypoint_threshold=0.2,
                                             score_thresholds={"1": 0.7}))
    assert (request.score_threshold, request.score_thresholds) == (0.0, {})
    assert request.keypoint_threshold == 0.2  # keypoints are selected as always
    # An image without detections: the drawn box comes back alone.
    drawn = drawn_boxes({"context": {"result": [_drawn(5, 5, 10, 10)]}}, CONFIG)
    assert drawn is not None
    (box,) = suggestion({**_coco(), "annotations": []}, drawn, CONFIG, "v")["result"]
    assert (box["id"], box["value"]["width"]) == ("drawn1", 10)


def test_hostile_contexts_are_ignored_or_refused() -> None:
    """Numbers that are no finite JSON numbers make no box; too many boxes are refused
    (the router answers 422); a rotated box comes back as drawn, without keypoints."""
    bad = [{**_drawn(1, 1, 5, 5), "value": {**_drawn(1, 1, 5, 5)["value"], "x": v}}
           for v in (10 ** 400, True, "1", None, float("nan"))]
    assert drawn_boxes({"context": {"result": bad}}, CONFIG) == []
    with pytest.raises(ValueError, match="not both"):
        drawn_boxes({"context": {"result": [_drawn(1, 1, 5, 5), _click(3, 3)]}}, CONFIG)
    with pytest.raises(ValueError, match="more than 100"):
        drawn_boxes({"context": {"result": [_drawn(1, 1, 5, 5)] * 101}}, CONFIG)
    turned = {**_drawn(51, 12, 18, 76), "value": {**_drawn(51, 12, 18, 76)["value"],
                                                  "rotation": 30}}
    drawn = drawn_boxes({"context": {"result": [turned]}}, CONFIG)
    assert drawn is not None and fractions(drawn) == []
    (box,) = suggestion(_coco(), drawn, CONFIG, "v")["result"]
    assert box["value"]["rotation"] == 30


def test_a_label_of_the_teacher_matches_only_its_own_detections() -> None:
    """A box labelled with a category the image has no detection of gets no keypoints
    (not another category's); an unlabelled box may match any detection."""
    config = parse_config("""<View>
  <Image name="photo" value="$img"/>
  <RectangleLabels name="body" toName="photo">
    <Label value="person"/><Label value="dog"/></RectangleLabels>
  <KeyPointLabels name="joints" toName="photo">
    <Label value="head" predicted_values="person" model_index="0"/></KeyPointLabels>
</View>""")
    coco = {**_coco(), "categories": [*_coco()["categories"], {"id": 2, "name": "dog"}]}
    as_dog = {**_drawn(5, 10, 20, 80), "value": {**_drawn(5, 10, 20, 80)["value"],
                                                 "rectanglelabels": ["dog"]}}
    unlabelled = {**_drawn(5, 10, 20, 80), "value": {**_drawn(5, 10, 20, 80)["value"],
                                                     "rectanglelabels": []}}
    for region, points in ((as_dog, 0), (unlabelled, 1)):
        drawn = drawn_boxes({"context": {"result": [region]}}, config)
        assert drawn is not None
        got = suggestion(coco, drawn, config, "v")["result"]
        assert sum(r["type"] == "keypointlabels" for r in got) == points, region


def _click(x: float, y: float, positive: bool = True) -> dict[str, Any]:
    return {"id": "k1", "type": "keypointlabels", "from_name": "joints", "to_name": "photo",
            "original_width": 200, "original_height": 100, "is_positive": positive,
            "value": {"x": x, "y": y, "width": 0.5, "keypointlabels": ["head"]}}


def test_a_click_takes_the_whole_detection_under_it() -> None:
    """A click inside person 2 (score 0.08) gives person 2's own box and keypoints; an
    Alt-click, or a click over nothing, comes back as clicked."""
    drawn = drawn_boxes({"context": {"result": [_click(60, 50), _click(60, 50, False),
                                                _click(97, 5)]}}, CONFIG)
    assert drawn is not None and [d.click for d in drawn] == [True] * 3
    assert fractions(drawn) == []  # clicks make no prompt: the teacher detects
    got = suggestion(_coco(), drawn, CONFIG, "v")["result"]
    (box,) = [r for r in got if r["type"] == "rectanglelabels"]
    assert (box["id"], box["value"]["x"], box["value"]["width"]) == ("drawn1", 50, 20)
    assert box["score"] == 0.08
    points = [r for r in got if r["type"] == "keypointlabels" and "parentID" in r]
    assert sorted(p["value"]["keypointlabels"][0] for p in points) == ["foot", "head"]
    echoed = [r for r in got if r["type"] == "keypointlabels" and "parentID" not in r]
    assert [(r["id"], r["value"]["x"]) for r in echoed] == [("drawn2", 60), ("drawn3", 97)]
