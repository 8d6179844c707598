"""Fusion of regressed keypoints (YOLO pose and the like) across transforms.

A model that regresses keypoints has no heatmaps to average. Each fused instance
instead takes its keypoints from the transforms whose own detections match its box
(same label, IoU >= ``iou_threshold``, the transform's best match; the same matching
as :func:`distill.fusion.agreement.transform_agreement`), already mapped back to the
original image with left/right swapped for mirrored passes. Per keypoint:

- location: the mean of the matched transforms' locations weighted by their keypoint
  confidence (the plain mean where every weight is 0);
- score: the mean confidence over the matched transforms;
- spread: the mean distance of the matched locations from their mean, in units of the
  fused box's longer side (0 where fewer than two transforms match), as
  :func:`distill.tta.keypoints.keypoint_spread` measures heatmap peaks.

An instance no transform matches at that IoU (raw pooling can vote a box away from
every transform's own) takes each transform's best-overlapping detection instead.
"""

from __future__ import annotations

import torch
from torch import Tensor

from distill.fusion.agreement import best_matches
from distill.tta.keypoints import keypoint_spread

KEYPOINT_FUSION = "confidence-weighted mean of the matching transforms' regressed keypoints"


def fuse_keypoints(fused_boxes: Tensor, fused_labels: Tensor,
                   per_transform: list[dict[str, Tensor]], *, iou_threshold: float = 0.5
                   ) -> tuple[Tensor, Tensor, Tensor]:
    """Keypoints (N, K, 3) as (x, y, 1), their scores (N, K) and spreads (N, K).

    Args:
        fused_boxes: (N, 4) xyxy boxes after fusion, original-image coordinates.
        fused_labels: (N,) their labels.
        per_transform: one detection set per transform (``boxes``, ``labels``,
            ``keypoints`` (M, K, 3), ``keypoints_scores`` (M, K)), in the same frame.
        iou_threshold: IoU at which a transform's detection matches a fused box.
    """
    n, k = len(fused_boxes), per_transform[0]["keypoints"].shape[1]
    t_count, dev = len(per_transform), fused_boxes.device
    coords = torch.zeros((t_count, n, k, 2), device=dev)
    conf = torch.zeros((t_count, n, k), device=dev)
    best = torch.zeros((t_count, n), device=dev)
    for t, det in enumerate(per_transform):
        if not n or not len(det["boxes"]):
            continue
        best[t], index = best_matches(fused_boxes, fused_labels, det["boxes"], det["labels"])
        coords[t] = det["keypoints"][index, :, :2].float()
        conf[t] = det["keypoints_scores"][index].float()
    uses = best >= iou_threshold
    unmatched = ~uses.any(dim=0)
    uses |= unmatched[None] & (best > 0)  # the fallback of the module docstring
    mask = uses[..., None].float()  # (T, N, 1)
    weights = conf.clamp(min=0) * mask
    total = weights.sum(dim=0)  # (N, K)
    counts = mask.sum(dim=0).clamp(min=1)  # (N, 1)
    plain = (coords * mask[..., None]).sum(dim=0) / counts[..., None]
    weighted = (coords * weights[..., None]).sum(dim=0) / total.clamp(min=1e-12)[..., None]
    xy = torch.where((total > 0)[..., None], weighted, plain)
    scores = (conf * mask).sum(dim=0) / counts
    sides = (fused_boxes[:, 2:] - fused_boxes[:, :2]).float().max(dim=1).values.clamp(min=1.0)
    unit = sides[:, None, None]
    spread = keypoint_spread([c / unit for c in coords], list(uses)) if t_count and n \
        else torch.zeros((n, k), device=dev)
    keypoints = torch.cat([xy, torch.ones((n, k, 1), device=dev)], dim=2)
    return keypoints, scores, spread
