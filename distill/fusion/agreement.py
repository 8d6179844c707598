"""How many transforms agree on each fused box, and how far apart their boxes are.

A pseudo-label that every transform found, at nearly the same place, is more
trustworthy than one a single pass produced. For each fused box and each
transform, the transform's best-overlapping detection of the same class counts
as agreeing when its IoU with the fused box is at least ``iou_threshold``;
``spread`` is the mean absolute deviation of the agreeing boxes' corners from
their mean, in units of the fused box's size (0 when fewer than two agree).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import box_iou


def transform_agreement(fused_boxes: Tensor, fused_labels: Tensor,
                        per_transform: list[tuple[Tensor, Tensor]], *,
                        iou_threshold: float = 0.5) -> tuple[Tensor, Tensor]:
    """Votes (N,) int64 and spread (N,) float32 of ``fused_boxes`` (N, 4).

    Args:
        fused_boxes: (N, 4) xyxy boxes after fusion, original-image coordinates.
        fused_labels: (N,) labels of the fused boxes.
        per_transform: one (boxes (M_t, 4), labels (M_t,)) per transform, in the same frame.
        iou_threshold: IoU at which a transform's detection agrees with a fused box.
    """
    n = len(fused_boxes)
    matched = torch.zeros((len(per_transform), n, 4), dtype=torch.float32)
    agrees = torch.zeros((len(per_transform), n), dtype=torch.bool)
    for t, (boxes, labels) in enumerate(per_transform):
        if not n or not len(boxes):
            continue
        best, index = best_matches(fused_boxes, fused_labels, boxes, labels)
        agrees[t] = best >= iou_threshold
        matched[t] = boxes[index].float()
    votes = agrees.sum(dim=0)
    counts = votes.clamp(min=1).float()
    mean = (matched * agrees[..., None]).sum(dim=0) / counts[:, None]
    deviation = ((matched - mean[None]).abs() * agrees[..., None]).sum(dim=0) / counts[:, None]
    size = torch.stack([fused_boxes[:, 2] - fused_boxes[:, 0],
                        fused_boxes[:, 3] - fused_boxes[:, 1]], dim=1).float().clamp(min=1.0)
    spread = (deviation / size.repeat(1, 2)).mean(dim=1)
    spread[votes < 2] = 0.0
    return votes.to(torch.int64), spread


def best_matches(fused_boxes: Tensor, fused_labels: Tensor, boxes: Tensor, labels: Tensor
                 ) -> tuple[Tensor, Tensor]:
    """For each fused box, the IoU (N,) and index (N,) of its best-overlapping box of the
    same label among ``boxes`` (M, 4), M >= 1 (IoU 0 where no box has its label)."""
    iou = box_iou(fused_boxes.float(), boxes.float())
    iou[fused_labels[:, None] != labels[None, :]] = 0.0
    best, index = iou.max(dim=1)
    return best, index

