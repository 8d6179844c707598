"""The pseudo-label file's selection records and ignore regions, on hand-built predictions.

Two box categories over four images; the labeled set has 1.0 "car" and 0.5 "bike" per
image, so calibration targets 4 cars and 2 bikes.
"""

from __future__ import annotations

import pytest

from distill.card import LabeledStats, ModelCard
from distill.coco import objects
from distill.errors import ConfigError
from distill.predictions import ImageRecord
from distill.pseudolabels import SelectionConfig, finalize

CAR, BIKE = 3, 7


def _card() -> ModelCard:
    return ModelCard(arch="tiny", task="boxes", min_size=64, max_size=64,
                     categories=[{"id": CAR, "name": "car"}, {"id": BIKE, "name": "bike"}],
                     labeled_stats=LabeledStats(images=10, instances_per_image={
                         str(CAR): 1.0, str(BIKE): 0.5}))


def _records(car_scores: list[list[float]], bike_scores: list[list[float]]
             ) -> list[ImageRecord]:
    records = []
    for i, (cars, bikes) in enumerate(zip(car_scores, bike_scores, strict=True)):
        scores = (*cars, *bikes)
        boxes = tuple((10.0 * k, 0.0, 10.0 * k + 8, 8.0) for k in range(len(scores)))
        records.append(ImageRecord(file_name=f"{i}.png", width=100, height=20, boxes=boxes,
                                   scores=scores,
                                   category_ids=(CAR,) * len(cars) + (BIKE,) * len(bikes)))
    return records


# 8 car candidates (target 4) and one bike candidate (target 2: a shortfall).
CARS = [[0.9, 0.35], [0.8, 0.3], [0.7, 0.2], [0.6, 0.1]]
BIKES = [[0.5], [], [], []]


def test_category_report_records_target_candidates_kept_threshold_and_shortfall() -> None:
    coco = finalize(_records(CARS, BIKES), _card(), SelectionConfig())
    report = coco["info"]["categories_report"]
    assert report[str(CAR)] == {
        "name": "car", "target": 4, "candidates": 8, "kept": 4, "threshold": 0.6,
        "shortfall": False, "ignored": 0, "ignore_threshold": None}
    # Fewer candidates than the target: everything the detector gave is kept, and said so.
    assert report[str(BIKE)] == {
        "name": "bike", "target": 2, "candidates": 1, "kept": 1, "threshold": 0.5,
        "shortfall": True, "ignored": 0, "ignore_threshold": None}
    assert all(a["iscrowd"] == 0 for a in coco["annotations"])


def test_ignore_regions_lie_between_the_ignore_and_the_calibrated_threshold() -> None:
    coco = finalize(_records(CARS, BIKES), _card(), SelectionConfig(ignore_factor=1.5))
    # 1.5 x the car target is 6 instances: the 5th and 6th best cars become ignore regions.
    report = coco["info"]["categories_report"][str(CAR)]
    assert (report["kept"], report["ignored"], report["threshold"],
            report["ignore_threshold"]) == (4, 2, 0.6, 0.3)
    crowd = [a for a in coco["annotations"] if a["iscrowd"]]
    assert sorted(a["score"] for a in crowd) == [0.3, 0.35]
    assert all(a["distill"]["ignore"] is True for a in crowd)
    assert {a["score"] for a in objects(coco)} == {0.9, 0.8, 0.7, 0.6, 0.5}
    assert coco["info"]["thresholds"]["ignore"] == {str(CAR): 0.3, str(BIKE): 0.5}
    assert coco["info"]["selection"]["ignore_factor"] == 1.5
    # The bike's single candidate is kept, so nothing is left to ignore.
    assert coco["info"]["categories_report"][str(BIKE)]["ignored"] == 0


def test_a_short_category_keeps_only_candidates_above_its_floor() -> None:
    # Bikes: 0.75 per labeled image, so 3 wanted on 4 images, and only 2 candidates.
    card = _card()
    card.labeled_stats.instances_per_image[str(BIKE)] = 0.75  # type: ignore[union-attr]
    records = _records(CARS, [[0.5], [0.2], [], []])
    report = finalize(records, card, SelectionConfig())["info"]["categories_report"]
    assert report[str(BIKE)] | {"name": "bike"} == {
        "name": "bike", "target": 3, "candidates": 2, "kept": 1, "threshold": 0.5,
        "shortfall": True, "ignored": 0, "ignore_threshold": None}
    # With ignore regions, the unsure candidate becomes one; with floor 0, a pseudo-label.
    ignoring = finalize(records, card, SelectionConfig(ignore_factor=1.0))
    assert ignoring["info"]["categories_report"][str(BIKE)]["ignored"] == 1
    everything = finalize(records, card, SelectionConfig(shortfall_floor=0.0))
    assert everything["info"]["categories_report"][str(BIKE)]["kept"] == 2


@pytest.mark.parametrize("factor", [0.5, float("inf")])
def test_ignore_factor_is_zero_or_at_least_one(factor: float) -> None:
    with pytest.raises(ConfigError, match="ignore"):
        SelectionConfig(ignore_factor=factor)


def test_ignore_regions_beside_explicit_thresholds() -> None:
    # A reviewer's explicit thresholds keep the job's ignore regions: calibrated apart.
    coco = finalize(_records(CARS, BIKES), _card(),
                    SelectionConfig(score_threshold=0.75, ignore_factor=1.5))
    report = coco["info"]["categories_report"][str(CAR)]
    assert (report["kept"], report["ignored"], report["ignore_threshold"]) == (2, 4, 0.3)


def test_keypoint_annotations_carry_each_keypoint_score_and_spread() -> None:
    person = {"id": 1, "name": "person", "keypoints": ["a", "b"], "skeleton": []}
    card = ModelCard(arch="tiny", task="keypoints", min_size=64, max_size=64,
                     categories=[person], labeled_stats=LabeledStats(
                         images=1, instances_per_image={"1": 1.0},
                         visible_keypoints_per_instance=1.0))
    record = ImageRecord(file_name="a.png", width=50, height=50,
                         boxes=((0.0, 0.0, 40.0, 40.0), (5.0, 5.0, 9.0, 9.0)),
                         scores=(0.9, 0.2), category_ids=(1, 1),
                         keypoints=(((10.0, 10.0), (20.0, 20.0)), ((6.0, 6.0), (7.0, 7.0))),
                         keypoint_scores=((3.0, -1.0), (0.5, 0.4)),
                         keypoint_spread=((0.01, 0.3), (0.2, 0.2)))
    coco = finalize([record], card, SelectionConfig(ignore_factor=2.0))
    kept, ignored = coco["annotations"]
    assert kept["distill"] == {"keypoint_scores": [3.0, -1.0], "keypoint_spread": [0.01, 0.3]}
    assert kept["keypoints"] == [10.0, 10.0, 2, 0, 0, 0] and kept["num_keypoints"] == 1
    # The second person is an ignore region: no keypoints, no keypoint extras.
    assert ignored["iscrowd"] == 1 and ignored["num_keypoints"] == 0
    assert ignored["distill"] == {"ignore": True}
    report = coco["info"]["categories_report"]
    assert report["keypoints"]["instances"] == 1 and report["1"]["ignored"] == 1


def test_status_orders_reviewer_decisions_before_thresholds() -> None:
    from distill.calibrate import Selection

    sel = Selection(score_thresholds={CAR: 0.5}, keypoint_threshold=None, min_votes=2,
                    ignore_thresholds={CAR: 0.3}, accepted={"a.png": frozenset({1})},
                    rejected={"a.png": frozenset({0})})
    assert sel.status(CAR, 0.9, 3, file_name="a.png", index=0) == "rejected"
    assert sel.status(CAR, 0.1, 1, file_name="a.png", index=1) == "kept"
    assert sel.status(CAR, 0.9, 3, file_name="b.png", index=0) == "kept"
    assert sel.status(CAR, 0.9, 1) == "ignored"  # scores high, too few transforms agree
    assert sel.status(CAR, 0.2, 1) == "filtered"
    assert sel.status(CAR, 0.2, 2) == "candidate"
    assert sel.status(BIKE, 0.99) == "candidate"  # no threshold: keeps nothing


def test_reviewer_decisions_and_exclusions_reach_the_file() -> None:
    records = _records(CARS, BIKES)
    config = SelectionConfig(category_thresholds={CAR: 0.6, BIKE: 0.5},
                             excluded=frozenset({"3.png"}),
                             accepted={"1.png": frozenset({1})},  # the 0.3 car
                             rejected={"0.png": frozenset({0})})  # the 0.9 car
    coco = finalize(records, _card(), config)
    names = {im["id"]: im["file_name"] for im in coco["images"]}
    kept = sorted((names[a["image_id"]], a["score"]) for a in objects(coco))
    assert kept == [("0.png", 0.5), ("1.png", 0.3), ("1.png", 0.8), ("2.png", 0.7)]
    assert "3.png" not in names.values()
    assert coco["info"]["selection"]["rejected"] == {"0.png": [0]}
    assert coco["info"]["selection"]["excluded"] == ["3.png"]
