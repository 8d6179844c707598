"""RoIAlign whose backward pass is one sparse matrix product: training's costliest op on a CPU.

torchvision's CPU ``roi_align`` backward walks every (RoI, channel, bin, sample) and
scatters four bilinear terms into the feature gradient one float at a time; for the
tiny model it took 13 % of a box iteration and more of a keypoint one (two poolers),
about six times its forward pass (``benchmarks/train_speed.py --profile``).

The operator is linear in the features: ``out = S @ F`` with ``F`` the features as a
(pixels, channels) matrix and ``S`` a sparse matrix holding, for every output bin, the
bilinear weights of its sampling points divided by their count. Its gradient is
``S.T @ grad``: built here once per call as a CSR matrix (the sampling points sorted
by pixel) and multiplied in one sparse-dense product, about half the time of
torchvision's loop at the tiny model's shapes.

The forward values are torchvision's own, bit for bit (its kernel runs unchanged);
only the gradient is summed in another order, so it agrees to float rounding
(``tests/test_roi_align.py``). Without gradients (inference) torchvision's operator
runs alone: teachers, evaluation and the service are not touched by this module.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torchvision
from torch import Tensor
from torchvision.ops import MultiScaleRoIAlign
from torchvision.ops import roi_align as tv_roi_align
from torchvision.ops.poolers import _convert_to_roi_format, _filter_input, _setup_scales


def _axis(coord: Tensor, size: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Low and high pixel indices and weights along one axis, torchvision's rules:
    a sample beyond [-1, size] contributes nothing, one in [-1, 0] reads pixel 0, one
    at or past the last pixel reads the last pixel."""
    valid = (coord >= -1.0) & (coord <= size)
    coord = coord.clamp(min=0.0)
    low = coord.floor().long()
    last = low >= size - 1
    low = torch.where(last, torch.full_like(low, size - 1), low)
    high = torch.where(last, low, low + 1)
    coord = torch.where(last, low.to(coord.dtype), coord)
    frac = coord - low
    return low, high, (1.0 - frac) * valid, frac * valid


def _transposed_weights(shape: torch.Size, rois: Tensor, output_size: tuple[int, int],
                        spatial_scale: float, sampling_ratio: int, aligned: bool) -> Tensor:
    """``S.T`` as a (pixels, bins) CSR matrix: pixels are the (image, y, x) rows of the
    features in channels-last order, bins the (RoI, y, x) rows of the output."""
    n, _, height, width = shape
    ph, pw = output_size
    offset = 0.5 if aligned else 0.0
    x1, y1, x2, y2 = (rois[:, 1:] * spatial_scale - offset).unbind(1)
    roi_w, roi_h = x2 - x1, y2 - y1
    if not aligned:  # torchvision forces malformed RoIs to 1x1
        roi_w, roi_h = roi_w.clamp(min=1.0), roi_h.clamp(min=1.0)
    offsets = (torch.arange(sampling_ratio, dtype=rois.dtype) + 0.5) / sampling_ratio

    def samples(start: Tensor, length: Tensor, bins: int) -> Tensor:
        """(K, bins, sampling_ratio) coordinates along one axis, as torchvision computes
        them: start + bin * bin size + offset * bin size."""
        size = (length / bins)[:, None, None]
        return (start[:, None, None] + torch.arange(bins, dtype=rois.dtype)[None, :, None]
                * size + offsets[None, None, :] * size)

    y_lo, y_hi, wy_lo, wy_hi = _axis(samples(y1, roi_h, ph), height)
    x_lo, x_hi, wx_lo, wx_hi = _axis(samples(x1, roi_w, pw), width)
    k = rois.shape[0]
    image = rois[:, 0].long()[:, None, None, None, None] * (height * width)
    count = float(sampling_ratio * sampling_ratio)
    pixels, weights = [], []
    for yi, wy in ((y_lo, wy_lo), (y_hi, wy_hi)):
        for xi, wx in ((x_lo, wx_lo), (x_hi, wx_hi)):
            # (K, ph, sy, 1, 1) and (K, 1, 1, pw, sx) -> (K, ph, sy, pw, sx)
            pixels.append(image + yi[:, :, :, None, None] * width + xi[:, None, None, :, :])
            weights.append(wy[:, :, :, None, None] * wx[:, None, None, :, :] / count)
    pix = torch.stack(pixels, -1).permute(0, 1, 3, 2, 4, 5).reshape(-1)  # K,ph,pw,sy,sx,4
    wgt = torch.stack(weights, -1).permute(0, 1, 3, 2, 4, 5).reshape(-1)
    per_bin = 4 * sampling_ratio * sampling_ratio
    order = torch.argsort(pix)
    counts = torch.bincount(pix, minlength=n * height * width)
    crow = torch.zeros(n * height * width + 1, dtype=torch.long)
    torch.cumsum(counts, 0, out=crow[1:])
    with warnings.catch_warnings():  # "CSR support is in beta": products are all we use
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, order // per_bin, wgt[order],
                                       size=(n * height * width, k * ph * pw),
                                       check_invariants=False)


class _RoIAlign(torch.autograd.Function):
    """torchvision's forward; the backward as one product with ``S.T``."""

    @staticmethod
    def forward(ctx: Any, features: Tensor, rois: Tensor, output_size: tuple[int, int],
                spatial_scale: float, sampling_ratio: int, aligned: bool) -> Tensor:
        ctx.weights_t = _transposed_weights(features.shape, rois.detach(), output_size,
                                            spatial_scale, sampling_ratio, aligned)
        ctx.features_shape = features.shape
        return tv_roi_align(features, rois, output_size, spatial_scale, sampling_ratio,
                            aligned)

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor | None, ...]:
        n, c, h, w = ctx.features_shape
        grad = grads[0].permute(0, 2, 3, 1).reshape(-1, c)  # (bins, channels)
        flat = ctx.weights_t @ grad  # (pixels, channels)
        # Channels-last strides: a free view, which autograd accepts for any layout.
        return flat.view(n, h, w, c).permute(0, 3, 1, 2), None, None, None, None, None


def roi_align(features: Tensor, rois: Tensor, output_size: tuple[int, int],
              spatial_scale: float, sampling_ratio: int, aligned: bool = False) -> Tensor:
    """torchvision's ``roi_align`` on (K, 5) RoIs, with the sparse backward when the
    features need a gradient on the CPU (adaptive sampling, ``sampling_ratio <= 0``,
    and other devices keep torchvision's own)."""
    if (not features.requires_grad or features.device.type != "cpu" or sampling_ratio <= 0
            or rois.numel() == 0 or not torch.is_grad_enabled()):
        return tv_roi_align(features, rois, output_size, spatial_scale, sampling_ratio,
                            aligned)
    out: Tensor = _RoIAlign.apply(features, rois, output_size, spatial_scale,
                                  sampling_ratio, aligned)
    return out


class SparseGradMultiScaleRoIAlign(MultiScaleRoIAlign):
    """torchvision's multi-scale pooler (same levels, same values) over :func:`roi_align`.

    No weights: a model built with it loads and saves the same state as with
    torchvision's. Tracing (ONNX export) takes torchvision's own path.
    """

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor],
                image_shapes: list[tuple[int, int]]) -> Tensor:
        if torchvision._is_tracing():
            out: Tensor = super().forward(x, boxes, image_shapes)
            return out
        features = _filter_input(x, self.featmap_names)
        state: Any = self  # torchvision's attributes are untyped until first set
        if state.scales is None or state.map_levels is None:
            state.scales, state.map_levels = _setup_scales(
                features, image_shapes, self.canonical_scale, self.canonical_level)
        scales: list[float] = state.scales
        mapper: Any = state.map_levels
        rois = _convert_to_roi_format(boxes)
        size = (int(self.output_size[0]), int(self.output_size[1]))
        if len(features) == 1:
            return roi_align(features[0], rois, size, scales[0], self.sampling_ratio)
        levels = mapper(boxes)
        result = features[0].new_zeros((len(rois), features[0].shape[1], *size))
        for level, (feature, scale) in enumerate(zip(features, scales, strict=True)):
            index = torch.where(levels == level)[0]
            if index.numel():
                result[index] = roi_align(feature, rois[index], size, scale,
                                          self.sampling_ratio)
        return result
