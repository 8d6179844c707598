"""From raw ensembled predictions to COCO pseudo-labels: selection, then writing.

Selection keeps the reliable predictions. By default the thresholds are
calibrated over the whole set being annotated so that it carries as many
instances per image per category (and, for keypoints, as many keypoints per
instance) as the teacher's labeled set; explicit thresholds replace that.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from distill.calibrate import (
    Selection,
    enough_votes,
    keypoint_score_threshold,
    score_thresholds,
)
from distill.card import LabeledStats, ModelCard
from distill.errors import ConfigError
from distill.predictions import ImageRecord
from distill.pseudolabel_file import json_threshold, to_coco

# Records to select from: an in-memory collection, or a function that starts a fresh
# pass over them (e.g. ``lambda: log.iter_records()``), so a set of any size can be
# calibrated and written in a few streaming passes with flat memory.
RecordSource = Collection[ImageRecord] | Callable[[], Iterable[ImageRecord]]


def _passes(source: RecordSource) -> Callable[[], Iterable[ImageRecord]]:
    if callable(source):
        return source
    return lambda: source


@dataclass(frozen=True)
class SelectionConfig:
    """Calibrated (default) or explicit thresholds.

    ``score_threshold`` applies to every category, ``category_thresholds``
    (COCO id -> score) to the ones it names; either turns calibration off for
    boxes. ``keypoint_threshold`` does the same for keypoint scores.
    """

    score_threshold: float | None = None
    category_thresholds: Mapping[int, float] = field(default_factory=dict)
    keypoint_threshold: float | None = None
    # Box teachers: instances fewer transforms agree on are neither candidates nor kept.
    min_votes: int = 0
    # 0: off. F >= 1: the predictions not kept, down to where the set would carry F x the
    # labeled instances per image, are written as ignore regions (iscrowd 1). Needs the
    # labeled statistics, also beside explicit score thresholds.
    ignore_factor: float = 0.0
    # A category with fewer candidates than its target keeps only those scoring at least
    # this, not everything down to the detector's score floor: measured on the synthetic
    # box teachers (benchmarks/score_bands.py, docs/RESULTS.md), predictions under 0.5
    # are 0-11% right. Calibrated only; 0 keeps every candidate.
    shortfall_floor: float = 0.5
    # A reviewer's choices: images left out of the file, and per image (file name) the
    # indices of predictions accepted whatever their score or rejected as wrong.
    excluded: frozenset[str] = frozenset()
    accepted: Mapping[str, frozenset[int]] = field(default_factory=dict)
    rejected: Mapping[str, frozenset[int]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not (self.ignore_factor == 0 or 1.0 <= self.ignore_factor < math.inf):
            raise ConfigError(f"ignore_factor must be 0 (off) or a finite number >= 1, "
                              f"got {self.ignore_factor!r}")
        if not 0.0 <= self.shortfall_floor <= 1.0:
            raise ConfigError(f"shortfall_floor must lie in [0, 1], got {self.shortfall_floor!r}")

    @property
    def explicit(self) -> bool:
        """Whether the box thresholds are given rather than calibrated."""
        return self.score_threshold is not None or bool(self.category_thresholds)

    def describe(self) -> dict[str, Any]:
        """JSON form for the output's info block."""
        return {"score_threshold": self.score_threshold,
                "category_thresholds": {str(k): json_threshold(v)
                                        for k, v in self.category_thresholds.items()},
                "keypoint_threshold": self.keypoint_threshold, "min_votes": self.min_votes,
                "ignore_factor": self.ignore_factor, "shortfall_floor": self.shortfall_floor,
                "excluded": sorted(self.excluded),
                "accepted": {k: sorted(v) for k, v in sorted(self.accepted.items()) if v},
                "rejected": {k: sorted(v) for k, v in sorted(self.rejected.items()) if v}}


def select(records: RecordSource, card: ModelCard, config: SelectionConfig) -> Selection:
    """Computes the thresholds for a whole set of images (one or two streaming passes)."""
    fresh = _passes(records)
    cat_ids = [int(c["id"]) for c in card.categories]
    ignore: dict[int, float] = {}
    pool: tuple[dict[int, array[float]], int] | None = None  # read once, used twice
    if config.explicit:
        default = config.score_threshold if config.score_threshold is not None else math.inf
        thresholds = {c: float(config.category_thresholds.get(c, default)) for c in cat_ids}
    else:
        targets = _targets(card, "detection-score")
        by_cat, num_ok = pool = _candidates(fresh, cat_ids, config.min_votes)
        thresholds = score_thresholds(by_cat, targets, num_ok)
        for c, scores in by_cat.items():  # short of candidates: not down to the floor
            if 0 < len(scores) < round(targets.get(c, 0.0) * num_ok):
                thresholds[c] = max(thresholds[c], config.shortfall_floor)
    if config.ignore_factor:
        targets = _targets(card, "ignore-region")
        by_cat, num_ok = pool or _candidates(fresh, cat_ids, config.min_votes)
        ignore = score_thresholds(
            by_cat, {c: m * config.ignore_factor for c, m in targets.items()}, num_ok)
    kp_threshold: float | None = None
    if card.task == "keypoints":
        if config.keypoint_threshold is not None:
            kp_threshold = float(config.keypoint_threshold)
        else:
            visible = _labeled_stats(card, "keypoint-score").visible_keypoints_per_instance
            if visible is None:
                raise ConfigError("the teacher card has no visible-keypoint statistics; "
                                  "give an explicit keypoint threshold")
            boxes_only = Selection(score_thresholds=thresholds, keypoint_threshold=None)
            kept = [kps for r in fresh() if r.error is None for kps, s, c in
                    zip(r.keypoint_scores or (), r.scores, r.category_ids, strict=True)
                    if boxes_only.keeps(c, s)]
            kp_threshold = keypoint_score_threshold(kept, visible)
    return Selection(score_thresholds=thresholds, keypoint_threshold=kp_threshold,
                     min_votes=config.min_votes, ignore_thresholds=ignore,
                     accepted=config.accepted, rejected=config.rejected)


def _candidates(fresh: Callable[[], Iterable[ImageRecord]], cat_ids: list[int],
                min_votes: int) -> tuple[dict[int, array[float]], int]:
    """Every category's candidate scores over the set (one streaming pass), and the
    number of images read without error."""
    by_cat: dict[int, array[float]] = {c: array("d") for c in cat_ids}
    num_ok = 0
    for r in fresh():
        if r.error is None:
            num_ok += 1
            for i, (s, c) in enumerate(zip(r.scores, r.category_ids, strict=True)):
                if enough_votes(None if r.votes is None else r.votes[i], min_votes):
                    by_cat.setdefault(c, array("d")).append(s)
    return by_cat, num_ok


def _targets(card: ModelCard, what: str) -> dict[int, float]:
    """Labeled instances per image, by category id."""
    return {int(k): v for k, v in _labeled_stats(card, what).instances_per_image.items()}


def _labeled_stats(card: ModelCard, what: str) -> LabeledStats:
    """The card's labeled statistics, or an error that says how to do without them."""
    if card.labeled_stats is None:
        name = card.provenance.get("name") or card.provenance.get("checkpoint") or card.arch
        raise ConfigError(
            f"teacher {name!r} carries no labeled-set statistics, so the {what} threshold "
            "cannot be calibrated: give explicit thresholds (score_threshold and, for "
            "keypoints, keypoint_threshold), or re-import the teacher with `distill teacher import "
            "--labeled-json J` or `--stats S`")
    return card.labeled_stats


def finalize(records: RecordSource, card: ModelCard, selection: SelectionConfig,
             info: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Calibrates over all records and builds the COCO pseudo-label dict.

    ``records`` may be a function starting a fresh streaming pass (see
    :data:`RecordSource`), so huge sets stay out of memory. The selection's excluded
    images are left out before calibration.
    """
    records = without_excluded(records, selection.excluded)
    chosen = select(records, card, selection)
    return to_coco(records, card, chosen, {"selection": selection.describe(), **(info or {})})


def without_excluded(records: RecordSource, excluded: frozenset[str]) -> RecordSource:
    """``records`` less the images named in ``excluded`` (the same kind of source)."""
    if not excluded:
        return records
    if callable(records):
        fresh = records
        return lambda: (r for r in fresh() if r.file_name not in excluded)
    return [r for r in records if r.file_name not in excluded]
