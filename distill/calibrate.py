"""Calibrated selection of pseudo-labels (data distillation, Radosavovic et al. 2018, sec. 3).

The thresholds are computed once over the whole unlabeled set being annotated,
not per image, so that the pseudo-labeled set carries as many instances per
image of each category as the labeled set, and (for keypoints) as many kept
keypoints per instance as the labeled set has visible ones. A prediction is
kept when its score is ``>=`` the threshold, so every prediction tied with the
threshold score is kept: ties can make a few more than the target survive.

Pure Python and numpy; the labeled statistics come from the teacher's card. A keypoint
job estimates its threshold while it runs, to skip work below it: :mod:`distill.score_floor`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from distill.errors import ConfigError


def _scores_array(what: str, scores: Sequence[float]) -> np.ndarray:
    """``scores`` as a flat float64 array; NaN or infinite scores are refused."""
    arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not np.isfinite(arr).all():
        bad = arr[~np.isfinite(arr)][0]
        raise ConfigError(f"{what} must be finite numbers, got {bad!r}")
    return arr


def _check_mean(what: str, value: float) -> None:
    # Written so that NaN fails too (every comparison with NaN is False).
    if isinstance(value, bool) or not 0.0 <= value < math.inf:
        raise ConfigError(f"{what} must be a finite number >= 0, got {value!r}")


def _target_threshold(scores: np.ndarray, target: int) -> float:
    """The score to keep (``>=``) so that ``target`` of ``scores`` survive, ties aside.

    ``target == 0`` keeps nothing (``inf``); a target at or above the number of
    scores keeps all (the lowest score, or 0.0 when there is none).
    """
    if target == 0:
        return math.inf
    if scores.size == 0:
        return 0.0
    if target >= scores.size:
        return float(scores.min())
    # The target-th largest is the (size - target)-th smallest: a linear-time
    # partition instead of a full sort, as the whole unlabeled set is pooled.
    k = scores.size - target
    return float(np.partition(scores, k)[k])


def score_thresholds(
    scores_by_category: Mapping[int, Sequence[float]],
    instances_per_image: Mapping[int, float],
    num_images: int,
) -> dict[int, float]:
    """Per-category score thresholds matching the labeled set's instances per image.

    For each category ``c`` of ``instances_per_image``: ``target =
    round(instances_per_image[c] * num_images)`` (Python's ``round``: halves go
    to the even integer), and the threshold is the score of the target-th best
    prediction of ``c`` over the whole unlabeled set; predictions scoring
    ``>=`` it are kept. Without ties exactly ``target`` are kept; every
    prediction tied with the threshold score is kept too, so ties can keep a
    few more. When fewer predictions than ``target`` exist all are kept (the
    threshold is the lowest score, or 0.0 when there is none). When ``target
    == 0`` nothing is kept: the threshold is ``math.inf``. Categories with
    predictions but absent from ``instances_per_image`` (the labeled set never
    showed them) also get ``math.inf``.

    Args:
        scores_by_category: category id -> scores of all its predictions in
            the unlabeled set (after fusion), in any order.
        instances_per_image: category id -> mean number of instances per
            labeled image (the card's statistics, keys converted to ``int``).
        num_images: number of unlabeled images being annotated, ``>= 0``.

    Returns:
        Category id -> threshold, for every category of either mapping.

    Raises:
        ConfigError (a ``ValueError``): negative or non-integer
        ``num_images``, a negative or non-finite mean, a non-finite score.
    """
    if isinstance(num_images, bool) or not isinstance(num_images, int | np.integer) \
            or num_images < 0:
        raise ConfigError(f"num_images must be an integer >= 0, got {num_images!r}")
    thresholds: dict[int, float] = {}
    for category, mean in instances_per_image.items():
        _check_mean(f"instances_per_image[{category!r}]", mean)
        scores = _scores_array(f"scores of category {category!r}",
                               scores_by_category.get(category, ()))
        target = round(mean * num_images)
        thresholds[category] = _target_threshold(scores, target)
    for category, category_scores in scores_by_category.items():
        if category not in thresholds:
            # Still validated, so that bad input never passes silently.
            _scores_array(f"scores of category {category!r}", category_scores)
            thresholds[category] = math.inf
    return thresholds


def keypoint_score_threshold(
    keypoint_scores: Sequence[Sequence[float]], visible_per_instance: float
) -> float:
    """One keypoint-score threshold matching the labeled set's visible keypoints per instance.

    All keypoint scores of the kept instances are pooled; with ``target =
    round(visible_per_instance * num_instances)``, the threshold is the
    target-th largest pooled score, so that the mean number of kept keypoints
    (score ``>=`` threshold) per kept instance equals ``visible_per_instance``
    (up to rounding; ties at the threshold are all kept, so a few more may
    be). When ``target`` reaches the pool size all are kept (the lowest score);
    when ``target == 0``, when there is no instance, or when the instances
    have no keypoint score at all, nothing is kept: ``math.inf``.

    Keypoint R-CNN keypoint scores are heatmap logits, not probabilities, so
    the threshold may be any real number, negative included.

    Args:
        keypoint_scores: one sequence of K keypoint scores per kept instance.
        visible_per_instance: the labeled set's mean number of visible
            keypoints (v > 0) per instance, ``>= 0``.

    Returns:
        The threshold (keep a keypoint when its score is ``>=`` it).

    Raises:
        ConfigError (a ``ValueError``): a negative or non-finite mean, a
        non-finite score.
    """
    _check_mean("visible_per_instance", visible_per_instance)
    num_instances = len(keypoint_scores)
    pooled = [
        _scores_array(f"keypoint scores of instance {i}", s)
        for i, s in enumerate(keypoint_scores)
    ]
    if num_instances == 0:
        return math.inf
    pool = np.concatenate(pooled)
    if pool.size == 0:
        return math.inf
    return _target_threshold(pool, round(visible_per_instance * num_instances))


# What the selection does with one prediction, in the order the rule decides it: a
# reviewer's per-instance decision first ("rejected" / an accepted one is "kept"), then
# the thresholds: "kept" (an object in the file), "ignored" (an ignore region, iscrowd 1),
# "candidate" (counted in calibration, left out of the file) and "filtered" (fewer
# transforms agree on it than min_votes: not even a candidate).
PredictionStatus = Literal["kept", "ignored", "candidate", "filtered", "rejected"]
IN_FILE: frozenset[str] = frozenset({"kept", "ignored"})


def enough_votes(votes: int | None, min_votes: int) -> bool:
    """Whether a prediction that ``votes`` transforms agree on passes ``min_votes`` (None:
    no agreement count, as for keypoint teachers, always passes): the one vote rule of
    calibration's candidates, the selection and the file."""
    return votes is None or votes >= min_votes


@dataclass(frozen=True)
class Selection:
    """The thresholds that select pseudo-labels, and a reviewer's per-instance decisions.

    ``score_thresholds`` maps category id -> detection-score threshold; a
    category missing from it keeps nothing. ``keypoint_threshold`` is the
    keypoint-score threshold of keypoint tasks, ``None`` for box tasks.
    ``min_votes``: a box agreed on by fewer transforms is never kept (instances
    without an agreement count, such as keypoint ones, are not affected).
    ``ignore_thresholds`` (category id -> score, empty: none) marks the predictions
    that are not kept but score at least this as ignore regions: the teacher is
    unsure there, so a student should learn neither object nor background from them.
    That includes a box that scores high enough but that too few transforms agree on.
    ``accepted`` / ``rejected`` (image file name -> indices of its predictions) are a
    reviewer's decisions that override the thresholds: an accepted prediction is kept,
    a rejected one is left out (background). Everything is compared with ``>=``.
    """

    score_thresholds: dict[int, float]
    keypoint_threshold: float | None  # None for box tasks
    min_votes: int = 0
    ignore_thresholds: dict[int, float] = field(default_factory=dict)
    accepted: Mapping[str, frozenset[int]] = field(default_factory=dict)
    rejected: Mapping[str, frozenset[int]] = field(default_factory=dict)

    def keeps(self, category_id: int, score: float, votes: int | None = None) -> bool:
        """Whether a detection of ``category_id`` scoring ``score`` (agreed on by ``votes``
        transforms, when known) is kept by the thresholds."""
        if not enough_votes(votes, self.min_votes):
            return False
        return score >= self.score_thresholds.get(category_id, math.inf)

    def ignores(self, category_id: int, score: float, votes: int | None = None) -> bool:
        """Whether a detection that is not kept becomes an ignore region (its score lies
        between the category's ignore threshold and its calibrated one)."""
        if self.keeps(category_id, score, votes):
            return False
        return score >= self.ignore_thresholds.get(category_id, math.inf)

    def status(self, category_id: int, score: float, votes: int | None = None, *,
               file_name: str | None = None, index: int | None = None) -> PredictionStatus:
        """What the selection does with the ``index``-th prediction of ``file_name``: the
        one rule that the COCO file, the job's report and the review page follow."""
        if file_name is not None and index is not None:
            if index in self.rejected.get(file_name, ()):
                return "rejected"
            if index in self.accepted.get(file_name, ()):
                return "kept"
        if self.keeps(category_id, score, votes):
            return "kept"
        if self.ignores(category_id, score, votes):
            return "ignored"
        return "candidate" if enough_votes(votes, self.min_votes) else "filtered"

    def keeps_keypoint(self, score: float) -> bool:
        """Whether a keypoint scoring ``score`` is kept (labeled visible, v=2).

        Raises:
            ConfigError: this selection has no keypoint threshold (a box task).
        """
        if self.keypoint_threshold is None:
            raise ConfigError("this selection has no keypoint threshold (box task)")
        return score >= self.keypoint_threshold
