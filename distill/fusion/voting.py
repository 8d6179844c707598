"""NMS followed by box voting: Detectron's way of merging test-time-augmentation detections.

All transforms' detections of one image, already mapped back to original-image
coordinates, are pooled; per class, NMS picks the survivors, then each survivor
is refined by box voting (Gidaris & Komodakis, "Object detection via a
multi-region & semantic segmentation-aware CNN model", ICCV 2015) against every
pooled box of its class, suppressed ones included. This mirrors
``box_results_with_nms_and_limit`` and ``box_utils.box_voting`` in Detectron,
except that IoU is torchvision's (continuous coordinates, no "+1" pixel).

Boxes are ``(N, 4)`` float tensors in ``(x1, y1, x2, y2)`` format.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torchvision.ops import batched_nms, box_iou

from distill.errors import ConfigError
from distill.options import SCORINGS, FusionParams, Scoring, check_unit_interval

# The defaults of the keywords below: FusionParams owns them (Detectron's), so that a
# default changes in one place.
_DEFAULTS = FusionParams()


def _check_scoring(scoring: str) -> None:
    if scoring not in SCORINGS:
        raise ConfigError(
            f"unknown box-voting scoring {scoring!r}; expected one of {', '.join(SCORINGS)}"
        )


def _as_boxes(name: str, boxes: Tensor) -> Tensor:
    """``boxes`` as ``(N, 4)``; an empty tensor of any shape is accepted as ``(0, 4)``."""
    if boxes.numel() == 0:
        return boxes.reshape(0, 4)
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ConfigError(f"{name} must have shape (N, 4), got {tuple(boxes.shape)}")
    if not boxes.is_floating_point():
        raise ConfigError(f"{name} must be a floating-point tensor, got dtype {boxes.dtype}")
    return boxes


def _as_vector(t: Tensor) -> Tensor:
    """An empty tensor of any shape as ``(0,)``; anything else as it is (checked later)."""
    return t.reshape(0) if t.numel() == 0 else t


def _check_same_length(boxes_name: str, boxes: Tensor, **others: Tensor) -> None:
    for name, t in others.items():
        if t.dim() != 1 or t.shape[0] != boxes.shape[0]:
            raise ConfigError(
                f"{name} must have shape ({boxes.shape[0]},) to match {boxes_name}, "
                f"got {tuple(t.shape)}"
            )


def box_voting(
    kept_boxes: Tensor,
    kept_scores: Tensor,
    pool_boxes: Tensor,
    pool_scores: Tensor,
    iou_threshold: float = _DEFAULTS.vote_threshold,
    scoring: Scoring = _DEFAULTS.scoring,
) -> tuple[Tensor, Tensor]:
    """Refines boxes by box voting, as Detectron's ``box_utils.box_voting``.

    Each kept box's coordinates become the score-weighted mean of all pool
    boxes whose IoU with it is ``>= iou_threshold`` (its voters). The kept box
    is normally one of the pool boxes, so it votes for itself. The new score
    depends on ``scoring``:

    - ``"ID"``: the kept box's own score;
    - ``"AVG"``: the mean of the voters' scores;
    - ``"IOU_AVG"``: the mean of the voters' scores weighted by their IoU
      with the kept box.

    Labels are not looked at: call it once per class (``vote_merge`` does).

    Args:
        kept_boxes: ``(K, 4)`` boxes to refine, xyxy.
        kept_scores: ``(K,)`` their scores.
        pool_boxes: ``(P, 4)`` boxes that vote, xyxy.
        pool_scores: ``(P,)`` their scores, used as voting weights.
        iou_threshold: minimum IoU for a pool box to vote, in ``[0, 1]``; a
            box whose IoU equals it votes.
        scoring: how the refined score is computed.

    Returns:
        ``(boxes, scores)``, shapes ``(K, 4)`` and ``(K,)``, in the order of
        the kept boxes and with their dtypes. A kept box without voters, or
        whose voters' weights sum to zero (Detectron's ``np.average`` would
        raise there), is returned unchanged: this only happens when it is not
        itself in the pool, is degenerate (zero area gives NaN IoU) or all its
        voters score 0.

    Raises:
        ConfigError (a ``ValueError``): bad threshold, scoring or shapes.
    """
    check_unit_interval("iou_threshold", iou_threshold)
    _check_scoring(scoring)
    kept_boxes = _as_boxes("kept_boxes", kept_boxes)
    pool_boxes = _as_boxes("pool_boxes", pool_boxes)
    kept_scores = _as_vector(kept_scores)
    pool_scores = _as_vector(pool_scores)
    _check_same_length("kept_boxes", kept_boxes, kept_scores=kept_scores)
    _check_same_length("pool_boxes", pool_boxes, pool_scores=pool_scores)
    if kept_boxes.shape[0] == 0 or pool_boxes.shape[0] == 0:
        return kept_boxes.clone(), kept_scores.clone()

    pool_boxes = pool_boxes.to(kept_boxes.dtype)
    pool_scores = pool_scores.to(kept_scores.dtype)
    iou = box_iou(kept_boxes, pool_boxes)  # (K, P)
    # NaN IoU (two degenerate boxes) compares False, so such boxes never vote.
    voters = iou >= iou_threshold
    weights = torch.where(voters, pool_scores.to(kept_boxes.dtype).unsqueeze(0), 0.0)
    weight_sum = weights.sum(dim=1)
    # Broadcast-and-sum rather than a matmul: a float32 matmul may run in
    # TF32 on GPU when a caller enabled it, which would blur the coordinates.
    voted = (weights.unsqueeze(2) * pool_boxes.unsqueeze(0)).sum(dim=1)
    has_weight = weight_sum > 0
    safe_sum = torch.where(has_weight, weight_sum, 1.0)
    boxes = torch.where(has_weight.unsqueeze(1), voted / safe_sum.unsqueeze(1), kept_boxes)

    if scoring == "ID":
        scores = kept_scores.clone()
    else:
        if scoring == "AVG":
            score_weights = voters.to(kept_scores.dtype)
        else:  # IOU_AVG
            score_weights = torch.where(voters, iou, 0.0).to(kept_scores.dtype)
        norm = score_weights.sum(dim=1)
        valid = norm > 0
        averaged = (score_weights * pool_scores.unsqueeze(0)).sum(dim=1) / torch.where(
            valid, norm, 1.0
        )
        scores = torch.where(valid, averaged, kept_scores)
    return boxes, scores


def vote_merge(
    boxes: Tensor,
    scores: Tensor,
    labels: Tensor,
    *,
    nms_threshold: float = _DEFAULTS.nms_threshold,
    vote_threshold: float = _DEFAULTS.vote_threshold,
    scoring: Scoring = _DEFAULTS.scoring,
    max_detections: int = _DEFAULTS.max_detections,
) -> tuple[Tensor, Tensor, Tensor]:
    """Merges the pooled detections of all transforms of one image.

    Per class: NMS (``torchvision.ops.batched_nms``, which suppresses a box
    whose IoU with a better one is ``> nms_threshold``; Detectron's NMS suppresses
    at ``>=``, so the two differ only for a pair at exactly the threshold, and the
    torchvision rule is the one that runs here),
    then box voting of each survivor against all pooled boxes of its class,
    suppressed ones included (see ``box_voting``). Finally the
    ``max_detections`` best by (voted) score over all classes are kept.
    Detectron keeps every box scoring ``>=`` the ``max_detections``-th score,
    so ties there may give it a few more; here exactly ``max_detections``.

    Args:
        boxes: ``(N, 4)`` pooled boxes, xyxy, in original-image coordinates.
        scores: ``(N,)`` their scores.
        labels: ``(N,)`` their integer class labels.
        nms_threshold: NMS IoU threshold, in ``[0, 1]``.
        vote_threshold: box-voting IoU threshold, in ``[0, 1]``.
        scoring: box-voting scoring, one of ``"ID"``, ``"AVG"``, ``"IOU_AVG"``.
        max_detections: how many detections to keep at most (``>= 1``).

    Returns:
        ``(boxes, scores, labels)`` sorted by score, descending (ties keep
        class order, then NMS order), with the dtypes and device of the inputs.
        Empty input gives shapes ``(0, 4)``, ``(0,)``, ``(0,)``.

    Raises:
        ConfigError (a ``ValueError``): bad threshold, scoring, limit or shapes.
    """
    check_unit_interval("nms_threshold", nms_threshold)
    check_unit_interval("vote_threshold", vote_threshold)
    _check_scoring(scoring)
    # bool is an int in Python; True as a limit is surely a mistake.
    if isinstance(max_detections, bool) or not isinstance(max_detections, int) \
            or max_detections < 1:
        raise ConfigError(f"max_detections must be a positive integer, got {max_detections!r}")
    boxes = _as_boxes("boxes", boxes)
    scores = _as_vector(scores)
    labels = _as_vector(labels)
    _check_same_length("boxes", boxes, scores=scores, labels=labels)
    if labels.is_floating_point() or labels.is_complex():
        raise ConfigError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if boxes.shape[0] == 0:
        return boxes.clone(), scores.clone(), labels.clone()

    keep = batched_nms(boxes, scores, labels, nms_threshold)
    kept_labels = labels[keep]
    out_boxes: list[Tensor] = []
    out_scores: list[Tensor] = []
    out_labels: list[Tensor] = []
    # One box_voting call per class keeps classes apart exactly; the offset
    # trick of batched_nms would cost coordinate precision in the averages.
    for label in torch.unique(kept_labels):
        in_class = labels == label
        kept_c = keep[kept_labels == label]
        voted_boxes, voted_scores = box_voting(
            boxes[kept_c], scores[kept_c], boxes[in_class], scores[in_class],
            iou_threshold=vote_threshold, scoring=scoring,
        )
        out_boxes.append(voted_boxes)
        out_scores.append(voted_scores)
        out_labels.append(labels[kept_c])

    merged_boxes = torch.cat(out_boxes)
    merged_scores = torch.cat(out_scores)
    merged_labels = torch.cat(out_labels)
    # Voting may reorder scores (AVG, IOU_AVG), so sort after it, as Detectron
    # limits detections on the voted scores.
    order = torch.sort(merged_scores, descending=True, stable=True).indices[:max_detections]
    return merged_boxes[order], merged_scores[order], merged_labels[order]
