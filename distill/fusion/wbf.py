"""Weighted boxes fusion (Solovyev, Wang, Gabruseva, 2019) as an alternative to NMS + voting.

A thin adapter around ``ensemble_boxes.weighted_boxes_fusion``: it normalises
pixel boxes to ``[0, 1]``, checks everything the library would otherwise answer
with ``print`` + ``exit()`` (unknown ``conf_type``, length mismatches), and
converts the result back to pixel tensors. The fusion itself is the library's.

Behaviour of the library worth knowing (ensemble-boxes 1.0.9):

- every list entry is one "model" (here: one transform) of weight 1, and an
  entry with no boxes still counts: with ``conf_type="avg"`` a cluster's score
  is the mean score of its boxes times ``min(T, n) / T`` (T transforms, n boxes
  in the cluster), so a box found by few transforms is down-weighted;
- a box joins a cluster only when its IoU with the cluster's fused box is
  strictly greater than ``iou_threshold`` (voting uses ``>=``);
- boxes scoring below ``skip_box_threshold`` (strictly) are dropped first;
- fused clusters are computed in float32, single-box clusters in float64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
from ensemble_boxes import weighted_boxes_fusion
from torch import Tensor

from distill.errors import ConfigError
from distill.options import FusionParams, check_unit_interval

CONF_TYPES: tuple[str, ...] = ("avg", "max", "box_and_model_avg", "absent_model_aware_avg")

# The defaults of the keywords of wbf_merge that FusionParams also has: it owns them.
_DEFAULTS = FusionParams()


def _to_normalised_numpy(
    index: int, entry: tuple[Tensor, Tensor, Tensor], width: float, height: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One transform's detections as normalised float64 boxes, scores and int64 labels.

    Boxes are clipped to the image first; boxes left with no area are dropped
    here (the library would drop them too, with a warning per box).
    """
    boxes, scores, labels = entry
    boxes = boxes.reshape(0, 4) if boxes.numel() == 0 else boxes
    scores = scores.reshape(0) if scores.numel() == 0 else scores
    labels = labels.reshape(0) if labels.numel() == 0 else labels
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ConfigError(
            f"per_transform[{index}]: boxes must have shape (N, 4), got {tuple(boxes.shape)}"
        )
    n = boxes.shape[0]
    for name, t in (("scores", scores), ("labels", labels)):
        if t.dim() != 1 or t.shape[0] != n:
            raise ConfigError(
                f"per_transform[{index}]: {name} must have shape ({n},) to match boxes, "
                f"got {tuple(t.shape)}"
            )
    if labels.is_floating_point() or labels.is_complex():
        raise ConfigError(
            f"per_transform[{index}]: labels must be an integer tensor, got dtype {labels.dtype}"
        )
    scale = np.array([width, height, width, height], dtype=np.float64)
    b = np.clip(boxes.detach().cpu().to(torch.float64).numpy() / scale, 0.0, 1.0)
    s = scores.detach().cpu().to(torch.float64).numpy()
    lab = labels.detach().cpu().to(torch.int64).numpy()
    has_area = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
    return b[has_area], s[has_area], lab[has_area]


def wbf_merge(
    per_transform: Sequence[tuple[Tensor, Tensor, Tensor]],
    image_size: tuple[int, int],
    *,
    iou_threshold: float = _DEFAULTS.wbf_iou_threshold,
    skip_box_threshold: float = 0.0,
    conf_type: str = "avg",
    max_detections: int = _DEFAULTS.max_detections,
) -> tuple[Tensor, Tensor, Tensor]:
    """Fuses the detections of all transforms of one image by weighted boxes fusion.

    Calls ``ensemble_boxes.weighted_boxes_fusion`` with every transform at
    weight 1 (see the module docstring for the library's semantics).

    Args:
        per_transform: one ``(boxes (N, 4) xyxy, scores (N,), labels (N,))``
            entry per transform, already in original-image pixel coordinates;
            entries with no boxes are fine and still count as transforms.
        image_size: ``(width, height)`` of the original image, in pixels.
        iou_threshold: IoU above which a box joins a cluster, in ``[0, 1]``.
        skip_box_threshold: boxes scoring below this are ignored, in ``[0, 1]``.
        conf_type: the library's cluster score: ``"avg"``, ``"max"``,
            ``"box_and_model_avg"`` or ``"absent_model_aware_avg"``.
        max_detections: how many fused boxes to keep at most (``>= 1``).

    Returns:
        ``(boxes, scores, labels)`` sorted by score, descending: boxes ``(M, 4)``
        xyxy in pixels, clipped to the image, with the dtype and device of the
        first entry's boxes (float32 on CPU when there is no entry); scores in
        the same float dtype; labels int64. No boxes gives shapes ``(0, 4)``,
        ``(0,)``, ``(0,)``.

    Raises:
        ConfigError (a ``ValueError``): bad size, threshold, conf_type, limit
        or shapes.
    """
    if len(image_size) != 2 or any(
        isinstance(v, bool) or not isinstance(v, int | float | np.integer | np.floating)
        or not 0 < v < math.inf
        for v in image_size
    ):
        raise ConfigError(f"image_size must be (width, height) in pixels, > 0, got {image_size!r}")
    check_unit_interval("iou_threshold", iou_threshold)
    check_unit_interval("skip_box_threshold", skip_box_threshold)
    if conf_type not in CONF_TYPES:
        raise ConfigError(
            f"unknown WBF conf_type {conf_type!r}; expected one of {', '.join(CONF_TYPES)}"
        )
    if isinstance(max_detections, bool) or not isinstance(max_detections, int) \
            or max_detections < 1:
        raise ConfigError(f"max_detections must be a positive integer, got {max_detections!r}")

    width, height = float(image_size[0]), float(image_size[1])
    if per_transform:
        first_boxes = per_transform[0][0]
        dtype = first_boxes.dtype if first_boxes.is_floating_point() else torch.float32
        device = first_boxes.device
    else:
        dtype, device = torch.float32, torch.device("cpu")

    boxes_list: list[np.ndarray] = []
    scores_list: list[np.ndarray] = []
    labels_list: list[np.ndarray] = []
    for i, entry in enumerate(per_transform):
        b, s, lab = _to_normalised_numpy(i, entry, width, height)
        boxes_list.append(b)
        scores_list.append(s)
        labels_list.append(lab)

    fused_boxes, fused_scores, fused_labels = weighted_boxes_fusion(
        boxes_list, scores_list, labels_list,
        iou_thr=iou_threshold, skip_box_thr=skip_box_threshold, conf_type=conf_type,
    )
    fused_boxes = np.asarray(fused_boxes, dtype=np.float64).reshape(-1, 4)
    fused_scores = np.asarray(fused_scores, dtype=np.float64).reshape(-1)
    # Labels come back as floats; they were integers going in.
    fused_labels = np.rint(np.asarray(fused_labels, dtype=np.float64)).astype(np.int64).reshape(-1)

    # A cluster whose boxes all score 0 gets NaN coordinates (0 / 0 in the
    # library's weighted mean); such a box is worthless, so it is dropped.
    finite = np.isfinite(fused_boxes).all(axis=1)
    fused_boxes, fused_scores, fused_labels = (
        fused_boxes[finite], fused_scores[finite], fused_labels[finite]
    )

    # The library sorts with an unstable argsort; a stable one here makes ties
    # deterministic before the cut.
    order = np.argsort(-fused_scores, kind="stable")[:max_detections]
    scale = np.array([width, height, width, height], dtype=np.float64)
    pixel_boxes = np.clip(fused_boxes[order] * scale, 0.0, scale)
    return (
        torch.as_tensor(pixel_boxes, dtype=dtype, device=device).reshape(-1, 4),
        torch.as_tensor(fused_scores[order], dtype=dtype, device=device).reshape(-1),
        torch.as_tensor(fused_labels[order], dtype=torch.int64, device=device).reshape(-1),
    )
