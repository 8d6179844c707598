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
about ``margin`` x the calibrated one, since nothing below the floor was kept. A
caller that annotates with calibrated thresholds installs a floor around its
inference with :func:`running_floor`; without one (evaluation, explicit thresholds)
every detection is ensembled. The same context-variable pattern as
``distill.interrupt``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar

import torch
from torch import Tensor

from distill.card import ModelCard

_current: ContextVar[ScoreFloor | None] = ContextVar("distill_score_floor", default=None)


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
        if card.task != "keypoints" or card.labeled_stats is None or margin <= 0:
            return None
        per_image = card.labeled_stats.instances_per_image.get(str(card.categories[0]["id"]))
        return None if not per_image else cls(per_image, margin=margin)

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


@contextmanager
def running_floor(floor: ScoreFloor | None) -> Iterator[None]:
    """Runs the block with ``floor`` applied by the keypoint ensemble (None: no floor)."""
    token = _current.set(floor)
    try:
        yield
    finally:
        _current.reset(token)


def current_floor() -> ScoreFloor | None:
    """The floor installed by the innermost :func:`running_floor`, if any."""
    return _current.get()
