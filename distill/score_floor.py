"""Keypoint work only where it can be kept: a running floor under the calibrated threshold.

The keypoint ensemble costs one keypoint head per detection and pass, and heatmap
decoding per detection, while calibrated selection keeps about the labeled set's
instances per image: the job's threshold is the score of its ``target = mean x
images``-th best detection. :class:`ScoreFloor` watches the identity pass's
detection scores as a job runs and estimates that threshold; detections scoring
below ``margin`` x the estimate cannot plausibly be kept, so they get no keypoint
ensemble and are not stored. The estimate only starts after ``warmup`` images, and
it is rounded down, so the pseudo-label file stays the same unless the job's score
distribution shifts by more than the margin along the way (``benchmarks/throughput.py``
checks the files).

The price is in re-selection: a reviewer can lower a threshold afterwards only to
about ``margin`` x the calibrated one, since nothing below the floor was kept.

Selection logic, so it lives beside :mod:`distill.calibrate` rather than in ``tta/``.
A caller that annotates with calibrated thresholds makes one floor per run
(:func:`distill.annotate.score_floor`) and passes it down as an argument:
``infer_to_log(..., floor=)`` -> ``Predictor(images, floor=)`` -> the heatmap
keypoint ensemble (:class:`distill.tta.keypoints.KeypointTTA`), the one path where a
detection's keypoints cost work of their own (the box path's regressed keypoints come
with the detections, so it takes the argument and leaves it unused). Without one
(evaluation, explicit thresholds) every detection is ensembled.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from distill.card import ModelCard


class ScoreFloor:
    """A streaming estimate of the calibrated detection-score threshold of one category.

    Scores are binned (``bins`` over [0, 1]); the estimate is the lower edge of the bin
    holding the ``round(per_image x images)``-th best score seen so far.
    """

    def __init__(self, per_image: float, *, margin: float = 0.5, warmup: int = 8,
                 bins: int = 1000) -> None:
        if not 0.0 <= margin <= 1.0:
            raise ValueError(f"margin must lie in [0, 1], got {margin}")
        self.per_image, self.margin, self.warmup = per_image, margin, warmup
        self.counts = torch.zeros(bins, dtype=torch.int64)
        self.images = 0

    @classmethod
    def for_card(cls, card: ModelCard, margin: float) -> ScoreFloor | None:
        """The floor for a keypoint teacher's calibrated selection; None when there is
        nothing to estimate (a box teacher, no labeled statistics, or ``margin`` 0)."""
        per_image = card.keypoint_instances_per_image
        return None if not per_image or margin <= 0 else cls(per_image, margin=margin)

    def observe(self, scores: Sequence[Tensor]) -> None:
        """Adds one batch: the detection scores of each image."""
        bins = len(self.counts)
        for s in scores:
            index = (s.detach().float().cpu().clamp(0, 1) * bins).long().clamp(max=bins - 1)
            self.counts += torch.bincount(index, minlength=bins)
        self.images += len(scores)

    def value(self) -> float:
        """The score under which a detection is not worth the keypoint ensemble (0.0
        while warming up)."""
        target = round(self.per_image * self.images)
        if self.images < self.warmup or target < 1:
            return 0.0
        # Bins from the top: the first whose cumulative count reaches the target.
        from_top = torch.cumsum(self.counts.flip(0), dim=0)
        reached = torch.nonzero(from_top >= target)
        if not len(reached):
            return 0.0  # fewer detections than the target: everything can be kept
        bin_index = len(self.counts) - 1 - int(reached[0])
        return self.margin * bin_index / len(self.counts)

