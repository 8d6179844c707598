"""``build_predictor``: the one entry point to multi-transform inference.

It takes any teacher family's detector (:mod:`distill.teachers.interface`; a torchvision
R-CNN module is wrapped), picks the shared-box heatmap path for a Keypoint R-CNN and
the whole-detector-per-transform path (pooling, fusion, and keypoint fusion for
regressed keypoints) for everything else, and handles the device; a plain model is the
``identity`` preset (for a box teacher with ``nms`` pooling: raw pooling votes even one
pass's boxes, as Detectron's BBOX_VOTE). ``plain_predictor`` puts the model alone (its
own test size and NMS) behind the same interface, for evaluation's single-pass baseline.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, Protocol

import torch
from torch import Tensor
from torchvision.models.detection import KeypointRCNN
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.ops import clip_boxes_to_image

from distill.card import ModelCard
from distill.errors import ConfigError
from distill.fusion.keypoints import KEYPOINT_FUSION
from distill.models.layout import place
from distill.options import KEYPOINT_CAP_FACTOR, KEYPOINT_CAP_MIN, InferenceOptions
from distill.score_floor import ScoreFloor
from distill.teachers.interface import Detector
from distill.teachers.rcnn import RCNNDetector, as_detector
from distill.tta.boxes import BoxTTA
from distill.tta.keypoints import KeypointTTA
from distill.tta.transforms import Transform, parse_preset

log = logging.getLogger(__name__)


def resolve_device(device: str) -> torch.device:
    """``cpu``, ``cuda``, ``cuda:N`` or ``auto``; a clear error when CUDA is absent."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}; use cpu, cuda, cuda:N or auto") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available here")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"device {device!r} is not supported; use cpu or cuda")
    return dev


class Ensemble(Protocol):
    """What a :class:`Predictor` wraps: images in, detections out, and the run's keypoint
    floor as an argument (:mod:`distill.score_floor`; None: none). Only the heatmap
    keypoint ensemble uses the floor; the other paths take it and leave it unused."""

    def __call__(self, images: list[Tensor], *, floor: ScoreFloor | None = None
                 ) -> list[dict[str, Tensor]]: ...


@dataclass
class Predictor:
    """Images in (any device, (3, H, W) floats in [0, 1]), CPU detections out.

    Keeps the wrapped detector's call signature, so evaluation code can use a
    plain model and a multi-transform ensemble interchangeably.
    """

    wrapped: Ensemble
    transforms: list[Transform]
    device: torch.device
    half: bool = False
    # Keypoint teachers without heatmaps: how their keypoints are fused (the info block).
    keypoint_fusion: str | None = None

    def __call__(self, images: list[Tensor], *, floor: ScoreFloor | None = None
                 ) -> list[dict[str, Tensor]]:
        """Detections per image; ``floor`` goes to the wrapped ensemble (see
        :class:`Ensemble`)."""
        return self._run(lambda on: self.wrapped(on, floor=floor), images)

    def on_boxes(self, images: list[Tensor], boxes: list[Tensor]
                 ) -> list[dict[str, Tensor]] | None:
        """Keypoints placed in given boxes (original coordinates), CPU outputs as
        :meth:`__call__`'s; None when the ensemble cannot take boxes (it detects only:
        box teachers, and keypoint teachers without a keypoint head, such as ONNX ones)."""
        on_boxes = getattr(self.wrapped, "on_boxes", None)
        if on_boxes is None:
            return None
        return self._run(lambda on: on_boxes(on, [b.to(self.device) for b in boxes]), images)

    def _run(self, ensemble: Callable[[list[Tensor]], list[dict[str, Tensor]]],
             images: list[Tensor]) -> list[dict[str, Tensor]]:
        """``ensemble`` on the images moved to the device (half precision on a GPU if
        asked), its outputs back on the CPU in float32."""
        if self.device.type == "cuda":
            # Page-locked host memory lets the copies overlap with the GPU's work.
            images = [img.pin_memory() if img.device.type == "cpu" else img for img in images]
        images = [img.to(self.device, non_blocking=True) for img in images]
        with torch.inference_mode(), torch.autocast(
                device_type=self.device.type, dtype=torch.float16,
                enabled=self.half and self.device.type == "cuda"):
            outputs = ensemble(images)
        return [{k: v.float().cpu() if v.is_floating_point() else v.cpu()
                 for k, v in out.items()} for out in outputs]


def build_predictor(model: GeneralizedRCNN | Detector, card: ModelCard,
                    options: InferenceOptions | None = None) -> Predictor:
    """Wraps ``model`` (built from ``card``) for multi-transform inference.

    ``options.tta`` is a preset name or custom list (see :func:`parse_preset`),
    relative to the card's min/max sizes; ``options.fusion`` applies to box
    tasks, ``combine`` and ``size_dependent`` to Keypoint R-CNN. The default
    options run the ``standard`` preset; pass ``InferenceOptions(tta="identity")``
    (with ``FusionParams(pooling="nms")`` for a box teacher) for the plain model.
    A detector with a largest input size runs only the transforms that fit it. A
    torchvision module is moved to the device in place, and on a CPU converted to
    channels-last in place (:func:`distill.models.layout.place`).
    """
    options = options or InferenceOptions()
    dev = resolve_device(options.device)
    detector = as_detector(model).to(dev)
    transforms = _runnable(parse_preset(options.tta, card.min_size, card.max_size), detector,
                           options.tta)
    wrapped: Ensemble
    keypoint_fusion = None
    if card.task == "keypoints" and isinstance(detector, RCNNDetector):
        if not isinstance(detector.model, KeypointRCNN):
            raise ConfigError(f"card says keypoints but the model is "
                              f"{type(detector.model).__name__}")
        wrapped = KeypointTTA(detector.model, transforms, card.flip_permutation(),
                              combine=options.combine, size_dependent=options.size_dependent,
                              max_instances=keypoint_cap(card, options.keypoint_cap),
                              area_threshold=options.size_dependent_area)
    else:
        flip_perm = card.flip_permutation() if card.task == "keypoints" else None
        wrapped = BoxTTA(detector, transforms, options.fusion, flip_perm=flip_perm)
        keypoint_fusion = KEYPOINT_FUSION if card.task == "keypoints" else None
    return Predictor(wrapped, transforms, dev, options.half, keypoint_fusion)


def _runnable(transforms: list[Transform], detector: Detector, spec: str) -> list[Transform]:
    """The transforms the detector can take: a fixed-size input has no room for up-scaled
    passes (it letterboxes down-scaled ones into its canvas), so those are left out."""
    if detector.max_scale is None:
        return transforms
    fit = [t for t in transforms if t.scale <= detector.max_scale]
    if not fit:
        raise ConfigError(f"TTA {spec!r}: every scale exceeds the model's fixed input size "
                          f"{detector.max_scale}; export it with a dynamic input size")
    if len(fit) < len(transforms):
        log.warning("TTA %r: %d up-scaled pass(es) left out, the model's input is fixed at %d",
                    spec, len(transforms) - len(fit), detector.max_scale)
    return fit


def plain_predictor(model: GeneralizedRCNN | Detector, card: ModelCard,
                    device: str = "cpu") -> Predictor:
    """The model alone, one pass at its own test size, behind the same interface
    (evaluation's single-pass baseline). A module is moved (and on a CPU converted to
    channels-last) in place, as :func:`build_predictor` does."""
    dev = resolve_device(device)
    transforms = parse_preset("identity", card.min_size, card.max_size)
    if isinstance(model, RCNNDetector):
        model = model.model  # the module's own call: its test size, NMS and keypoints
    if isinstance(model, GeneralizedRCNN):
        module = place(model, dev).eval()  # as RCNNDetector does

        def own(images: list[Tensor], *, floor: ScoreFloor | None = None
                ) -> list[dict[str, Tensor]]:
            return module(images)  # one pass: no keypoint ensemble to skip

        return Predictor(own, transforms, dev)
    detector = model.to(dev)

    def single(images: list[Tensor], *, floor: ScoreFloor | None = None
               ) -> list[dict[str, Tensor]]:
        outputs = detector.detect(images, card.min_size, card.max_size, raw_cap=None)
        for out, image in zip(outputs, images, strict=True):  # as the ensemble clips
            out["boxes"] = clip_boxes_to_image(out["boxes"], tuple(image.shape[-2:]))
        return outputs

    return Predictor(single, transforms, dev)


def keypoint_cap(card: ModelCard, setting: int | Literal["auto"]) -> int | None:
    """Detections per image that get the keypoint ensemble (None: all).

    ``auto`` scales with the labeled instances per image of the keypoint category;
    a card without labeled statistics (explicit thresholds only) gets no cap.
    """
    if setting != "auto":
        return setting or None
    mean = card.keypoint_instances_per_image
    return None if mean is None else max(KEYPOINT_CAP_MIN, math.ceil(KEYPOINT_CAP_FACTOR * mean))
