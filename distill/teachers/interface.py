"""The teacher interface (DESIGN section 3): what a model family implements.

A **family** turns a teacher checkpoint (its card and tensors) into a
:class:`Detector`, and may import weights trained elsewhere into such a checkpoint.
A detector answers one question: *given a batch of images at one test-time size,
what does the model detect in each image?* It resizes the images its own way
(torchvision's shorter-side resize, a YOLO letterbox, ...) and returns detections in
the frame of the images it was given, in one of two forms:

- **raw** (``raw_cap`` an integer): every candidate above the model's score floor,
  before its own NMS and top-k (at most ``raw_cap``, best first): what Detectron
  pools over transforms for box TTA;
- **final** (``raw_cap`` None): what the model itself outputs.

Everything else is the ensemble's (:mod:`distill.tta.boxes`), the same for every
family: mirroring the images and mapping the detections back, pooling, NMS, voting
or weighted boxes fusion, agreement, and for regressed keypoints their fusion across
transforms. Keypoint R-CNN's shared-box heatmap ensemble (:mod:`distill.tta.keypoints`)
is a specialisation for detectors that have heatmaps (:mod:`distill.teachers.rcnn`).

Detections are dicts of tensors:

- ``boxes`` (N, 4) float, xyxy pixels (they may reach past the image's edges, as the
  model's NMS saw them; the ensemble clips what it fuses); ``scores`` (N,) float;
  ``labels`` (N,) int64,
  the model's labels: 1..N for the card's categories in order, or through the card's
  ``label_ids`` (0 is the background and never appears);
- keypoint teachers also ``keypoints`` (N, K, 3) as (x, y, 1) and
  ``keypoints_scores`` (N, K): each keypoint's confidence, on the model's own scale.

A plug-in family is one module: a :class:`TeacherFamily` object exposed under the
entry point group ``distill.teachers`` (see :mod:`distill.teachers.registry`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from distill.card import LabeledStats, ModelCard, Task

if TYPE_CHECKING:
    import torch
    from torch import Tensor

Detections = dict[str, "Tensor"]


@runtime_checkable
class Detector(Protocol):
    """One loaded teacher model, run at one test-time size per call."""

    #: The largest test-time scale the model can take (a fixed-size ONNX input); None: any.
    max_scale: int | None

    def to(self, device: torch.device) -> Detector:
        """The detector on ``device`` (``cpu`` or ``cuda``); may return itself."""
        ...

    def detect(self, images: list[Tensor], scale: int, max_size: int, *,
               raw_cap: int | None) -> list[Detections]:
        """Detections of each image (3, H, W, RGB floats in [0, 1]) in its own frame.

        ``scale`` and ``max_size`` are the test-time size in the card's terms (for an
        R-CNN the shorter side and the cap on the longer one; for a letterboxed model
        the longer side). ``raw_cap``: raw candidates, at most that many per image (see
        the module docstring); None: the model's final output.
        """
        ...

    def final(self, detections: Detections) -> Detections:
        """What the model itself keeps of a raw set of one image: its NMS and top-k."""
        ...


@dataclass(frozen=True)
class ImportRequest:
    """``distill teacher import``'s arguments, handed to the family of ``arch``."""

    arch: str
    weights: Path
    categories: str | Path
    stats: LabeledStats | None = None
    stats_source: str | None = None
    labeled_json: Path | None = None
    min_size: int | None = None
    max_size: int | None = None
    name: str | None = None
    arch_options: dict[str, Any] | None = None
    labels: str = "contiguous"


@runtime_checkable
class TeacherFamily(Protocol):
    """A model family: which architectures it runs, how to load and to import them."""

    #: Short name, shown in errors (``torchvision``, ``onnx``, a plug-in's own).
    name: str

    def architectures(self) -> dict[str, Task | None]:
        """Architecture names (a card's ``arch``) and their task (None: either)."""
        ...

    def load(self, card: ModelCard, tensors: dict[str, Tensor]) -> Detector:
        """The detector a checkpoint describes (``tensors``: its state dict)."""
        ...

    def import_teacher(self, request: ImportRequest) -> tuple[ModelCard, dict[str, Tensor]]:
        """Checks weights trained elsewhere and returns the card and tensors to save;
        raises a :class:`distill.errors.DistillError` (one line) on any mismatch."""
        ...
