"""torchvision's R-CNNs (and ``tiny``) behind the teacher interface.

:class:`RCNNDetector` runs the detector's own pieces at one test size: its
resize/normalise transform set to that size, backbone, RPN, RoI heads, and its own
postprocessing back to the input images' sizes. Raw detections are the RoI heads'
postprocessing minus its NMS and top-k: the score-filtered per-class regressed boxes,
as Detectron pools them. Keypoint R-CNN keeps its shared-box heatmap ensemble
(:mod:`distill.tta.keypoints`), which :func:`distill.tta.predictor.build_predictor`
picks for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.ops import batched_nms

from distill.card import ModelCard, Task
from distill.models.layout import place
from distill.models.zoo import build_from_card
from distill.options import ARCH_TASKS
from distill.teachers.interface import Detections, Detector, ImportRequest
from distill.tta.transforms import Transform


class RCNNDetector:
    """A torchvision ``GeneralizedRCNN`` as a :class:`Detector`."""

    max_scale: int | None = None

    def __init__(self, model: GeneralizedRCNN) -> None:
        self.model = model.eval()

    def to(self, device: torch.device) -> RCNNDetector:
        """The detector on ``device`` (the module moves in place; on a CPU its backbone and
        RPN head go channels-last too, the same values up to float rounding)."""
        place(self.model, device)
        return self

    @torch.inference_mode()
    def detect(self, images: list[Tensor], scale: int, max_size: int, *,
               raw_cap: int | None) -> list[Detections]:
        """Full detector at one size, boxes in the given images' frame (see the interface)."""
        model = self.model
        original = [(int(i.shape[-2]), int(i.shape[-1])) for i in images]
        rcnn = Transform(scale, max_size).rcnn_transform(model.transform)
        batch, _ = rcnn(images)
        features = model.backbone(batch.tensors)
        proposals, _ = model.rpn(batch, features)
        with _raw_detections(model, raw_cap):
            detections, _ = model.roi_heads(features, proposals, batch.image_sizes)
        return rcnn.postprocess(detections, batch.image_sizes, original)

    def final(self, detections: Detections) -> Detections:
        """What the detector itself would have returned from a raw set: per-class NMS, top-k."""
        heads = self.model.roi_heads
        keep = batched_nms(detections["boxes"], detections["scores"], detections["labels"],
                           heads.nms_thresh)
        keep = keep[: heads.detections_per_img]
        return {k: v[keep] for k, v in detections.items()}


@contextmanager
def _raw_detections(model: GeneralizedRCNN, cap: int | None) -> Iterator[None]:
    """The detector's own postprocessing minus its NMS and top-k: the raw, score-filtered
    per-class boxes (at most ``cap``, best first), as Detectron pools them for box TTA.

    torchvision's ``postprocess_detections`` decodes, clips, drops the background and
    low scores, then runs NMS and keeps ``detections_per_img``; an NMS threshold of 1.0
    suppresses nothing (IoU is never > 1) and still sorts by score.
    """
    heads = model.roi_heads
    saved = (heads.nms_thresh, heads.detections_per_img)
    if cap is not None:
        heads.nms_thresh, heads.detections_per_img = 1.0, cap
    try:
        yield
    finally:
        heads.nms_thresh, heads.detections_per_img = saved


def as_detector(model: GeneralizedRCNN | Detector) -> Detector:
    """A detector as it is; a torchvision R-CNN module wrapped in :class:`RCNNDetector`."""
    if isinstance(model, GeneralizedRCNN):
        return RCNNDetector(model)
    return model


class TorchvisionFamily:
    """The model zoo's architectures: ``tiny`` and torchvision's R-CNNs."""

    name = "torchvision"

    def architectures(self) -> dict[str, Task | None]:
        """The zoo's architectures (``distill.options.ARCH_TASKS``)."""
        return dict(ARCH_TASKS)

    def load(self, card: ModelCard, tensors: dict[str, Tensor]) -> RCNNDetector:
        """Rebuilds the card's detector and loads its state dict."""
        return RCNNDetector(build_from_card(card, tensors))

    def import_teacher(self, request: ImportRequest) -> tuple[ModelCard, dict[str, Any]]:
        """torchvision / reference-script / distill weights (:mod:`.rcnn_import`)."""
        from distill.teachers.rcnn_import import import_teacher

        r = request
        return import_teacher(r.arch, r.weights, r.categories, stats=r.stats,
                              min_size=r.min_size, max_size=r.max_size, name=r.name,
                              arch_options=r.arch_options, stats_source=r.stats_source,
                              labeled_json=r.labeled_json, labels=r.labels)


FAMILY = TorchvisionFamily()
