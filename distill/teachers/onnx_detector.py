"""An exported YOLO or RT-DETR model, run by onnxruntime, as a :class:`Detector`.

Per call: each image is letterboxed (YOLO) or stretched (RT-DETR) to the pass's
target (:mod:`distill.teachers.placement`), the batch runs through the session (one
image at a time when the export fixed its batch to 1, else in groups of equal input
size), each image's output is decoded to candidates above the score floor
(:mod:`distill.teachers.onnx_layouts`), then either kept raw (best first, capped) or
reduced to the model's own output: YOLO's class-aware NMS (IoU ``nms_thresh``, at most
30000 candidates in, ``max_det`` out, Ultralytics' ``non_max_suppression``), RT-DETR's
best ``max_det`` queries. Boxes and keypoints go back to the image's own frame as
Ultralytics' ``scale_boxes`` / ``scale_coords`` do; keypoints are clipped to the image,
boxes only once fused (:mod:`distill.tta.boxes`), so that no overlap changes under the
ensemble's NMS.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, get_args

import numpy as np
import torch
from torch import Tensor
from torchvision.ops import nms

from distill.card import ModelCard
from distill.errors import CardError
from distill.teachers.interface import Detections
from distill.teachers.onnx_layouts import Kind, Layout
from distill.teachers.onnx_session import Signature, input_dtype, open_session
from distill.teachers.placement import Placement, letterbox, stretch, target_size

log = logging.getLogger(__name__)
MAX_NMS = 30000  # Ultralytics' max_nms: candidates that go into NMS at most
MAX_WH = 7680  # Ultralytics' max_wh: the per-class box offset of its NMS


@dataclass(frozen=True)
class OnnxConfig:
    """What a card's ``arch_options`` say about an ONNX teacher."""

    layout: Kind
    num_classes: int
    input_size: tuple[int, int] | None  # None: dynamic height and width
    batch: int | None  # None: dynamic batch
    stride: int = 32
    kpt_shape: tuple[int, int] | None = None
    score_thresh: float = 0.05
    nms_thresh: float = 0.7
    max_det: int = 300

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> OnnxConfig:
        """Parses and checks ``arch_options`` (:class:`CardError` naming the bad one); an
        option left out takes the field's default."""
        try:
            size, kpt = options.get("input_size"), options.get("kpt_shape")
            config = cls(layout=options["layout"], num_classes=int(options["num_classes"]),
                         input_size=None if size is None else (int(size[0]), int(size[1])),
                         batch=None if options.get("batch") is None else int(options["batch"]),
                         stride=int(options.get("stride", cls.stride)),
                         kpt_shape=None if kpt is None else (int(kpt[0]), int(kpt[1])),
                         score_thresh=float(options.get("score_thresh", cls.score_thresh)),
                         nms_thresh=float(options.get("nms_thresh", cls.nms_thresh)),
                         max_det=int(options.get("max_det", cls.max_det)))
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise CardError(f"ONNX teacher arch options malformed: {exc!r}") from exc
        if config.layout not in get_args(Kind):
            raise CardError(f"unknown ONNX layout {config.layout!r}")
        if not (0 <= config.score_thresh < 1 and 0 <= config.nms_thresh <= 1
                and config.max_det >= 1 and config.stride >= 1):
            raise CardError("ONNX teacher options need 0 <= score_thresh < 1, "
                            "0 <= nms_thresh <= 1, max_det >= 1 and stride >= 1")
        return config

    def options(self) -> dict[str, Any]:
        """JSON form for the card."""
        return asdict(self)

    @property
    def layout_spec(self) -> Layout:
        """The output layout to decode."""
        return Layout(self.layout, self.num_classes, self.kpt_shape)


class OnnxDetector:
    """A session over the model's bytes, decoding its one output by the card's layout."""

    def __init__(self, model: bytes, card: ModelCard) -> None:
        self.config = OnnxConfig.from_options(card.arch_options)
        self.layout = self.config.layout_spec
        self.base = card.max_size
        self.model = model
        self.cuda = False
        self._open()
        self.max_scale: int | None = self.base if self.config.input_size else None

    def _open(self) -> None:
        self.session = open_session(self.model, cuda=self.cuda, threads=torch.get_num_threads())
        self.signature = Signature.of(self.session)
        self.dtype = input_dtype(self.signature)
        if self.cuda and "CUDAExecutionProvider" not in self.session.get_providers():
            log.warning("the ONNX teacher runs on the CPU: this onnxruntime has no usable CUDA "
                        "provider (install onnxruntime-gpu: the CUDA image's `cuda` extra)")

    def to(self, device: torch.device) -> OnnxDetector:
        """The CUDA provider on a GPU device (when onnxruntime-gpu is installed), else the
        CPU; a new session only when that changes."""
        cuda = torch.device(device).type == "cuda"
        if cuda != self.cuda:
            self.cuda = cuda
            self._open()
        return self

    def detect(self, images: list[Tensor], scale: int, max_size: int, *,
               raw_cap: int | None) -> list[Detections]:
        """See :class:`distill.teachers.interface.Detector`."""
        cfg = self.config
        target = target_size(scale, self.base, cfg.input_size, cfg.stride)
        sizes = [(int(i.shape[-2]), int(i.shape[-1])) for i in images]
        places = [stretch(s, target, cfg.input_size) if cfg.layout == "rtdetr"
                  else letterbox(s, target, cfg.input_size, cfg.stride) for s in sizes]
        outputs = self._run(images, places)
        results = []
        for out, place in zip(outputs, places, strict=True):
            cand = self.layout.candidates(out, place.canvas, cfg.score_thresh)
            if raw_cap is None:
                cand = self.final(cand)
            else:  # the best raw_cap, best first
                top = cand["scores"].argsort(descending=True, stable=True)[:raw_cap]
                cand = {k: v[top] for k, v in cand.items()}
            results.append(_to_image(cand, place))
        return results

    def final(self, detections: Detections) -> Detections:
        """The model's own output from candidates: YOLO's NMS, RT-DETR's best queries."""
        cfg = self.config
        scores = detections["scores"]
        if cfg.layout == "rtdetr":
            keep = scores.argsort(descending=True, stable=True)[:cfg.max_det]
        else:
            # Ultralytics reorders the candidates only when there are too many for NMS.
            top = torch.arange(len(scores)) if len(scores) <= MAX_NMS \
                else scores.argsort(descending=True, stable=True)[:MAX_NMS]
            # Classes apart by Ultralytics' offset of max_wh per class (not batched_nms's
            # own), so that overlaps at the threshold round the same way.
            shifted = detections["boxes"][top] + (detections["labels"][top, None] - 1) * MAX_WH
            keep = top[nms(shifted, scores[top], cfg.nms_thresh)][:cfg.max_det]
        return {k: v[keep] for k, v in detections.items()}

    def _run(self, images: list[Tensor], places: list[Placement]) -> list[Tensor]:
        """The raw output of every image, in order: a fixed batch in chunks of that size
        (the last one padded), a dynamic batch in groups of equal input size."""
        fixed = self.config.batch
        groups: dict[tuple[int, int], list[int]] = {}
        for i, place in enumerate(places):
            groups.setdefault(place.canvas, []).append(i)
        outputs: list[Tensor | None] = [None] * len(images)
        for members in groups.values():
            step = fixed or len(members)
            for k in range(0, len(members), step):
                chunk = members[k:k + step]
                batch = torch.stack([places[i].apply(images[i]) for i in chunk])
                if fixed and len(chunk) < fixed:
                    batch = torch.cat([batch, batch.new_zeros((fixed - len(chunk),
                                                               *batch.shape[1:]))])
                array: np.ndarray = np.ascontiguousarray(batch.cpu().numpy().astype(self.dtype))
                out = self._infer(array)
                for row, i in enumerate(chunk):
                    outputs[i] = torch.from_numpy(np.asarray(out[row], dtype=np.float32))
        return [o for o in outputs if o is not None]


    def _infer(self, array: np.ndarray) -> np.ndarray:
        """One session run, its output checked against the layout. onnxruntime's own
        errors become RuntimeErrors, which a run turns into that image's error."""
        try:
            out = np.asarray(self.session.run(None, {self.signature.input_name: array})[0])
        except Exception as exc:  # onnxruntime's exceptions derive from Exception only
            text = str(exc).strip()
            raise RuntimeError(f"onnxruntime: {text.splitlines()[0] if text else exc!r}") \
                from exc
        axis = 2 if self.config.layout == "rtdetr" else 1
        if out.ndim != 3 or out.shape[axis] != self.layout.channels:
            raise CardError(f"the model returned {list(out.shape)}; its card's layout needs "
                            f"{self.layout.expected()}")
        return out


def _to_image(det: Detections, place: Placement) -> Detections:
    out = dict(det)
    out["boxes"] = place.boxes_to_image(det["boxes"])
    if "keypoints" in det:
        kps = det["keypoints"].clone()
        kps[..., :2] = place.points_to_image(kps[..., :2])
        out["keypoints"] = kps
    return out
