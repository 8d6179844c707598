"""OpenCV's ``cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)`` of an 8-bit image,
in torch: what Ultralytics' ``LetterBox`` runs before an exported YOLO or RT-DETR model.

An exported model is fed what its own predictor would feed it, so its boxes are the ones
its users see from Ultralytics. Torch's bilinear interpolation of the float image is the
same operator but not the same numbers: OpenCV works on the 8-bit values in fixed point
and rounds its result to 8 bits, and the difference moved a small YOLO's boxes by about
0.35 px (``shared/reviews/integrations.md``, 7). This follows ``modules/imgproc/src/
resize.cpp``: per output column and row, the source index and the two weights of
``(d + 0.5) * scale - 0.5`` in float, quantized to 11 bits (a column past an edge takes
the edge pixel; a row past an edge reads the edge row twice with its computed weights);
a horizontal pass in integers; a vertical pass rounded as its vectorized loop
(``VResizeLinearVec_32s8u``) rounds. A downscale by exactly 2 on both axes is OpenCV's
``INTER_AREA`` shortcut, the same arithmetic. Against opencv-python-headless 4.12 the
pixels are identical (``tests/test_cv_resize.py``); only the few values at the end of a
row that OpenCV's scalar loop finishes can round differently, by 1 of 255.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

_COEF_BITS = 11
_COEF_SCALE = 1 << _COEF_BITS  # INTER_RESIZE_COEF_SCALE


def cv_linear(image: Tensor, size: tuple[int, int]) -> Tensor:
    """A (C, H, W) image in [0, 1] (decoded 8-bit values) resized to ``size`` (h, w) as
    ``cv2.resize(INTER_LINEAR)`` resizes its 8-bit pixels; returned in [0, 1] on 8-bit
    levels, on the image's device, float32."""
    _, height, width = image.shape
    x0, x1, ax = (t.to(image.device) for t in _taps(width, size[1], clamp_weights=True))
    y0, y1, ay = (t.to(image.device) for t in _taps(height, size[0], clamp_weights=False))
    # Only the source rows some output row reads (a third of them for a 3x downscale).
    used, where = torch.unique(torch.cat([y0, y1]), return_inverse=True)
    u8 = image.float().index_select(1, used).mul_(255).round_()
    # The horizontal pass in float32 is exact: integers below 2 ** 21.
    rows = (u8.index_select(2, x0) * ax[:, 0] + u8.index_select(2, x1) * ax[:, 1])
    rows = rows.to(torch.int32) >> 4
    top, bottom = rows.index_select(1, where[:len(y0)]), rows.index_select(1, where[len(y0):])
    # The horizontal sums (scale 2048) shifted by 4 as the vector loop packs them to 16
    # bits; each product's high half; then rounded by 2 bits.
    out = (((top * ay[:, 0, None]) >> 16) + ((bottom * ay[:, 1, None]) >> 16) + 2) >> 2
    return out.clamp_(0, 255).float().div_(255)


def _taps(src: int, dst: int, *, clamp_weights: bool) -> tuple[Tensor, Tensor, Tensor]:
    """For each of ``dst`` outputs along an axis of ``src`` pixels: the two source indices
    and their 11-bit weights (int32), as OpenCV computes them. Columns past an edge take
    the edge pixel with weights (1, 0); rows past an edge read the edge row twice with the
    weights as computed (``clamp_weights`` False), which rounds a little differently."""
    scale = 1.0 / (dst / src)  # scale_x = 1 / inv_scale_x, in double
    f = ((np.arange(dst, dtype=np.float64) + 0.5) * scale - 0.5).astype(np.float32)
    s = np.floor(f).astype(np.int64)
    f = (f - s.astype(np.float32)).astype(np.float32)
    if clamp_weights:
        low, high = s < 0, s >= src - 1
        f[low], s[low] = 0.0, 0
        f[high], s[high] = 0.0, src - 1
    weights = np.stack([np.float32(1.0) - f, f], axis=1) * np.float32(_COEF_SCALE)
    alpha = np.rint(weights).astype(np.int32)  # saturate_cast<short>: round half to even
    return (torch.from_numpy(np.clip(s, 0, src - 1)), torch.from_numpy(np.clip(s + 1, 0, src - 1)),
            torch.from_numpy(alpha))
