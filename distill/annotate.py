"""Pseudo-labeling a set of images: teacher -> multi-transform inference -> log -> COCO.

``Teacher`` loads a checkpoint once and holds the wrapped predictor;
``infer_to_log`` streams images through it in batches, appending each
finished batch to a :class:`PredictionLog` (so a restarted run skips
finished images) and handing it to one ``on_batch`` hook;
:func:`distill.pseudolabels.finalize` then calibrates over everything logged
and builds the COCO file. The CLI's ``distill annotate`` and the RQ worker
both run exactly these functions.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import torch
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from tqdm import tqdm

from distill.card import ModelCard
from distill.cardfile import card_with_checksum
from distill.checkpoint import load_checkpoint
from distill.coco import objects
from distill.errors import DataError, ImageDecodeError
from distill.fileio import write_json_atomic
from distill.images import list_images, load_image
from distill.options import DEFAULT_BATCH_SIZE, InferenceOptions
from distill.predictions import ImageRecord, PredictionLog
from distill.pseudolabels import SelectionConfig, finalize
from distill.score_floor import ScoreFloor
from distill.teachers.interface import Detector
from distill.teachers.rcnn import as_detector
from distill.teachers.registry import load_detector
from distill.tta.predictor import Predictor, build_predictor

log = logging.getLogger(__name__)
# An image source: a name (metadata only, never a path we open) and its bytes or file.
ImageSource = tuple[str, bytes | Path]
# A drawn box: (x0, y0, x1, y1) as fractions of the image's width and height.
Fractions = tuple[float, float, float, float]
# Called with each batch's records once they are on disk (progress, cancellation checks).
BatchHook = Callable[[list[ImageRecord]], None]


class Teacher:
    """A teacher model wrapped for multi-transform inference.

    :meth:`load` reads a checkpoint once, through its family
    (:mod:`distill.teachers.registry`); :meth:`with_options` rewraps the same loaded
    detector for another transform set or fusion without reloading it.
    """

    def __init__(self, card: ModelCard, model: GeneralizedRCNN | Detector,
                 options: InferenceOptions, checkpoint: Path | None = None) -> None:
        self.card = card
        self.detector = as_detector(model)
        self.options = options
        self.checkpoint = checkpoint
        self.predictor: Predictor = build_predictor(self.detector, card, options)
        # Images per forward pass; halved (for good) when the device runs out of memory.
        self.batch_size = options.batch_size or (
            DEFAULT_BATCH_SIZE if self.predictor.device.type == "cuda" else 1)
        self.max_batch = self.batch_size

    @classmethod
    def load(cls, checkpoint: Path, options: InferenceOptions) -> Teacher:
        """Loads a checkpoint (weights_only) and records its checksum in the card."""
        card, state, _ = load_checkpoint(Path(checkpoint))
        detector = load_detector(card, state)
        return cls(card_with_checksum(card, Path(checkpoint)), detector, options,
                   Path(checkpoint))

    def with_options(self, options: InferenceOptions) -> Teacher:
        """The same loaded model under other inference options (no weights copied)."""
        return Teacher(self.card, self.detector, options, self.checkpoint)

    @property
    def model(self) -> Any:
        """The network itself: the torchvision module of an R-CNN teacher (benchmarks hook
        its parts), else the detector."""
        return getattr(self.detector, "model", self.detector)

    @property
    def sha256(self) -> str:
        """Checksum of the checkpoint file this teacher was loaded from."""
        return str(self.card.provenance.get("sha256", ""))

    def info(self) -> dict[str, Any]:
        """What the output's info block says about how it was produced."""
        described = self.options.describe()
        if self.predictor.keypoint_fusion is not None:  # regressed keypoints: box path
            for key in ("heatmap_combine", "size_dependent", "size_dependent_area",
                        "keypoint_cap", "keypoint_floor"):
                described.pop(key)
            described["keypoint_fusion"] = self.predictor.keypoint_fusion
        elif self.card.task == "keypoints":
            described.pop("fusion")  # no box fusion runs on the heatmap keypoint path
        return {**described, "transforms": [str(t) for t in self.predictor.transforms]}


def infer_to_log(teacher: Teacher, sources: Iterable[ImageSource], log: PredictionLog, *,
                 on_batch: BatchHook | None = None, floor: ScoreFloor | None = None,
                 prompts: Mapping[str, Sequence[Fractions]] | None = None
                 ) -> tuple[int, int]:
    """Runs the teacher over every source not yet in ``log``; returns (done, failed).

    Unreadable images become failed records instead of stopping the run.
    ``on_batch`` gets each batch's records after they are fsynced to the log;
    an exception it raises stops the run (a cancelled job) with nothing lost.
    ``floor`` (see :func:`score_floor`) goes with every batch to the predictor and lets
    a keypoint teacher skip detections that cannot be kept; None ensembles every detection.
    ``prompts``: boxes per image name (fractions of its width and height) in which a
    keypoint teacher places keypoints instead of detecting (:func:`_on_boxes`).
    """
    finished = log.done()
    todo = (s for s in sources if s[0] not in finished)  # lazy: sources may be fetched
    return _infer(teacher, todo, log, on_batch, floor, prompts or {})


def score_floor(teacher: Teacher, selection: SelectionConfig) -> ScoreFloor | None:
    """The keypoint floor for a run whose log ``selection`` alone will select from
    (:mod:`distill.score_floor`); None (every detection) when the thresholds are given,
    when ignore regions reach further down, or for a box teacher. A log calibrated
    together with others (a service dataset) must not get one: its own images say
    nothing about where the set's threshold will land."""
    if selection.explicit or selection.ignore_factor:
        return None
    return ScoreFloor.for_card(teacher.card, teacher.options.keypoint_floor)


def _infer(teacher: Teacher, todo: Iterable[ImageSource], log: PredictionLog,
           on_batch: BatchHook | None, floor: ScoreFloor | None,
           prompts: Mapping[str, Sequence[Fractions]]) -> tuple[int, int]:
    done = failed = 0
    for batch in _batches(todo, teacher.batch_size):
        records: list[ImageRecord] = []
        images: list[torch.Tensor] = []
        names: list[str] = []
        for name, data in batch:
            try:
                images.append(load_image(data, max_pixels=teacher.options.max_pixels))
                names.append(name)
            except (ImageDecodeError, OSError) as exc:
                records.append(ImageRecord.failed(name, str(exc)))
        prompted = [_on_boxes(teacher, n, i, prompts[n])
                    for n, i in zip(names, images, strict=True) if prompts.get(n)]
        records.extend(r for r in prompted if r is not None)
        done_here = {r.file_name for r in records}
        rest = [(n, i) for n, i in zip(names, images, strict=True) if n not in done_here]
        if rest:
            records.extend(_predict(teacher, [n for n, _ in rest], [i for _, i in rest], floor))
        log.append(records)
        failed += sum(r.error is not None for r in records)
        done += sum(r.error is None for r in records)
        if on_batch is not None:
            on_batch(records)
    return done, failed


def _on_boxes(teacher: Teacher, name: str, image: torch.Tensor, boxes: Sequence[Fractions]
              ) -> ImageRecord | None:
    """The record of an image whose instances were drawn (an interactive pre-annotation):
    the drawn boxes with the keypoints the teacher places in them; None when the teacher
    only detects (its detections are recorded instead, as for any image)."""
    h, w = int(image.shape[-2]), int(image.shape[-1])
    px = torch.tensor([(x0 * w, y0 * h, x1 * w, y1 * h) for x0, y0, x1, y1 in boxes],
                      dtype=torch.float32)
    try:
        outputs = teacher.predictor.on_boxes([image], [px])
    except torch.cuda.OutOfMemoryError as exc:  # one image already: nothing to halve
        torch.cuda.empty_cache()
        return ImageRecord.failed(name, f"out of GPU memory on the drawn boxes: {exc}")
    except (RuntimeError, ValueError) as exc:
        return ImageRecord.failed(name, f"inference on the drawn boxes failed: {exc}")
    if outputs is None:
        return None
    return ImageRecord.from_output(name, w, h, outputs[0], teacher.card)


def _predict(teacher: Teacher, names: list[str], images: list[torch.Tensor],
             floor: ScoreFloor | None) -> list[ImageRecord]:
    """Runs one batch, in pieces of at most ``teacher.max_batch`` images.

    Out of GPU memory, the piece is halved and retried, and the smaller size is kept
    for the rest of the run: a job never fails for a batch size too large for the
    device. Any other failure of a batch is retried image by image, so one bad image
    (say 1 x 5000 pixels, which resizes to nothing) becomes its own error instead of
    sinking the batch.
    """
    def record(name: str, img: torch.Tensor, out: dict[str, torch.Tensor]) -> ImageRecord:
        return ImageRecord.from_output(name, int(img.shape[-1]), int(img.shape[-2]), out,
                                       teacher.card)

    if len(images) > teacher.max_batch:
        step = teacher.max_batch
        return [r for k in range(0, len(images), step)
                for r in _predict(teacher, names[k:k + step], images[k:k + step], floor)]
    try:
        outputs = teacher.predictor(images, floor=floor)
        return [record(n, i, o) for n, i, o in zip(names, images, outputs, strict=True)]
    except torch.cuda.OutOfMemoryError as exc:
        torch.cuda.empty_cache()
        if len(images) == 1:
            return [ImageRecord.failed(names[0], f"out of GPU memory even alone: {exc}")]
        teacher.max_batch = max(1, len(images) // 2)
        log.warning("out of GPU memory with %d images per pass; %d from now on", len(images),
                    teacher.max_batch)
        return _predict(teacher, names, images, floor)
    except (RuntimeError, ValueError) as exc:
        if len(images) == 1:
            return [ImageRecord.failed(names[0], f"inference failed: {exc}")]
    return [r for n, i in zip(names, images, strict=True)
            for r in _predict(teacher, [n], [i], floor)]


@dataclass(frozen=True)
class AnnotateReport:
    """What ``annotate_folder`` did."""

    images: int
    failed: int
    annotations: int
    skipped_as_done: int
    output: Path


def annotate_folder(teacher: Path, images: Path, out: Path, *,
                    options: InferenceOptions | None = None,
                    selection: SelectionConfig | None = None,
                    progress: bool = True) -> AnnotateReport:
    """``distill annotate``: every image in a folder -> one COCO pseudo-label file.

    Raw predictions stream to ``<out>.predictions.jsonl``; a rerun after an
    interruption resumes from it.
    """
    options = options or InferenceOptions()
    selection = selection or SelectionConfig()
    files = list_images(Path(images))
    if not files:
        raise DataError(f"no images (png, jpg, ...) in {str(images)!r}")
    model = Teacher.load(teacher, options)
    log = PredictionLog(Path(str(out) + ".predictions.jsonl"))
    already = len(log.done() & {f.name for f in files})
    bar = tqdm(total=len(files), initial=already, unit="img", disable=not progress,
               desc="annotating")

    failed = 0

    def advance(batch: list[ImageRecord]) -> None:
        nonlocal failed
        failed += sum(r.error is not None for r in batch)
        bar.update(len(batch))
        bar.set_postfix(failed=failed)

    infer_to_log(model, ((f.name, f) for f in files), log, on_batch=advance,
                 floor=score_floor(model, selection))
    bar.close()
    names = {f.name for f in files}
    coco = finalize(lambda: log.iter_records(names), model.card, selection, model.info())
    write_json_atomic(Path(out), coco)
    return AnnotateReport(images=len(coco["images"]), failed=coco["info"]["num_failed"],
                          annotations=len(objects(coco)), skipped_as_done=already,
                          output=Path(out))


def _batches(items: Iterable[ImageSource], size: int) -> Iterator[list[ImageSource]]:
    it = iter(items)
    while batch := list(islice(it, max(1, size))):
        yield batch
