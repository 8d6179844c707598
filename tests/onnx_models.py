"""Small ONNX models with the exact output layouts of Ultralytics' exports, made on the
spot with ``torch.onnx.export`` (nothing downloaded), and Ultralytics' own decoding
written out independently of distill's, as the reference the tests compare with.

- :class:`TinyYolo`: random convolutions at strides 8 and 16 emitting ``Detect`` /
  ``Pose`` export tensors ``[B, 4 + C (+ 3K), N]`` (box centre and size in input pixels,
  sigmoid scores, keypoints decoded as ``Pose.kpts_decode`` does);
- :class:`RedBlob`: one anchor that boxes the red pixels (an oracle: where the answer
  is known); as a pose model its ``left_hand`` is the box's right edge (a person facing
  the viewer) and ``right_hand`` its left edge;
- :class:`TinyDetr`: ``RTDETRDecoder``'s export tensor ``[B, Q, 4 + C]``, boxes as
  fractions of the input.
"""

from __future__ import annotations

import io
import subprocess
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F
from torchvision.ops import nms

KEYPOINTS = ["nose", "left_hand", "right_hand"]


class TinyYolo(nn.Module):
    def __init__(self, nc: int, k: int = 0, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.nc, self.k = nc, k
        self.stem = nn.Conv2d(3, 16, 3, stride=8, padding=1)
        self.down = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.head = nn.Conv2d(16, 4 + nc + 3 * k, 1)
        with torch.no_grad():
            self.head.bias[4:4 + nc] -= 1.0  # scores spread around 0.3, not all ~0.5

    def forward(self, x: Tensor) -> Tensor:
        f8 = F.relu(self.stem(x))
        outs = []
        for f, s in ((f8, 8.0), (F.relu(self.down(f8)), 16.0)):
            p = self.head(f)
            b, _, h, w = p.shape
            gy, gx = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype),
                                    indexing="ij")
            gx, gy = gx.reshape(1, -1) + 0.5, gy.reshape(1, -1) + 0.5
            p = p.flatten(2)
            parts = [((gx + torch.tanh(p[:, 0])) * s)[:, None],
                     ((gy + torch.tanh(p[:, 1])) * s)[:, None],
                     (torch.exp(p[:, 2].clamp(-2, 2)) * 2 * s)[:, None],
                     (torch.exp(p[:, 3].clamp(-2, 2)) * 2 * s)[:, None],
                     torch.sigmoid(p[:, 4:4 + self.nc])]
            if self.k:
                kp = p[:, 4 + self.nc:].reshape(b, self.k, 3, -1)
                kx = (kp[:, :, 0] * 2.0 + (gx[:, None] - 0.5)) * s
                ky = (kp[:, :, 1] * 2.0 + (gy[:, None] - 0.5)) * s
                parts.append(torch.stack([kx, ky, torch.sigmoid(kp[:, :, 2])], 2)
                             .reshape(b, 3 * self.k, -1))
            outs.append(torch.cat(parts, 1))
        return torch.cat(outs, 2)


def _red_box(x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """x1, y1, x2, y2 of the red pixels and whether there are any, per image."""
    mask = ((x[:, 0] > 0.5) & (x[:, 1] < 0.5)).float()
    cols, rows = mask.amax(1), mask.amax(2)
    xs = torch.arange(x.shape[3], dtype=x.dtype)[None]
    ys = torch.arange(x.shape[2], dtype=x.dtype)[None]
    big = torch.full_like(cols, 1e6)
    x1 = torch.where(cols > 0, xs.expand_as(cols), big).amin(1)
    x2 = torch.where(cols > 0, xs.expand_as(cols) + 1, torch.zeros_like(cols)).amax(1)
    big = torch.full_like(rows, 1e6)
    y1 = torch.where(rows > 0, ys.expand_as(rows), big).amin(1)
    y2 = torch.where(rows > 0, ys.expand_as(rows) + 1, torch.zeros_like(rows)).amax(1)
    return x1, y1, x2, y2, cols.amax(1)


class RedBlob(nn.Module):
    def __init__(self, pose: bool = False) -> None:
        super().__init__()
        self.pose = pose

    def forward(self, x: Tensor) -> Tensor:
        x1, y1, x2, y2, found = _red_box(x)
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        values = [cx, cy, x2 - x1, y2 - y1, found * 0.9]
        if self.pose:
            values += [cx, cy, found * 0.9, x2, cy, found * 0.8, x1, cy, found * 0.7]
        return torch.stack(values, 1)[..., None]  # (B, 5 (+ 9), 1)


class TinyDetr(nn.Module):
    def __init__(self, nc: int, queries: int = 20, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.q = queries
        self.conv = nn.Conv2d(3, 8, 3, stride=16, padding=1)
        self.box = nn.Linear(8 * 25, queries * 4)
        self.cls = nn.Linear(8 * 25, queries * nc)
        self.nc = nc

    def forward(self, x: Tensor) -> Tensor:
        f = F.adaptive_avg_pool2d(F.relu(self.conv(x)), (5, 5)).flatten(1)
        boxes = torch.sigmoid(self.box(f)).reshape(-1, self.q, 4) * 0.5 + 0.2
        scores = torch.sigmoid(self.cls(f) - 1).reshape(-1, self.q, self.nc)
        return torch.cat([boxes, scores], 2)


def export(model: nn.Module, path: Path, size: tuple[int, int], *, dynamic: bool = False,
           metadata: dict[str, Any] | None = None, batch: int = 1) -> Path:
    """``torch.onnx.export`` as Ultralytics' exporter calls it: input ``images``, output
    ``output0``, batch/height/width dynamic on request, metadata as ``str()`` values."""
    import onnx

    axes = {"images": {0: "batch", 2: "height", 3: "width"},
            "output0": {0: "batch", 2: "anchors"}} if dynamic else None
    buf = io.BytesIO()
    with warnings.catch_warnings():  # the TorchScript exporter is deprecated, and fast
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(model.eval(), (torch.zeros(batch, 3, *size),), buf, dynamo=False,
                          input_names=["images"], output_names=["output0"], dynamic_axes=axes,
                          opset_version=17)
    proto = onnx.load_from_string(buf.getvalue())
    for key, value in (metadata or {}).items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    path.write_bytes(proto.SerializeToString())
    return path


# ---- Ultralytics' own preprocessing and decoding, written out for reference -------------

OPENCV = ["opencv-python-headless==4.12.0.88", "numpy==2.2.6"]  # its own venv (toolvenv)
_RESIZE = """
import sys
import cv2
import numpy as np
image = np.load(sys.argv[1])
h, w = int(sys.argv[2]), int(sys.argv[3])
np.save(sys.argv[1], cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR))
"""


def opencv_resize(image: Tensor, size: tuple[int, int]) -> Tensor:
    """``cv2.resize(INTER_LINEAR)``, what ``LetterBox`` runs, of a [0, 1] image on 8-bit
    levels, by the real OpenCV (opencv-python-headless in ``.venv-opencv``)."""
    from tests.toolvenv import tool_python

    python = tool_python("opencv", OPENCV)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "image.npy"
        np.save(path, image.mul(255).round().to(torch.uint8).permute(1, 2, 0).numpy())
        subprocess.run([str(python), "-c", _RESIZE, str(path), str(size[0]), str(size[1])],
                       check=True, capture_output=True, timeout=120)
        out = torch.from_numpy(np.load(path))
    return out.reshape(*size, -1).permute(2, 0, 1).float() / 255


def reference_letterbox(image: Tensor, new_shape: tuple[int, int], auto: bool,
                        stride: int = 32) -> Tensor:
    """``LetterBox(new_shape, auto=auto, stride=stride)`` on a [0, 1] RGB tensor."""
    h, w = image.shape[-2:]
    r = min(new_shape[0] / h, new_shape[1] / w)
    nw, nh = round(w * r), round(h * r)
    dw, dh = new_shape[1] - nw, new_shape[0] - nh
    if auto:
        dw, dh = dw % stride, dh % stride
    dw, dh = dw / 2, dh / 2
    out = opencv_resize(image, (nh, nw)) if (nh, nw) != (h, w) else image
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    return F.pad(out.clamp(0, 1), (left, right, top, bottom), value=114 / 255)


def reference_yolo(output: Tensor, canvas: tuple[int, int], original: tuple[int, int], *,
                   conf: float, iou: float, nc: int, k: int = 0, max_det: int = 300
                   ) -> dict[str, Tensor]:
    """``non_max_suppression`` (best class, ``> conf``, class offsets of 7680) then
    ``scale_boxes`` / ``scale_coords`` with clipping, for one image's ``[4 + C (+ 3K), N]``."""
    x = output.T.clone()
    xy, wh = x[:, :2], x[:, 2:4]
    box = torch.cat([xy - wh / 2, xy + wh / 2], 1)
    score, cls = x[:, 4:4 + nc].max(1)
    keep = score > conf
    box, score, cls, kpts = box[keep], score[keep], cls[keep], x[keep, 4 + nc:]
    i = nms(box + cls[:, None].float() * 7680, score, iou)[:max_det]
    box, score, cls, kpts = box[i], score[i], cls[i], kpts[i].reshape(len(i), k, 3)
    gain = min(canvas[0] / original[0], canvas[1] / original[1])
    pad_x = round((canvas[1] - original[1] * gain) / 2 - 0.1)
    pad_y = round((canvas[0] - original[0] * gain) / 2 - 0.1)
    box = (box - torch.tensor([pad_x, pad_y, pad_x, pad_y])) / gain
    box[:, 0::2] = box[:, 0::2].clamp(0, original[1])
    box[:, 1::2] = box[:, 1::2].clamp(0, original[0])
    kpts[..., 0] = ((kpts[..., 0] - pad_x) / gain).clamp(0, original[1])
    kpts[..., 1] = ((kpts[..., 1] - pad_y) / gain).clamp(0, original[0])
    return {"boxes": box, "scores": score, "labels": cls + 1, "keypoints": kpts}

