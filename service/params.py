"""Parameters several routes share (the FastAPI template's place for them): the dataset
name in a path, and the thresholds a download may ask for.

The selection knobs are spelled as in :class:`distill.pseudolabels.SelectionConfig`
(``score_threshold``, ``keypoint_threshold``); the old query names ``score_thresh`` /
``keypoint_thresh`` are still read (hidden from the schema) so that old scripts work.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Annotated, Any

from fastapi import Depends, Form, Path, Query

from jobs.selection import SelectionQuery
from jobs.settings import DATASET_PATTERN
from service.errors import problem

DatasetName = Annotated[str, Path(pattern=DATASET_PATTERN, description="the dataset's name")]
RedirectQuery = Annotated[bool, Query(
    description="answer 307 to a presigned URL of the stored file (a bucket store, COCO, no "
                "thresholds given or saved), so the file does not pass through the API")]

_SCORE = "re-select with this detection-score threshold for every category instead of the " \
         "saved or the job's selection"
_KEYPOINT = "re-select with this keypoint-score threshold (the units of " \
            "info.thresholds.keypoint) instead of the saved or the job's"


def selection_query(
    score_threshold: Annotated[float | None, Query(
        ge=0.0, le=1.0, allow_inf_nan=False, description=_SCORE)] = None,
    keypoint_threshold: Annotated[float | None, Query(
        allow_inf_nan=False, description=_KEYPOINT)] = None,
    score_thresh: Annotated[float | None, Query(
        ge=0.0, le=1.0, allow_inf_nan=False, include_in_schema=False)] = None,
    keypoint_thresh: Annotated[float | None, Query(
        allow_inf_nan=False, include_in_schema=False)] = None,
) -> SelectionQuery:
    """The download's thresholds, under either spelling (not both, differently)."""
    return SelectionQuery(score_threshold=_one("score_threshold", score_threshold, score_thresh),
                          keypoint_threshold=_one("keypoint_threshold", keypoint_threshold,
                                                  keypoint_thresh))


def _one(name: str, new: float | None, old: float | None) -> float | None:
    if new is not None and old is not None and new != old:
        raise problem(422, f"{name} given twice with different values ({new} and {old} "
                           f"under its old name); send {name} only")
    return new if new is not None else old


SelectionQueryDep = Annotated[SelectionQuery, Depends(selection_query)]


@dataclass(frozen=True)
class SelectionForm:
    """The selection knobs of an upload (the names of :class:`JobRequest`)."""

    score_threshold: float | None
    keypoint_threshold: float | None
    min_votes: int
    ignore_factor: float

    def as_request(self) -> dict[str, Any]:
        """The :class:`jobs.records.JobRequest` fields these set."""
        return asdict(self)


def selection_form(
    score_threshold: Annotated[float | None, Form(
        ge=0.0, le=1.0, allow_inf_nan=False,
        description="explicit detection-score threshold (default: calibrated)")] = None,
    keypoint_threshold: Annotated[float | None, Form(
        allow_inf_nan=False,
        description="explicit keypoint-score threshold (default: calibrated)")] = None,
    min_votes: Annotated[int, Form(
        ge=0, le=100, description="box teachers: keep only instances that at least this "
                                  "many transforms agree on (default 0: no such rule)")] = 0,
    ignore_factor: Annotated[float, Form(
        ge=0.0, le=100.0, allow_inf_nan=False,
        description="write the next-best predictions, down to where the set would carry "
                    "this many times the labeled instances per image, as ignore regions "
                    "(iscrowd 1; >= 1; default 0: none)")] = 0.0,
    score_thresh: Annotated[float | None, Form(
        ge=0.0, le=1.0, allow_inf_nan=False, include_in_schema=False)] = None,
    keypoint_thresh: Annotated[float | None, Form(
        allow_inf_nan=False, include_in_schema=False)] = None,
) -> SelectionForm:
    """The upload's selection knobs, thresholds under either spelling."""
    if 0 < ignore_factor < 1.0:
        raise problem(422, f"ignore_factor {ignore_factor}: use 0 (no ignore regions) or a "
                           "factor >= 1")
    return SelectionForm(
        score_threshold=_one("score_threshold", score_threshold, score_thresh),
        keypoint_threshold=_one("keypoint_threshold", keypoint_threshold, keypoint_thresh),
        min_votes=min_votes, ignore_factor=ignore_factor)


SelectionFormDep = Annotated[SelectionForm, Depends(selection_form)]
