"""Channels-last memory layout for a detector's dense part: faster convolutions on a CPU.

oneDNN's convolutions run without layout reorders when activations and weights are
channels-last (NHWC); for the tiny model that makes a training iteration's backbone
and RPN about a quarter faster on this project's CPU (``benchmarks/train_speed.py``,
numbers in docs/BENCHMARKS.md), and a keypoint teacher's inference about 15 % faster.
The trainer and the inference path (:class:`distill.teachers.rcnn.RCNNDetector`, the
single-pass evaluation) apply it through :func:`place`. Only the backbone (with its
FPN) and the RPN head are converted: the RoI heads reshape their outputs with
``view``, which needs the standard layout, and their inputs come standard from
RoIAlign anyway. The values are the same up to float rounding (another summation
order inside the convolutions).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

_CONVERTED = "_distill_channels_last"  # set on a converted model: one input hook, not two


def _to_channels_last(_module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The backbone's input batch in channels-last order (the transform builds NCHW)."""
    first: Tensor = args[0]
    return (first.contiguous(memory_format=torch.channels_last), *args[1:])


def use_channels_last(model: GeneralizedRCNN) -> GeneralizedRCNN:
    """Converts ``model``'s backbone and RPN head to channels-last, in place; returns it.

    Weights saved from it keep their values (``state_dict`` tensors are channels-last
    strided; loading them into a standard model copies them into its layout). A model
    converted already is left as it is."""
    if getattr(model, _CONVERTED, False):
        return model
    setattr(model, _CONVERTED, True)
    model.backbone.to(memory_format=torch.channels_last)
    model.rpn.head.to(memory_format=torch.channels_last)
    model.backbone.register_forward_pre_hook(_to_channels_last)
    return model


def place(model: GeneralizedRCNN, device: torch.device) -> GeneralizedRCNN:
    """Moves ``model`` to ``device`` in place, channels-last on a CPU (where it pays);
    returns it. The one place that decides the layout, for training and inference."""
    model.to(device)
    return use_channels_last(model) if device.type == "cpu" else model
