"""RoIAlign as a sparse matrix: training's costliest operator on a CPU, made cheap.

torchvision's CPU ``roi_align`` interpolates every (RoI, channel, bin, sample) one
float at a time on standard-layout features (copying channels-last ones first), and
its backward scatters four bilinear terms per sample into the feature gradient the
same way. For the tiny model the pair took about a sixth of a training iteration,
more for a keypoint one with its second pooler (``benchmarks/train_speed.py --profile``).

The operator is linear in the features: ``out = S @ F`` with ``F`` the features as a
(pixels, channels) matrix (free for channels-last features) and ``S`` a sparse matrix
that holds, for every output bin, the bilinear weights of its sampling points divided
by their count: ``4 * ratio**2`` (pixel, weight) pairs per bin, computed with
torchvision's rules. The forward pass is one ``embedding_bag`` over those pairs (a
weighted sum of feature rows per bin, vectorized over the channels); the gradient is
``S.T @ grad``, one sparse-dense product with ``S.T`` built as a CSR matrix (the pairs
stably sorted by pixel) in the backward pass.

Values and gradients agree with torchvision's to float rounding: the same terms are
summed in another order (``tests/test_roi_align.py``; in float64 a short training is
the same to 1e-9, ``tests/test_training_speedups.py``). Without gradients (inference)
torchvision's operator runs alone: teachers, evaluation and the service are not
touched by this module.
"""

from __future__ import annotations

import warnings
from typing import Any

import torch
import torchvision
from torch import Tensor
from torch.nn.functional import embedding_bag
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


def _bin_samples(shape: torch.Size, rois: Tensor, output_size: tuple[int, int],
                 spatial_scale: float, sampling_ratio: int, aligned: bool
                 ) -> tuple[Tensor, Tensor]:
    """The rows of ``S``: for every output bin (RoI, y, x) in that order, the pixel
    indices (image, y, x of channels-last features) and weights of its
    ``4 * sampling_ratio**2`` bilinear terms, as two (bins, terms) tensors."""
    _, _, height, width = shape
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
    image = rois[:, 0].long()[:, None, None, None, None] * (height * width)
    count = float(sampling_ratio * sampling_ratio)
    pixels, weights = [], []
    for yi, wy in ((y_lo, wy_lo), (y_hi, wy_hi)):
        for xi, wx in ((x_lo, wx_lo), (x_hi, wx_hi)):
            # (K, ph, sy, 1, 1) and (K, 1, 1, pw, sx) -> (K, ph, sy, pw, sx)
            pixels.append(image + yi[:, :, :, None, None] * width + xi[:, None, None, :, :])
            weights.append(wy[:, :, :, None, None] * wx[:, None, None, :, :] / count)
    terms = 4 * sampling_ratio * sampling_ratio
    # (K, ph, sy, pw, sx, 4) -> (K, ph, pw, sy, sx, 4): one row of terms per bin
    pix = torch.stack(pixels, -1).permute(0, 1, 3, 2, 4, 5).reshape(-1, terms)
    wgt = torch.stack(weights, -1).permute(0, 1, 3, 2, 4, 5).reshape(-1, terms)
    return pix, wgt


def _transposed(pix: Tensor, wgt: Tensor, pixels: int) -> Tensor:
    """``S.T`` as a (pixels, bins) CSR matrix, from the rows of ``S``."""
    flat = pix.reshape(-1)
    # A stable sort keeps each pixel's bins in order; int32 keys sort faster.
    keys = flat.int() if pixels < 2 ** 31 else flat
    order = torch.sort(keys, stable=True).indices
    crow = torch.zeros(pixels + 1, dtype=torch.long)
    torch.cumsum(torch.bincount(flat, minlength=pixels), 0, out=crow[1:])
    with warnings.catch_warnings():  # "CSR support is in beta": products are all we use
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_csr_tensor(crow, order // pix.shape[1], wgt.reshape(-1)[order],
                                       size=(pixels, pix.shape[0]), check_invariants=False)


class _RoIAlign(torch.autograd.Function):
    """``S @ F`` forward (``embedding_bag``) and ``S.T @ grad`` backward."""

    @staticmethod
    def forward(ctx: Any, features: Tensor, rois: Tensor, output_size: tuple[int, int],
                spatial_scale: float, sampling_ratio: int, aligned: bool) -> Tensor:
        n, c, h, w = features.shape
        pix, wgt = _bin_samples(features.shape, rois.detach(), output_size, spatial_scale,
                                sampling_ratio, aligned)
        wgt = wgt.to(features.dtype)
        ctx.save_for_backward(pix, wgt)
        ctx.features_shape = features.shape
        # (pixels, channels): a view of channels-last features, a copy of others
        matrix = features.permute(0, 2, 3, 1).reshape(n * h * w, c)
        out = embedding_bag(pix, matrix, per_sample_weights=wgt, mode="sum")
        # Standard layout, as torchvision returns: the heads' views and in-place ops need
        # it (a copy of K x C x ph x pw floats, small beside the features).
        return out.view(rois.shape[0], *output_size, c).permute(0, 3, 1, 2).contiguous()

    @staticmethod
    def backward(ctx: Any, *grads: Tensor) -> tuple[Tensor | None, ...]:
        n, c, h, w = ctx.features_shape
        pix, wgt = ctx.saved_tensors
        grad = grads[0].permute(0, 2, 3, 1).reshape(-1, c)  # (bins, channels)
        flat = _transposed(pix, wgt, n * h * w) @ grad  # (pixels, channels)
        # Channels-last strides: a free view, which autograd accepts for any layout.
        return flat.view(n, h, w, c).permute(0, 3, 1, 2), None, None, None, None, None


def _float32(tensor: Tensor) -> Tensor:
    """Autocast's bfloat16 or float16 tensors (training with ``--precision bf16``) as
    float32: RoIAlign samples float32 features, as torchvision's autocast rule does."""
    return tensor.float() if tensor.dtype in (torch.bfloat16, torch.float16) else tensor


def roi_align(features: Tensor, rois: Tensor, output_size: tuple[int, int],
              spatial_scale: float, sampling_ratio: int, aligned: bool = False) -> Tensor:
    """torchvision's ``roi_align`` on (K, 5) RoIs, as a sparse matrix when the
    features need a gradient on the CPU (adaptive sampling, ``sampling_ratio <= 0``,
    and other devices keep torchvision's own)."""
    features, rois = _float32(features), _float32(rois)
    if (not features.requires_grad or features.device.type != "cpu" or sampling_ratio <= 0
            or rois.numel() == 0 or not torch.is_grad_enabled()):
        return tv_roi_align(features, rois, output_size, spatial_scale, sampling_ratio,
                            aligned)
    out: Tensor = _RoIAlign.apply(features, rois, output_size, spatial_scale,
                                  sampling_ratio, aligned)
    return out


class SparseMultiScaleRoIAlign(MultiScaleRoIAlign):
    """torchvision's multi-scale pooler (same levels, same values to float rounding)
    over :func:`roi_align`.

    No weights: a model built with it loads and saves the same state as with
    torchvision's. Tracing (ONNX export) takes torchvision's own path.
    """

    def forward(self, x: dict[str, Tensor], boxes: list[Tensor],
                image_shapes: list[tuple[int, int]]) -> Tensor:
        if torchvision._is_tracing():
            out: Tensor = super().forward(x, boxes, image_shapes)
            return out
        features = [_float32(f) for f in _filter_input(x, self.featmap_names)]
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
