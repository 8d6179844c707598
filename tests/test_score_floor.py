"""The running score floor: keypoint work only for detections that can still be kept."""

from __future__ import annotations

import pytest
import torch
from torchvision.models.detection import KeypointRCNN

from distill.card import LabeledStats, ModelCard
from distill.models.zoo import build_model
from distill.score_floor import ScoreFloor
from distill.tta.keypoints import KeypointTTA
from distill.tta.transforms import Transform


def test_floor_estimates_the_calibrated_threshold_from_below() -> None:
    floor = ScoreFloor(per_image=2.0, margin=0.5, warmup=2, bins=100)
    floor.observe([torch.tensor([0.9, 0.7, 0.2])])
    assert floor.value() == 0.0  # still warming up
    floor.observe([torch.tensor([0.8, 0.655, 0.1])])
    # 4 instances wanted over 2 images: the 4th best is 0.655, in bin [0.65, 0.66).
    assert floor.value() == pytest.approx(0.5 * 0.65)
    sparse = ScoreFloor(per_image=5.0, warmup=0)
    sparse.observe([torch.tensor([0.9])])
    assert sparse.value() == 0.0  # fewer detections than the target: keep them all


def test_floor_applies_only_where_calibration_can_use_it() -> None:
    stats = LabeledStats(images=3, instances_per_image={"1": 2.0},
                         visible_keypoints_per_instance=5.0)
    person = {"id": 1, "name": "person", "keypoints": ["a"], "skeleton": []}
    card = ModelCard(arch="tiny", task="keypoints", categories=[person], min_size=64,
                     max_size=64, labeled_stats=stats)
    assert ScoreFloor.for_card(card, 0.5) is not None
    assert ScoreFloor.for_card(card, 0.0) is None
    assert ScoreFloor.for_card(ModelCard(arch="tiny", task="keypoints", categories=[person],
                                         min_size=64, max_size=64), 0.5) is None


@pytest.fixture(scope="module")
def model() -> KeypointRCNN:
    torch.manual_seed(0)
    return build_model("tiny", "keypoints", num_classes=2, num_keypoints=3, min_size=128,
                       max_size=192, options={"box_score_thresh": 0.0}).eval()


def test_keypoint_tta_skips_detections_under_the_floor_and_keeps_the_rest_exactly(
        model: KeypointRCNN) -> None:
    g = torch.Generator().manual_seed(0)
    images = [torch.rand(3, 128, 160, generator=g) for _ in range(2)]
    tta = KeypointTTA(model, [Transform(128, 192), Transform(128, 192, hflip=True)], [0, 2, 1])
    everything = tta(images)
    floor = ScoreFloor(per_image=3.0, margin=1.0, warmup=0)
    skipped = tta(images, floor=floor)
    cut = floor.value()
    assert cut > 0 and floor.images == 2
    for full, part in zip(everything, skipped, strict=True):
        keep = full["scores"] >= cut
        assert 0 < int(keep.sum()) < len(keep)  # the floor cut something, not everything
        for key in ("boxes", "scores", "keypoints", "keypoints_scores", "keypoints_spread"):
            torch.testing.assert_close(part[key], full[key][keep])
