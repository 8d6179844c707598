"""ONNX exports as teachers: ``yolo-onnx`` (Ultralytics detect and pose) and
``rtdetr-onnx``, run by onnxruntime; no Ultralytics code is needed or imported.

Where the model lives: **inside the checkpoint**, as one uint8 tensor ``onnx`` in its
state dict, which ``torch.load(weights_only=True)`` reads like any other tensor. So a
teacher stays one file (DESIGN section 4): the checksum that identifies it in jobs and
outputs covers the model itself, replacing the file under a running worker swaps model
and card together, nothing in a card is ever used as a path (a card naming a file
beside it would be an untrusted path), and the API still reads the card without torch
(:mod:`distill.cardfile` skips the tensor's bytes). On load the bytes must match the
checksum the card recorded at import, and onnxruntime gets them from memory.
"""

from __future__ import annotations

import hashlib
from typing import Any

from torch import Tensor

from distill.card import ModelCard, Task
from distill.errors import CardError
from distill.options import ONNX_ARCH_TASKS
from distill.teachers.interface import ImportRequest
from distill.teachers.onnx_detector import OnnxDetector

MODEL_KEY = "onnx"


class OnnxFamily:
    """The ONNX teacher family."""

    name = "onnx"

    def architectures(self) -> dict[str, Task | None]:
        """``yolo-onnx`` (boxes or keypoints) and ``rtdetr-onnx`` (boxes)."""
        return dict(ONNX_ARCH_TASKS)

    def load(self, card: ModelCard, tensors: dict[str, Tensor]) -> OnnxDetector:
        """The detector over the checkpoint's ONNX bytes, checked against the card."""
        blob = tensors.get(MODEL_KEY)
        if blob is None or blob.ndim != 1:
            raise CardError(f"an {card.arch} checkpoint holds its model as a 1-D uint8 tensor "
                            f"{MODEL_KEY!r}; this one does not")
        data = blob.numpy().tobytes()
        expected = card.provenance.get("source_sha256")
        if expected and hashlib.sha256(data).hexdigest() != expected:
            raise CardError("the ONNX model in the checkpoint does not match the checksum its "
                            "card recorded at import")
        return OnnxDetector(data, card)

    def import_teacher(self, request: ImportRequest) -> tuple[ModelCard, dict[str, Any]]:
        """See :mod:`distill.teachers.onnx_import`."""
        from distill.teachers.onnx_import import import_onnx

        return import_onnx(request)


FAMILY = OnnxFamily()
