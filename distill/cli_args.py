"""Command-line flags that several commands share, spelled once (torch-free).

The selection knobs carry the names of :class:`distill.pseudolabels.SelectionConfig`,
as the service's form fields, query parameters, job records and the client do; the
old flags ``--score-thresh`` / ``--keypoint-thresh`` are still accepted.
"""

from __future__ import annotations

import argparse
from typing import Any

SELECTION_FIELDS = ("score_threshold", "keypoint_threshold", "min_votes", "ignore_factor")


def add_selection_arguments(p: argparse.ArgumentParser, *, service: bool = False) -> None:
    """``--score-threshold``, ``--keypoint-threshold``, ``--min-votes``, ``--ignore-factor``.

    With ``service`` the defaults are None: only the flags given are sent, and the
    service's defaults (calibration, no vote rule, no ignore regions) apply.
    """
    p.add_argument("--score-threshold", "--score-thresh", dest="score_threshold", type=float,
                   default=None, help="explicit detection-score threshold (default: "
                                      "calibrated)")
    p.add_argument("--keypoint-threshold", "--keypoint-thresh", dest="keypoint_threshold",
                   type=float, default=None,
                   help="explicit keypoint-score threshold (default: calibrated)")
    p.add_argument("--min-votes", type=int, default=None if service else 0,
                   help="box teachers: keep only instances that at least this many transforms "
                        "agree on (each annotation's distill.votes; default 0: no such rule)")
    p.add_argument("--ignore-factor", type=float, default=None if service else 0.0,
                   help="also write the predictions not kept, down to where the set would "
                        "carry F x the labeled instances per image, as ignore regions "
                        "(iscrowd 1), which `distill train` treats as neither object nor "
                        "background (needs the teacher's labeled statistics; default 0: none)")


def selection_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The selection knobs given on the command line (None: not given)."""
    return {name: getattr(args, name) for name in SELECTION_FIELDS}
