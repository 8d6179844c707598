"""Ignore regions in training: neither object nor background.

A region the teacher was unsure about (a pseudo-label between the ignore and the
calibrated threshold, written ``iscrowd: 1``) and a crowd region of a labeled COCO
file are both passed to the detector as target boxes labeled :data:`IGNORE_LABEL`,
after every real box of the image, so that torchvision's resize and our flip move
them with the rest. Two matching steps then treat them specially, each by one
overridden method (the rest of torchvision's training code runs unchanged):

- the RPN (:class:`IgnoreAwareRPN`) matches anchors to the real boxes only, and an
  anchor that would be a negative but lies mostly inside an ignore region is
  discarded (label -1: never sampled);
- the RoI heads (:class:`IgnoreAwareRoIHeads`) do the same for proposals, so no
  positive is ever matched to an ignore region and no background RoI is sampled in one.

"Mostly inside" is intersection over the anchor's (proposal's) own area
``>= IOA_THRESHOLD`` (0.7), the crowd rule of Detectron's ``CROWD_FILTER_THRESH`` and
tensorpack's ``CROWD_OVERLAP_THRES``. Real boxes come first in every target, so the
indices torchvision's keypoint loss takes from the matching still point at the right
rows of ``target["keypoints"]`` (ignore rows carry zeros there).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.models.detection.rpn import RegionProposalNetwork

IGNORE_LABEL = -1
IOA_THRESHOLD = 0.7


def intersection_over_area(boxes: Tensor, regions: Tensor) -> Tensor:
    """(N, M) intersection of each of ``boxes`` (N, 4, xyxy) with each of ``regions``
    (M, 4), divided by the area of the box (0 for an empty box)."""
    lt = torch.max(boxes[:, None, :2], regions[None, :, :2])
    rb = torch.min(boxes[:, None, 2:], regions[None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=2)
    area = (boxes[:, 2:] - boxes[:, :2]).clamp(min=0).prod(dim=1)
    return inter / area.clamp(min=1e-6)[:, None]


def split_ignore(boxes: Tensor, labels: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(real boxes, their labels, ignore boxes) of one target; real rows must come first."""
    ignore = labels == IGNORE_LABEL
    real = int((~ignore).sum())
    if bool(ignore[:real].any()):
        raise ValueError("ignore regions must follow every real box in a target")
    return boxes[:real], labels[:real], boxes[real:]


def _discard_inside(labels: Tensor, candidates: Tensor, regions: Tensor) -> Tensor:
    """Negatives (label 0) among ``candidates`` that lie mostly inside a region get -1."""
    if regions.numel() == 0 or candidates.numel() == 0:
        return labels
    inside = intersection_over_area(candidates, regions).max(dim=1).values >= IOA_THRESHOLD
    labels = labels.clone()
    labels[(labels == 0) & inside] = -1
    return labels


class IgnoreAwareRPN(RegionProposalNetwork):
    """torchvision's RPN; anchors inside ignore regions are never sampled as negatives."""

    def assign_targets_to_anchors(self, anchors: list[Tensor], targets: list[dict[str, Tensor]]
                                  ) -> tuple[list[Tensor], list[Tensor]]:
        split = [split_ignore(t["boxes"], t["labels"]) for t in targets]
        real = [{**t, "boxes": b, "labels": lab} for t, (b, lab, _) in zip(targets, split,
                                                                             strict=True)]
        labels, matched = super().assign_targets_to_anchors(anchors, real)
        labels = [_discard_inside(lab, a, s[2]) for lab, a, s in zip(labels, anchors, split,
                                                                      strict=True)]
        return labels, matched


class IgnoreAwareRoIHeads(RoIHeads):
    """torchvision's RoI heads; no positive matched to, and no negative sampled in, an
    ignore region."""

    def assign_targets_to_proposals(self, proposals: list[Tensor], gt_boxes: list[Tensor],
                                    gt_labels: list[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        split = [split_ignore(b, lab) for b, lab in zip(gt_boxes, gt_labels, strict=True)]
        matched, labels = super().assign_targets_to_proposals(
            proposals, [s[0] for s in split], [s[1] for s in split])
        labels = [_discard_inside(lab, p, s[2]) for lab, p, s in zip(labels, proposals, split,
                                                                      strict=True)]
        return matched, labels


def enable_ignore_regions(model: GeneralizedRCNN) -> GeneralizedRCNN:
    """Makes ``model``'s RPN and RoI heads ignore-aware, in place (same weights, same
    state-dict keys, same inference); returns the model."""
    for name, plain, aware in (("rpn", RegionProposalNetwork, IgnoreAwareRPN),
                               ("roi_heads", RoIHeads, IgnoreAwareRoIHeads)):
        module = getattr(model, name)
        if type(module) not in (plain, aware):
            raise TypeError(f"{name} is a {type(module).__name__}, not torchvision's "
                            f"{plain.__name__}: ignore regions are not supported there")
        # The subclass adds one method and no state, so the module keeps its identity.
        module.__class__ = aware
    return model
