"""Ignore regions in training: never a positive, never a sampled negative (hand-built cases)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distill.models.zoo import build_model
from training.data import DetectionDataset, prepare_records
from training.ignore import (
    IGNORE_LABEL,
    IgnoreAwareRoIHeads,
    IgnoreAwareRPN,
    enable_ignore_regions,
    intersection_over_area,
)

REAL = [10.0, 10.0, 50.0, 50.0]
IGNORE = [100.0, 100.0, 180.0, 180.0]


def _model(task: str = "boxes") -> torch.nn.Module:
    torch.manual_seed(0)
    model = build_model("tiny", task, num_classes=2, num_keypoints=3 if task == "keypoints"
                        else 0, min_size=128, max_size=256)
    return enable_ignore_regions(model)


def _target() -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor([REAL, IGNORE]), "labels": torch.tensor([1, IGNORE_LABEL])}


def test_intersection_over_area_is_relative_to_the_first_boxes() -> None:
    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], [0.0, 0.0, 0.0, 0.0]])
    region = torch.tensor([[0.0, 0.0, 10.0, 100.0]])
    assert intersection_over_area(boxes, region)[:, 0].tolist() == [1.0, 0.5, 0.0]


def test_enabling_keeps_weights_and_inference() -> None:
    torch.manual_seed(0)
    plain = build_model("tiny", "boxes", num_classes=2, min_size=128, max_size=256).eval()
    aware = _model().eval()
    assert isinstance(aware.rpn, IgnoreAwareRPN)
    assert isinstance(aware.roi_heads, IgnoreAwareRoIHeads)
    assert plain.state_dict().keys() == aware.state_dict().keys()
    image = [torch.rand(3, 128, 160)]
    with torch.no_grad():
        a, b = plain(image)[0], aware(image)[0]
    assert torch.equal(a["boxes"], b["boxes"]) and torch.equal(a["scores"], b["scores"])


def test_rpn_anchor_inside_an_ignore_region_is_neither_positive_nor_negative() -> None:
    model = _model()
    anchors = torch.tensor([REAL,  # the real box: positive
                            IGNORE,  # the ignore region itself: not a positive
                            [110.0, 110.0, 150.0, 150.0],  # inside it: not a negative
                            [90.0, 90.0, 130.0, 130.0],  # 56% inside: still a negative
                            [200.0, 10.0, 240.0, 50.0]])  # elsewhere: a negative
    labels, matched = model.rpn.assign_targets_to_anchors([anchors], [_target()])
    assert labels[0].tolist() == [1.0, -1.0, -1.0, 0.0, 0.0]
    assert matched[0][0].tolist() == REAL


def test_roi_heads_sample_no_positive_or_negative_in_an_ignore_region() -> None:
    model = _model()
    heads = model.roi_heads
    inside = torch.tensor([[100.0 + i, 100.0 + i, 160.0 + i, 160.0 + i] for i in range(20)])
    outside = torch.tensor([[200.0 + i, 10.0, 240.0 + i, 50.0] for i in range(20)])
    proposals = torch.cat([inside, outside, torch.tensor([REAL])])
    target = _target()
    matched, labels = heads.assign_targets_to_proposals(
        [proposals], [target["boxes"]], [target["labels"]])
    assert labels[0][:20].eq(-1).all() and labels[0][20:40].eq(0).all()
    assert labels[0][40].item() == 1 and matched[0][40].item() == 0
    # The whole sampling step (ground truth appended to the proposals, then sampled):
    sampled, _, sampled_labels, _ = heads.select_training_samples([proposals], [target])
    inside_ignore = intersection_over_area(sampled[0], torch.tensor([IGNORE]))[:, 0] >= 0.7
    assert not inside_ignore[sampled_labels[0] == 0].any()
    positives = sampled[0][sampled_labels[0] > 0]
    assert len(positives) and (intersection_over_area(positives, torch.tensor([REAL]))
                               [:, 0] > 0.5).all()


def test_ignore_rows_must_follow_the_real_ones() -> None:
    model = _model()
    target = {"boxes": torch.tensor([IGNORE, REAL]), "labels": torch.tensor([IGNORE_LABEL, 1])}
    with pytest.raises(ValueError, match="follow every real box"):
        model.rpn.assign_targets_to_anchors([torch.tensor([REAL])], [target])


def test_crowd_annotations_load_as_trailing_ignore_rows_and_train(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((200, 240, 3), dtype=np.uint8)).save(tmp_path / "a.png")
    kp = [20, 20, 2, 30, 30, 2, 40, 40, 2]
    person = {"id": 1, "name": "person", "keypoints": ["a", "b", "c"], "skeleton": []}
    coco = {"images": [{"id": 1, "file_name": "a.png", "width": 240, "height": 200}],
            "categories": [person],
            "annotations": [
                {"id": 1, "image_id": 1, "category_id": 1, "bbox": [100, 100, 80, 80],
                 "iscrowd": 1, "keypoints": [0] * 9},
                {"id": 2, "image_id": 1, "category_id": 1, "bbox": [10, 10, 40, 40],
                 "keypoints": kp}]}
    records, counts = prepare_records(coco, tmp_path, "keypoints", [person])
    assert (counts.instances, counts.ignore_regions, counts.crowd) == (1, 1, 0)
    _, target = DetectionDataset(records, "keypoints", [0, 1, 2]).load(0, flip=True)
    assert target["labels"].tolist() == [1, IGNORE_LABEL]
    assert target["keypoints"][1].eq(0).all()
    dropped, counts = prepare_records(coco, tmp_path, "keypoints", [person], crowd="drop")
    assert (counts.ignore_regions, counts.crowd, len(dropped[0].ignore)) == (0, 1, 0)
    # A training step of a keypoint model: the keypoint loss indexes the real rows only.
    model = _model("keypoints").train()
    image, target = DetectionDataset(records, "keypoints").load(0, flip=False)
    losses = model([image], [target])
    assert all(torch.isfinite(v) for v in losses.values())
    assert losses["loss_keypoint"].item() > 0
