"""Command-line flags that several commands share, spelled once (torch-free): the
inference options, the selection knobs and detector constructor options. The entry
point (:mod:`distill.cli`) and every plugin import them from here.

The selection knobs carry the names of :class:`distill.pseudolabels.SelectionConfig`,
as the service's form fields, query parameters, job records and the client do; the
old flags ``--score-thresh`` / ``--keypoint-thresh`` are still accepted.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Literal

from distill.errors import ConfigError
from distill.options import (
    COMBINES,
    DEFAULT_BATCH_SIZE,
    FUSIONS,
    KEYPOINT_CAP_FACTOR,
    KEYPOINT_CAP_MIN,
    POOLINGS,
    PRESETS,
    SCORINGS,
    InferenceOptions,
    inference_defaults,
    inference_options_from,
)

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


def add_inference_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that runs a teacher (defaults: InferenceOptions's,
    under the flat names of :data:`distill.options.INFERENCE_FLAGS`)."""
    d = inference_defaults()
    p.add_argument("--tta", default=d["tta"],
                   help=f"transform preset: {', '.join(PRESETS)}, "
                        "or a list like '224,256,320+flip' / 'x0.75,x1,x1.25+flip'")
    p.add_argument("--fusion", choices=FUSIONS, default=d["fusion"],
                   help="box fusion: NMS + box voting, or weighted boxes fusion")
    p.add_argument("--vote-iou", type=float, default=d["vote_iou"],
                   help="box-voting IoU threshold")
    p.add_argument("--vote-scoring", choices=SCORINGS, default=d["vote_scoring"])
    p.add_argument("--box-pooling", choices=POOLINGS, default=d["box_pooling"],
                   help="box fusion pools each transform's final detections (nms) or, as "
                        "Detectron, its raw per-class boxes before NMS (raw; default for "
                        "--fusion vote, while wbf takes only nms)")
    p.add_argument("--heatmap-combine", choices=COMBINES, default=d["heatmap_combine"])
    p.add_argument("--size-dependent", action="store_true",
                   help="small boxes ignore down-scaled passes, large ones up-scaled passes")
    p.add_argument("--size-dependent-area", type=float, default=d["size_dependent_area"],
                   help="below this area in original-image pixels a box is small "
                        f"(Detectron's AREA_TH; default {d['size_dependent_area']:g})")
    p.add_argument("--device", default=d["device"], help="cpu, cuda, cuda:N or auto")
    p.add_argument("--half", action="store_true", help="float16 on CUDA")
    p.add_argument("--batch-size", type=int, default=d["batch_size"],
                   help="images per forward pass (default: 1 on a CPU, where batching only "
                        f"pads, {DEFAULT_BATCH_SIZE} on a GPU)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads (default: $DISTILL_TORCH_THREADS, else half the cores, "
                        "so that two processes on one machine do not thrash)")
    p.add_argument("--keypoint-cap", type=_cap, default=d["keypoint_cap"],
                   help="keypoint teachers: detections per image that get the keypoint "
                        f"ensemble: 'auto' ({KEYPOINT_CAP_FACTOR:g}x the labeled instances per "
                        f"image, at least {KEYPOINT_CAP_MIN}), "
                        "a number, or 0 for all")
    p.add_argument("--keypoint-floor", type=float, default=d["keypoint_floor"],
                   help="keypoint teachers, calibrated selection: skip the keypoint ensemble "
                        "for detections scoring below this fraction of the running estimate "
                        f"of the calibrated threshold (default {d['keypoint_floor']:g}; 0: off)")


def parse_arch_options(items: list[str]) -> dict[str, Any]:
    """``--arch-option`` values: ``["box_score_thresh=0.01", "x=abc"]`` ->
    ``{"box_score_thresh": 0.01, "x": "abc"}`` (values parsed as JSON when they are)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--arch-option expects KEY=VALUE, got {item!r}")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value  # a bare string such as a name
    return out


def inference_options_from_args(args: argparse.Namespace) -> InferenceOptions:
    """The :class:`InferenceOptions` that :func:`add_inference_arguments` flags describe."""
    return inference_options_from(vars(args))


def _cap(value: str) -> int | Literal["auto"]:
    if value == "auto":
        return "auto"
    try:
        return int(value)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected 'auto' or an integer, got {value!r}") \
            from exc
