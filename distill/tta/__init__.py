"""Multi-transform inference (test-time augmentation) for keypoint and box detectors.

``build_predictor`` is the one entry point: it picks the keypoint path
(shared boxes, heatmap averaging) or the box path (whole detector per
transform, union, fusion) from the card's task, and handles the device.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor
from torchvision.models.detection import KeypointRCNN
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

from distill.card import ModelCard
from distill.errors import ConfigError
from distill.tta.boxes import BoxTTA, Fusion, FusionParams
from distill.tta.keypoints import Combine, KeypointTTA
from distill.tta.transforms import PRESETS, Transform, parse_preset

__all__ = ["PRESETS", "BoxTTA", "Combine", "Fusion", "FusionParams", "KeypointTTA",
           "Predictor", "Transform", "build_predictor", "parse_preset", "resolve_device"]


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


@dataclass
class Predictor:
    """Images in (any device, (3, H, W) floats in [0, 1]), CPU detections out.

    Keeps the wrapped detector's call signature, so evaluation code can use a
    plain model and a multi-transform ensemble interchangeably.
    """

    wrapped: Callable[[list[Tensor]], list[dict[str, Tensor]]]
    transforms: list[Transform]
    device: torch.device
    half: bool = False

    def __call__(self, images: list[Tensor]) -> list[dict[str, Tensor]]:
        images = [img.to(self.device, non_blocking=True) for img in images]
        with torch.inference_mode(), torch.autocast(
                device_type=self.device.type, dtype=torch.float16,
                enabled=self.half and self.device.type == "cuda"):
            outputs = self.wrapped(images)
        return [{k: v.float().cpu() if v.is_floating_point() else v.cpu()
                 for k, v in out.items()} for out in outputs]


def build_predictor(model: GeneralizedRCNN, card: ModelCard, *, tta: str = "identity",
                    fusion: FusionParams | None = None, combine: Combine = "avg",
                    size_dependent: bool = False, device: str = "cpu",
                    half: bool = False) -> Predictor:
    """Wraps ``model`` (built from ``card``) for multi-transform inference.

    ``tta`` is a preset name or custom list (see :func:`parse_preset`),
    relative to the card's min/max sizes. ``fusion`` applies to box tasks,
    ``combine`` and ``size_dependent`` to keypoint tasks.
    """
    dev = resolve_device(device)
    model = model.to(dev).eval()
    transforms = parse_preset(tta, card.min_size, card.max_size)
    wrapped: Callable[[list[Tensor]], list[dict[str, Tensor]]]
    if card.task == "keypoints":
        if not isinstance(model, KeypointRCNN):
            raise ConfigError(f"card says keypoints but the model is {type(model).__name__}")
        wrapped = KeypointTTA(model, transforms, card.flip_permutation(), combine=combine,
                              size_dependent=size_dependent)
    else:
        wrapped = BoxTTA(model, transforms, fusion)
    return Predictor(wrapped, transforms, dev, half)
