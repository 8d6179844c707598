"""The Label Studio backend's pure parts: labeling configs in the YOLO example's
conventions, the regions they give, where task images are fetched from, and the refusal
of internal addresses (no Label Studio server needed; tests/labelstudio/
runs the real one)."""

from __future__ import annotations

import math

import pytest

from distill.errors import ConfigError
from distill.exports.labelstudio import image_regions
from service.integrations.labelstudio.config import parse_config
from service.integrations.labelstudio.media import LabelStudio
from service.integrations.labelstudio.safety import UnsafeURLError, check_public

CONFIG = """<View>
  <Image name="img" value="$photo"/>
  <RectangleLabels name="box" toName="img" model_score_threshold="0.3">
    <Label value="Person"/>
    <Label value="Flyer" predicted_values="kite,bird"/>
  </RectangleLabels>
  <KeyPointLabels name="kp" toName="img" model_point_threshold="0.5" model_point_size="10">
    <Label value="Nose" predicted_values="person" model_index="0"/>
    <Label value="left_eye"/>
  </KeyPointLabels>
</View>"""
CATS = {1: {"id": 1, "name": "person", "keypoints": ["nose", "left_eye", "right_eye"]},
        2: {"id": 2, "name": "kite"}, 3: {"id": 3, "name": "cone"}}
IMG = {"id": 1, "file_name": "a.png", "width": 200, "height": 100}


def test_the_yolo_conventions_map_categories_and_keypoints() -> None:
    config = parse_config(CONFIG)
    assert (config.image, config.data_key, config.score_threshold) == ("img", "photo", 0.3)
    plan = config.plan(200)
    assert plan.box_label(CATS[1]) == "Person"  # by name, ignoring case
    assert plan.box_label(CATS[2]) == "Flyer"  # predicted_values
    assert plan.box_label(CATS[3]) is None  # not in the config: left out
    assert plan.point_label(CATS[1], 0, "nose") == "Nose"  # predicted_values + model_index
    assert plan.point_label(CATS[1], 1, "left_eye") == "left_eye"  # by name
    assert plan.point_label(CATS[1], 2, "right_eye") is None
    assert plan.point_size == 5.0  # 10 px of 200


def test_regions_keep_scores_link_keypoints_and_honour_thresholds() -> None:
    logit = math.log(0.9 / 0.1)  # sigmoid 0.9
    anns = [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [20, 10, 40, 50], "score": 0.8,
             "keypoints": [30, 20, 2, 40, 20, 2, 50, 20, 2],
             "distill": {"keypoint_scores": [logit, -logit, logit]}},
            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [0, 0, 10, 10], "score": 0.2},
            {"id": 3, "image_id": 1, "category_id": 3, "bbox": [0, 0, 10, 10], "score": 0.9}]
    regions, scores = image_regions(IMG, anns, CATS, parse_config(CONFIG).plan(200))
    box, nose = regions  # the kite is under 0.3, the cone unmapped, left_eye under 0.5
    assert scores == [0.8]
    assert box["from_name"] == "box" and box["to_name"] == "img" and box["score"] == 0.8
    assert box["value"]["rectanglelabels"] == ["Person"]
    assert box["value"]["x"] == 10 and box["value"]["width"] == 20  # percent of 200 x 100
    assert nose["parentID"] == box["id"] and nose["from_name"] == "kp"
    assert nose["value"]["keypointlabels"] == ["Nose"] and nose["score"] == pytest.approx(0.9)


@pytest.mark.parametrize(("xml", "says"), [
    ('<!DOCTYPE v [<!ENTITY a "aaaa">]><View>&a;</View>', "DTD"),
    ("<View><Image name='i' value='$i'/>", "not XML"),
    ("<View><Image name='i' value='$i'/><Choices name='c' toName='i'/></View>", "no Rect"),
    ("<View><Image name='i' value='i'/><RectangleLabels name='b' toName='i'/></View>", "$field"),
    ("<View><Image name='i' value='$i'/><RectangleLabels name='b' toName='i' "
     "model_score_threshold='high'/></View>", "expected a number"),
])
def test_bad_configs_are_refused_saying_why(xml: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace("$", r"\$")):
        parse_config(xml)


def test_task_images_resolve_as_the_sdk_does() -> None:
    ls = LabelStudio("http://ls.internal:8080/", "token")
    assert ls.image_urls("/data/local-files/?d=a/b.png", 1) == [
        "http://ls.internal:8080/data/local-files/?d=a/b.png"]
    assert ls.image_urls("/data/upload/3/x.png", 1) == [
        "http://ls.internal:8080/storage-data/uploaded/?filepath=upload/3/x.png",
        "http://ls.internal:8080/data/upload/3/x.png"]
    assert ls.image_urls("s3://bucket/k.jpg", 7) == [
        "http://ls.internal:8080/tasks/7/presign/?fileuri=czM6Ly9idWNrZXQvay5qcGc="]
    assert ls.image_urls("https://example.org/a.jpg", 1) == ["https://example.org/a.jpg"]
    for bad in ("file:///etc/passwd", "//evil/x", 3, ""):
        with pytest.raises(UnsafeURLError):
            ls.image_urls(bad, 1)
    with pytest.raises(UnsafeURLError, match="LABEL_STUDIO_URL"):
        LabelStudio(None, None).image_urls("/data/upload/1/a.png", 1)


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379/", "http://169.254.169.254/latest",
                                 "http://10.1.2.3/a.png", "http://[::1]/a", "http://0.0.0.0/",
                                 "http://[::ffff:127.0.0.1]/", "http://user:pw@example.org/",
                                 "ftp://example.org/a", "http://localhost:8080/a"])
def test_internal_and_odd_targets_are_refused(url: str) -> None:
    with pytest.raises(UnsafeURLError):
        check_public(url)


def test_the_configured_label_studio_may_be_internal() -> None:
    trusted = LabelStudio("http://127.0.0.1:8080", None).trusted
    assert check_public("http://127.0.0.1:8080/data/upload/1/a.png", trusted)
    with pytest.raises(UnsafeURLError):  # another port of the same host is not trusted
        check_public("http://127.0.0.1:6379/", trusted)
