"""Multi-transform box detection: the whole detector per transform, then fusion.

Every transform runs the full detector; its boxes are mapped back to the
original image (un-scaled by the detector's own postprocessing, then
un-mirrored), all transforms' detections are pooled, and the pool is fused
per image: per-class NMS + box voting (Detectron's ``BBOX_VOTE``), or
weighted boxes fusion from ``ensemble-boxes``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

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
        votes, spread = transform_agreement(boxes, labels, [(d["boxes"], d["labels"])
                                                            for d in dets])
        return {"boxes": boxes, "scores": scores, "labels": labels, "votes": votes,
                "spread": spread}
