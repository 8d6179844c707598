"""The one rule that turns a job's request, a download's query and a reviewer's saved
selection into the selection a file is written with.

The worker (a job's own file), the API's downloads (a job's or a dataset's, with or
without a query) and the review document all call :func:`selection_for`, so the page
shows what a download holds and a new selection knob is added here once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from distill.pseudolabels import SelectionConfig
from jobs.records import JobRequest, SavedSelection

# Which thresholds a file was written with: a download's query, the reviewer's saved
# selection, or the job's own (explicit or calibrated).
SelectionSource = Literal["query", "saved", "job"]


@dataclass(frozen=True)
class SelectionQuery:
    """Thresholds a download asks for instead of the saved or the job's ones."""

    score_threshold: float | None = None
    keypoint_threshold: float | None = None

    @property
    def empty(self) -> bool:
        return self.score_threshold is None and self.keypoint_threshold is None


def selection_for(request: JobRequest, query: SelectionQuery | None = None,
                  saved: SavedSelection | None = None
                  ) -> tuple[SelectionConfig, SelectionSource]:
    """The selection and the word saying where it came from: thresholds asked for in
    the query (``query``; the job's min_votes and ignore factor stay, exclusions and
    per-instance decisions do not), else the saved selection (``saved``: its thresholds,
    exclusions and decisions, and its min_votes when set), else the job's request
    (``job``: its explicit thresholds or calibration)."""
    query = query or SelectionQuery()
    if not query.empty or saved is None:
        # A query's score threshold replaces the job's, per-category ones included.
        per_category = {} if query.score_threshold is not None else {
            int(k): (math.inf if v is None else v) for k, v in request.score_thresholds.items()}
        return SelectionConfig(
            score_threshold=(query.score_threshold if query.score_threshold is not None
                             else request.score_threshold),
            category_thresholds=per_category,
            keypoint_threshold=(query.keypoint_threshold if query.keypoint_threshold
                                is not None else request.keypoint_threshold),
            min_votes=request.min_votes, ignore_factor=request.ignore_factor,
        ), "job" if query.empty else "query"
    return SelectionConfig(
        category_thresholds={int(k): (math.inf if v is None else v)
                             for k, v in saved.score_thresholds.items()},
        keypoint_threshold=saved.keypoint_threshold,
        min_votes=request.min_votes if saved.min_votes is None else saved.min_votes,
        ignore_factor=request.ignore_factor, excluded=frozenset(saved.excluded),
        accepted={k: frozenset(v) for k, v in saved.accepted.items()},
        rejected={k: frozenset(v) for k, v in saved.rejected.items()},
    ), "saved"
