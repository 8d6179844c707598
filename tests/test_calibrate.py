"""Calibrated selection: thresholds hit the labeled set's statistics on constructed scores."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest

from distill.calibrate import Selection, keypoint_score_threshold, score_thresholds


def kept_counts(scores_by_category: dict[int, Any], thresholds: dict[int, float]
                ) -> dict[int, int]:
    """How many predictions of each category the thresholds keep (score >=; none
    without a threshold)."""
    return {c: int((np.asarray(s, dtype=float) >= thresholds.get(c, math.inf)).sum())
            for c, s in scores_by_category.items()}


def distinct_scores(n: int, seed: int) -> list[float]:
    rng = random.Random(seed)
    return rng.sample([i / 1000 for i in range(1, 1000)], n)  # no ties


def test_targets_hit_exactly_without_ties() -> None:
    scores = {1: distinct_scores(300, 0), 2: distinct_scores(50, 1)}
    # 40 images: category 1 wants round(2.5 * 40) = 100, category 2 round(0.3 * 40) = 12.
    th = score_thresholds(scores, {1: 2.5, 2: 0.3}, num_images=40)
    assert kept_counts(scores, th) == {1: 100, 2: 12}
    assert th[1] == sorted(scores[1], reverse=True)[99]
    assert th[2] == sorted(scores[2], reverse=True)[11]


def test_ties_at_threshold_are_all_kept() -> None:
    scores = {1: [0.9, 0.8, 0.7, 0.7, 0.7, 0.1]}
    th = score_thresholds(scores, {1: 1.0}, num_images=3)  # target 3
    assert th[1] == 0.7
    assert kept_counts(scores, th) == {1: 5}


def test_fewer_predictions_than_target_keeps_all() -> None:
    scores = {1: [0.4, 0.2, 0.3]}
    th = score_thresholds(scores, {1: 2.0, 2: 1.0}, num_images=10)
    assert th == {1: 0.2, 2: 0.0}  # category 2 has no prediction: threshold 0
    assert kept_counts(scores, th) == {1: 3}


def test_zero_target_and_unknown_category_keep_nothing() -> None:
    scores = {1: [0.9, 0.5], 7: [0.99]}
    th = score_thresholds(scores, {1: 0.01}, num_images=10)  # round(0.1) = 0
    assert th == {1: math.inf, 7: math.inf}
    assert kept_counts(scores, th) == {1: 0, 7: 0}
    assert score_thresholds({1: [0.5]}, {1: 3.0}, num_images=0) == {1: math.inf}
    assert score_thresholds({}, {1: 0.0}, num_images=5) == {1: math.inf}


@pytest.mark.parametrize("args, match", [
    (({1: [0.5]}, {1: 1.0}, -1), r"num_images.*-1"),
    (({1: [0.5]}, {1: 1.0}, 2.5), r"num_images.*2\.5"),
    (({1: [0.5]}, {1: -0.5}, 10), r"instances_per_image\[1\].*-0\.5"),
    (({1: [0.5]}, {1: math.nan}, 10), r"instances_per_image\[1\].*nan"),
    (({1: [0.5, math.nan]}, {1: 1.0}, 10), r"scores of category 1.*nan"),
    (({3: [math.inf]}, {1: 1.0}, 10), r"scores of category 3"),
])
def test_score_thresholds_rejects_bad_input(args: tuple[Any, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        score_thresholds(*args)


def test_keypoint_threshold_hits_target_mean() -> None:
    rng = random.Random(3)
    pool = rng.sample(range(-5000, 5000), 40 * 17)  # distinct logits, negatives included
    instances = [[v / 100 for v in pool[17 * i:17 * (i + 1)]] for i in range(40)]
    th = keypoint_score_threshold(instances, visible_per_instance=11.5)  # target 460
    kept = sum(s >= th for inst in instances for s in inst)
    assert kept == 460
    assert kept / len(instances) == 11.5


def test_keypoint_threshold_edges() -> None:
    instances = [[0.9, 0.2, -1.0], [0.5, 0.5, 0.1]]
    assert keypoint_score_threshold(instances, 10.0) == -1.0  # target beyond pool: keep all
    assert keypoint_score_threshold(instances, 0.0) == math.inf
    assert keypoint_score_threshold([], 5.0) == math.inf
    assert keypoint_score_threshold([[], []], 5.0) == math.inf
    # Ties: target round(1.0 * 2) = 2 -> second best 0.5, tied with the third.
    th = keypoint_score_threshold(instances, 1.0)
    assert th == 0.5
    assert sum(s >= th for inst in instances for s in inst) == 3


@pytest.mark.parametrize("args, match", [
    (([[0.5]], -1.0), r"visible_per_instance.*-1\.0"),
    (([[0.5]], math.inf), r"visible_per_instance.*inf"),
    (([[0.5], [math.nan]], 1.0), r"instance 1.*nan"),
])
def test_keypoint_threshold_rejects_bad_input(args: tuple[Any, ...], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        keypoint_score_threshold(*args)


def test_selection_compares_with_greater_or_equal() -> None:
    sel = Selection(score_thresholds={1: 0.5}, keypoint_threshold=0.2)
    assert sel.keeps(1, 0.5) and not sel.keeps(1, 0.49)
    assert not sel.keeps(2, 0.99)  # unknown category keeps nothing
    assert sel.keeps_keypoint(0.2) and not sel.keeps_keypoint(0.1)
    with pytest.raises(ValueError, match="keypoint threshold"):
        Selection(score_thresholds={}, keypoint_threshold=None).keeps_keypoint(0.5)
