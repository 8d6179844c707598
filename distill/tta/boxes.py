"""Multi-transform detection: the whole detector per transform, then fusion.

Written against the teacher interface (:mod:`distill.teachers.interface`), so it runs
any family's detector. Every transform runs the full detector on the (mirrored) images
at its size; the detector maps its boxes back to the images' size, and this module
un-mirrors them (and for keypoint detectors the keypoints, left and right swapped). All
transforms' detections are pooled, and the pool is fused per image: per-class NMS + box
voting (Detectron's ``BBOX_VOTE``), or weighted boxes fusion from ``ensemble-boxes``.
The pool holds either each transform's final detections (``pooling="nms"``) or, as
Detectron pools them, its raw candidates before the detector's own NMS and top-k
(``pooling="raw"``), so that every survivor is voted against every pooled box of every
transform. A detector with regressed keypoints (YOLO pose) gets each fused instance's
keypoints fused from the matching transforms (:mod:`distill.fusion.keypoints`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.ops import clip_boxes_to_image

from distill.errors import ConfigError
from distill.fusion import vote_merge, wbf_merge
from distill.fusion.agreement import transform_agreement
from distill.fusion.keypoints import fuse_keypoints
from distill.interrupt import cancel_point
from distill.options import FusionParams
from distill.score_floor import ScoreFloor
from distill.teachers.interface import Detections, Detector
from distill.teachers.rcnn import as_detector
from distill.tta.transforms import Transform


class BoxTTA:
    """Wraps a detector (or a torchvision R-CNN) with the model's own call signature:
    ``tta(images) -> [{"boxes", "labels", "scores", "votes", "spread"}]`` in original
    coordinates, plus ``keypoints``, ``keypoints_scores`` and ``keypoints_spread`` for a
    detector that regresses keypoints (``flip_perm`` swaps its left/right keypoints)."""

    def __init__(self, model: GeneralizedRCNN | Detector, transforms: Sequence[Transform],
                 fusion: FusionParams | None = None,
                 flip_perm: Sequence[int] | None = None) -> None:
        if not transforms:
            raise ConfigError("box TTA needs at least one transform")
        self.detector = as_detector(model)
        self.transforms = list(transforms)
        self.fusion = fusion or FusionParams()
        self.flip_perm = None if flip_perm is None else torch.as_tensor(list(flip_perm))

    @torch.inference_mode()
    def __call__(self, images: list[Tensor], *, floor: ScoreFloor | None = None
                 ) -> list[dict[str, Tensor]]:
        """Fused detections per image. ``floor`` is taken, as every ensemble takes it, and
        left unused: regressed keypoints come with each pass's detections, so skipping
        a detection would save no work (the info block leaves ``keypoint_floor`` out)."""
        original = [(int(i.shape[-2]), int(i.shape[-1])) for i in images]
        per_transform = [self._detect(t, images, original) for t in self.transforms]
        results = []
        for i, size in enumerate(original):
            dets = [d[i] for d in per_transform]
            results.append(self._fuse(dets, size))
        return results

    def _detect(self, t: Transform, images: list[Tensor], original: list[tuple[int, int]]
                ) -> list[Detections]:
        """Full detector at one transform, detections back in the original frame."""
        cancel_point()  # a cancelled job stops here, between passes
        cap = self.fusion.raw_pool_cap if self.fusion.pooled == "raw" else None
        batch = [img.flip(-1) for img in images] if t.hflip else images
        detections = self.detector.detect(batch, t.scale, t.max_size, raw_cap=cap)
        for det, size in zip(detections, original, strict=True):
            det["boxes"] = t.boxes_to_original(det["boxes"], size)
            if "keypoints" in det:
                perm = self._flip_perm(det["keypoints"].shape[1])
                det["keypoints"], det["keypoints_scores"] = t.keypoints_to_original(
                    det["keypoints"], det["keypoints_scores"], size, perm.to(det["boxes"].device))
        return detections

    def _flip_perm(self, k: int) -> Tensor:
        if self.flip_perm is None or len(self.flip_perm) != k:
            raise ConfigError(f"the detector returns {k} keypoints; the ensemble needs their "
                              "left/right permutation (the card's flip map)")
        return self.flip_perm

    def _fuse(self, dets: list[Detections], size: tuple[int, int]) -> dict[str, Tensor]:
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
        finals = [self.detector.final(d) for d in dets] if f.pooled == "raw" else dets
        votes, spread = transform_agreement(boxes, labels, [(d["boxes"], d["labels"])
                                                            for d in finals])
        # A detector may return boxes past the image's edges (YOLO's NMS sees them so);
        # the pseudo-labels end at the edges. torchvision's R-CNNs clip their own already.
        out = {"boxes": clip_boxes_to_image(boxes, size), "scores": scores, "labels": labels,
               "votes": votes, "spread": spread}
        if "keypoints" in dets[0]:
            kps, kp_scores, kp_spread = fuse_keypoints(boxes, labels, finals)
            out.update(keypoints=kps, keypoints_scores=kp_scores, keypoints_spread=kp_spread)
        return out


def _nms(model: GeneralizedRCNN, det: Detections) -> Detections:
    """What a torchvision R-CNN itself would have returned from a raw set (its NMS, top-k)."""
    return as_detector(model).final(det)
