"""Where an image lands in an exported model's input, and the way back.

Ultralytics' ``LetterBox`` (``ultralytics/data/augment.py``), which its predictor runs
before an exported model: scale the image by ``r = min(th / h, tw / w)`` to
``(round(h r), round(w r))`` with OpenCV's bilinear interpolation on 8 bits
(:mod:`distill.teachers.cv_resize`), then pad it, centred, with grey 114 to the input
size: to the fixed input, or for a dynamic input to the smallest multiple of the stride
(``auto=True``). RT-DETR's predictor stretches the image to the
input instead (``scaleFill=True``: one factor per axis, no padding). The image here is
RGB in [0, 1], as Ultralytics feeds its models after ``/ 255``.

A test-time transform sets the target: its scale is the longer side (the card's sizes
for these models are the input's longer side), so the identity pass is exactly the
model's own preprocessing. On a fixed input a down-scaled pass is letterboxed (or
stretched) into a smaller target centred in the input; an up-scaled one does not fit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from distill.teachers.cv_resize import cv_linear

PAD_VALUE = 114 / 255  # Ultralytics' letterbox grey, on the [0, 1] scale


@dataclass(frozen=True)
class Placement:
    """An image of ``size`` (h, w) scaled by (``rx``, ``ry``) to ``scaled`` (h, w) and
    put at (``left``, ``top``) of a ``canvas`` (h, w)."""

    size: tuple[int, int]
    scaled: tuple[int, int]
    canvas: tuple[int, int]
    left: int
    top: int

    @property
    def rx(self) -> float:
        """Horizontal scale factor."""
        return self.scaled[1] / self.size[1]

    @property
    def ry(self) -> float:
        """Vertical scale factor."""
        return self.scaled[0] / self.size[0]

    def apply(self, image: Tensor) -> Tensor:
        """The (3, H, W) image resized and padded onto the canvas."""
        out = image
        if self.scaled != self.size:  # as LetterBox: cv2.resize(INTER_LINEAR) on 8 bits
            out = cv_linear(image, self.scaled)
        if self.scaled == self.canvas:
            return out
        canvas = torch.full((image.shape[0], *self.canvas), PAD_VALUE, dtype=out.dtype,
                            device=out.device)
        canvas[:, self.top:self.top + self.scaled[0], self.left:self.left + self.scaled[1]] = out
        return canvas

    def points_to_image(self, xy: Tensor, clip: bool = True) -> Tensor:
        """(..., 2) canvas points back to the image (clipped to it unless told not to)."""
        x = (xy[..., 0] - self.left) / self.rx
        y = (xy[..., 1] - self.top) / self.ry
        if clip:
            x, y = x.clamp(0, self.size[1]), y.clamp(0, self.size[0])
        return torch.stack([x, y], dim=-1)

    def boxes_to_image(self, boxes: Tensor) -> Tensor:
        """(N, 4) xyxy canvas boxes back to the image, not clipped: clipping changes the
        overlaps the model's NMS saw (Ultralytics clips after it), so the ensemble clips
        only its fused boxes."""
        return self.points_to_image(boxes.reshape(-1, 2, 2), clip=False).reshape(-1, 4)


def target_size(scale: int, base: int, fixed: tuple[int, int] | None, stride: int
                ) -> tuple[float, float]:
    """(th, tw) a pass at ``scale`` aims for: the fixed input times ``scale / base``, or
    for a dynamic input a square of ``scale`` rounded up to the stride (``check_imgsz``)."""
    if fixed is not None:
        return fixed[0] * scale / base, fixed[1] * scale / base
    side = math.ceil(scale / stride) * stride
    return float(side), float(side)


def letterbox(size: tuple[int, int], target: tuple[float, float],
              fixed: tuple[int, int] | None, stride: int) -> Placement:
    """Ultralytics' ``LetterBox(target, auto=fixed is None, stride=stride)``."""
    h, w = size
    r = min(target[0] / h, target[1] / w)
    scaled = (max(1, round(h * r)), max(1, round(w * r)))
    if fixed is not None:
        canvas = fixed
    else:  # auto: pad only up to the next multiple of the stride
        canvas = (scaled[0] + int(target[0] - scaled[0]) % stride,
                  scaled[1] + int(target[1] - scaled[1]) % stride)
    return Placement(size, scaled, canvas, _half(canvas[1] - scaled[1]),
                     _half(canvas[0] - scaled[0]))


def stretch(size: tuple[int, int], target: tuple[float, float],
            fixed: tuple[int, int] | None) -> Placement:
    """RT-DETR's ``LetterBox(target, scaleFill=True)``: the image stretched to the target,
    centred in a fixed input when the target is smaller."""
    scaled = (max(1, round(target[0])), max(1, round(target[1])))
    canvas = fixed if fixed is not None else scaled
    return Placement(size, scaled, canvas, _half(canvas[1] - scaled[1]),
                     _half(canvas[0] - scaled[0]))


def _half(pad: int) -> int:
    """The left (top) part of a centred pad, rounded as ``LetterBox`` does."""
    return round(pad / 2 - 0.1)
