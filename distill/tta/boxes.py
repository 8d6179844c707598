"""Multi-transform box detection: the whole detector per transform, then fusion.

Every transform runs the full detector; its boxes are mapped back to the
original image (un-scaled by the detector's own postprocessing, then
un-mirrored), all transforms' detections are pooled, and the pool is fused
per image: per-class NMS + box voting (Detectron's ``BBOX_VOTE``), or
weighted boxes fusion from ``ensemble-boxes``. The pool holds either each
transform's final detections (``pooling="nms"``) or, as Detectron pools them,
its raw per-class regressed boxes before NMS and top-k (``pooling="raw"``), so
that every survivor is voted against every pooled box of every transform.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.ops import batched_nms

from distill.errors import ConfigError
from distill.fusion import vote_merge, wbf_merge
from distill.fusion.agreement import transform_agreement
from distill.interrupt import checkpoint
from distill.options import FusionParams
from distill.tta.transforms import Transform


class BoxTTA:
    """Wraps a Faster R-CNN with the model's own call signature:
    ``tta(images) -> [{"boxes", "labels", "scores"}]`` in original coordinates."""

    def __init__(self, model: GeneralizedRCNN, transforms: Sequence[Transform],
                 fusion: FusionParams | None = None) -> None:
        if not transforms:
            raise ConfigError("box TTA needs at least one transform")
        self.model = model.eval()
        self.transforms = list(transforms)
        self.fusion = fusion or FusionParams()

    @torch.inference_mode()
    def __call__(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        original = [(int(i.shape[-2]), int(i.shape[-1])) for i in images]
        per_transform = [self._detect(t, images, original) for t in self.transforms]
        results = []
        for i, size in enumerate(original):
            dets = [d[i] for d in per_transform]
            results.append(self._fuse(dets, size))
        return results

    def _detect(self, t: Transform, images: list[Tensor], original: list[tuple[int, int]]
                ) -> list[dict[str, Tensor]]:
        """Full detector at one transform, boxes back in the original frame."""
        checkpoint()  # a cancelled job stops here, between passes
        model = self.model
        rcnn = t.rcnn_transform(model.transform)
        batch, _ = rcnn([img.flip(-1) for img in images] if t.hflip else images)
        features = model.backbone(batch.tensors)
        proposals, _ = model.rpn(batch, features)
        with _raw_detections(model, self.fusion.raw_pool_cap, self.fusion.pooled == "raw"):
            detections, _ = model.roi_heads(features, proposals, batch.image_sizes)
        detections = rcnn.postprocess(detections, batch.image_sizes, original)
        for det, size in zip(detections, original, strict=True):
            det["boxes"] = t.boxes_to_original(det["boxes"], size)
        return detections

    def _fuse(self, dets: list[dict[str, Tensor]], size: tuple[int, int]) -> dict[str, Tensor]:
        f = self.fusion
        if f.method == "wbf":
            boxes, scores, labels = wbf_merge(
                [(d["boxes"], d["scores"], d["labels"]) for d in dets], (size[1], size[0]),
                iou_threshold=f.wbf_iou_threshold, max_detections=f.max_detections)
        else:
            boxes, scores, labels = vote_merge(
                torch.cat([d["boxes"] for d in dets]), torch.cat([d["scores"] for d in dets]),
                torch.cat([d["labels"] for d in dets]), nms_threshold=f.nms_threshold,
                vote_threshold=f.vote_threshold, scoring=f.scoring,
                max_detections=f.max_detections)
        # Agreement counts each transform's own final detections, also under raw pooling.
        finals = [_nms(self.model, d) for d in dets] if f.pooled == "raw" else dets
        votes, spread = transform_agreement(boxes, labels, [(d["boxes"], d["labels"])
                                                            for d in finals])
        return {"boxes": boxes, "scores": scores, "labels": labels, "votes": votes,
                "spread": spread}


@contextmanager
def _raw_detections(model: GeneralizedRCNN, cap: int, enabled: bool) -> Iterator[None]:
    """The detector's own postprocessing minus its NMS and top-k: the raw, score-filtered
    per-class boxes (at most ``cap``, best first), as Detectron pools them for box TTA.

    torchvision's ``postprocess_detections`` decodes, clips, drops the background and
    low scores, then runs NMS and keeps ``detections_per_img``; an NMS threshold of 1.0
    suppresses nothing (IoU is never > 1) and still sorts by score.
    """
    heads = model.roi_heads
    saved = (heads.nms_thresh, heads.detections_per_img)
    if enabled:
        heads.nms_thresh, heads.detections_per_img = 1.0, cap
    try:
        yield
    finally:
        heads.nms_thresh, heads.detections_per_img = saved


def _nms(model: GeneralizedRCNN, det: dict[str, Tensor]) -> dict[str, Tensor]:
    """What the detector itself would have returned from a raw set: per-class NMS, top-k."""
    heads = model.roi_heads
    keep = batched_nms(det["boxes"], det["scores"], det["labels"], heads.nms_thresh)
    keep = keep[: heads.detections_per_img]
    return {k: v[keep] for k, v in det.items()}
