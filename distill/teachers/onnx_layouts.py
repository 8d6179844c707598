"""The output layouts of exported detectors: what an import checks, and the decoding.

- ``yolo-detect``: Ultralytics ``Detect`` in export mode (YOLOv8 / 11 and kin), one
  output ``[B, 4 + C, N]``: per anchor cx, cy, w, h in input pixels, then C class
  scores (already sigmoid);
- ``yolo-pose``: ``Pose`` in export mode, ``[B, 4 + C + K * D, N]``: the same, then per
  keypoint x, y in input pixels and (D = 3) its confidence (already sigmoid);
- ``rtdetr``: ``RTDETRDecoder`` in export mode, ``[B, Q, 4 + C]``: per query cx, cy, w,
  h as fractions of the input, then C class scores (sigmoid). No NMS.

Decoding follows Ultralytics' own (``utils/nms.py non_max_suppression`` with its
predict defaults, ``models/rtdetr/predict.py``): a candidate is an anchor (query) with
its best class, kept when that score is above the score floor (``>``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from distill.errors import CardError
from distill.teachers.onnx_session import Signature, format_shape

Kind = Literal["yolo-detect", "yolo-pose", "rtdetr"]


@dataclass(frozen=True)
class Layout:
    """One output layout with its class count (and keypoints for ``yolo-pose``)."""

    kind: Kind
    num_classes: int
    kpt_shape: tuple[int, int] | None = None

    @property
    def channels(self) -> int:
        """Values per anchor (query)."""
        k, d = self.kpt_shape or (0, 0)
        return 4 + self.num_classes + k * d

    def expected(self) -> str:
        """The output shape this layout needs, for messages."""
        if self.kind == "rtdetr":
            return f"[B, Q, {self.channels}] (4 + {self.num_classes} classes)"
        what = f"4 + {self.num_classes} classes"
        if self.kpt_shape:
            what += f" + {self.kpt_shape[0]} keypoints x {self.kpt_shape[1]}"
        return f"[B, {self.channels}, N] ({what})"

    def check(self, sig: Signature, source: str) -> None:
        """Raises a one-line :class:`CardError` unless ``sig`` has this layout."""
        shape = sig.input_shape
        if len(shape) != 4 or shape[1] != 3 or (shape[2] is None) != (shape[3] is None):
            raise CardError(f"{source}: input {sig.input_name!r} is {format_shape(shape)}; "
                            "an image input is [B, 3, H, W] (H and W both fixed or both dynamic)")
        if len(sig.outputs) != 1:
            raise CardError(f"{source} has {len(sig.outputs)} outputs ({sig.describe_outputs()})"
                            f"; {self.kind} takes one output {self.expected()} (segmentation "
                            "and NMS-inside exports are not supported)")
        name, out = sig.outputs[0]
        axis = 2 if self.kind == "rtdetr" else 1
        # A dynamic export may leave the value count symbolic; the import's dry run checks it.
        if len(out) != 3 or out[axis] not in (None, self.channels):
            raise CardError(f"{source}: output {name!r} is {format_shape(out)} but {self.kind} "
                            f"with these categories needs {self.expected()}{self._hint(out)}")

    def _hint(self, out: tuple[int | None, ...]) -> str:
        if len(out) != 3:
            return ""
        if self.kind != "rtdetr" and out[2] == 6 and out[1] not in (None, 6):
            return "; [B, max_det, 6] is an end-to-end (NMS-free) export, not supported"
        got = out[2] if self.kind == "rtdetr" else out[1]
        if got is None or self.kpt_shape or got < 5:
            return ""
        return (f"; {got} values per anchor would be {got - 4} classes, or a pose model "
                "(give the data.yaml with its kpt_shape)")

    def candidates(self, output: Tensor, canvas: tuple[int, int], score_thresh: float
                   ) -> dict[str, Tensor]:
        """One image's candidates above ``score_thresh`` in anchor (query) order, in canvas
        pixels: ``boxes`` xyxy, ``scores``, ``labels`` (class index + 1), keypoints if
        any. The order is the model's, as Ultralytics hands them to NMS, so that equal
        scores (anchors in the grey padding) are resolved as there."""
        pred = output.float().T if self.kind != "rtdetr" else output.float()  # (N, values)
        nc = self.num_classes
        scores, cls = pred[:, 4:4 + nc].max(dim=1)
        keep = torch.nonzero(scores > score_thresh).squeeze(1)
        pred, scores, cls = pred[keep], scores[keep], cls[keep]
        xywh = pred[:, :4]
        if self.kind == "rtdetr":  # fractions of the input
            size = torch.tensor([canvas[1], canvas[0]] * 2, dtype=pred.dtype)
            xywh = xywh * size
        boxes = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], dim=1)
        out = {"boxes": boxes, "scores": scores, "labels": cls.to(torch.int64) + 1}
        if self.kpt_shape:
            k, d = self.kpt_shape
            kpts = pred[:, 4 + nc:].reshape(len(pred), k, d)
            out["keypoints"] = torch.cat([kpts[..., :2], torch.ones_like(kpts[..., :1])], dim=2)
            # Without a confidence channel every keypoint is as sure as its box.
            out["keypoints_scores"] = kpts[..., 2] if d == 3 else scores[:, None].repeat(1, k)
        return out
