"""Raw ensembled predictions per image, streamed to disk as JSON lines.

One line per image, appended (and fsynced) as soon as its batch finishes, so
an interrupted run loses at most the batch in flight and a resumed one skips
what is already written. Selection happens later, over the whole set, from
these raw records: thresholds can change without re-running inference.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from distill.card import ModelCard

if TYPE_CHECKING:  # only for annotations: reading and writing records needs no torch
    from torch import Tensor

_DECIMALS = 2  # a hundredth of a pixel is far below any detector's precision


@dataclass(frozen=True)
class ImageRecord:
    """The ensembled predictions for one image, in original pixel coordinates.

    ``boxes`` are xyxy; ``category_ids`` are COCO ids; ``keypoints`` is one
    list of [x, y] pairs per instance, with ``keypoint_scores`` beside it.
    ``error`` is set (and the lists empty) when the image could not be read.
    """

    file_name: str
    width: int = 0
    height: int = 0
    boxes: tuple[tuple[float, float, float, float], ...] = ()
    scores: tuple[float, ...] = ()
    category_ids: tuple[int, ...] = ()
    keypoints: tuple[tuple[tuple[float, float], ...], ...] | None = None
    keypoint_scores: tuple[tuple[float, ...], ...] | None = None
    error: str | None = None
    # Box teachers under several transforms: how many transforms agree on each instance,
    # and how far apart their boxes are (distill.fusion.agreement); None otherwise.
    votes: tuple[int, ...] | None = None
    spread: tuple[float, ...] | None = None
    # Keypoint teachers under several transforms: per instance and keypoint, how far apart
    # the transforms' heatmap peaks lie, in box sizes; None otherwise.
    keypoint_spread: tuple[tuple[float, ...], ...] | None = None

    @classmethod
    def failed(cls, file_name: str, error: str) -> ImageRecord:
        """A record for an image that could not be processed."""
        return cls(file_name=file_name, error=error)

    @classmethod
    def from_output(cls, file_name: str, width: int, height: int,
                    output: dict[str, Tensor], card: ModelCard) -> ImageRecord:
        """Converts a detector/TTA output dict (model labels) to a record (COCO ids).

        A detection whose label maps to no category (an "N/A" slot of torchvision's
        COCO models) is dropped: it can never be a valid annotation.
        """
        def r(x: float) -> float:
            return round(float(x), _DECIMALS)

        ids = [card.category_id(int(lbl)) for lbl in output["labels"].tolist()]
        keep = [i for i, c in enumerate(ids) if c is not None]
        boxes = output["boxes"].tolist()
        kps = kp_scores = kp_spread = None
        if "keypoints" in output:
            points, point_scores = output["keypoints"].tolist(), output["keypoints_scores"].tolist()
            kps = tuple(tuple((r(x), r(y)) for x, y, _ in points[i]) for i in keep)
            kp_scores = tuple(tuple(round(s, 4) for s in point_scores[i]) for i in keep)
        if "keypoints_spread" in output:
            spreads = output["keypoints_spread"].tolist()
            kp_spread = tuple(tuple(round(s, 4) for s in spreads[i]) for i in keep)
        scores = output["scores"].tolist()
        votes = spread = None
        if "votes" in output:
            all_votes, all_spread = output["votes"].tolist(), output["spread"].tolist()
            votes = tuple(int(all_votes[i]) for i in keep)
            spread = tuple(round(float(all_spread[i]), 4) for i in keep)
        return cls(
            file_name=file_name, width=width, height=height,
            boxes=tuple(tuple(r(v) for v in boxes[i]) for i in keep),  # type: ignore[misc]
            scores=tuple(round(float(scores[i]), 5) for i in keep),
            category_ids=tuple(int(ids[i]) for i in keep),  # type: ignore[arg-type]
            keypoints=kps, keypoint_scores=kp_scores, votes=votes, spread=spread,
            keypoint_spread=kp_spread,
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ImageRecord:
        """Inverse of :meth:`to_json`."""
        kps = data.get("keypoints")
        kp_scores = data.get("keypoint_scores")
        return cls(
            file_name=str(data["file_name"]), width=int(data.get("width", 0)),
            height=int(data.get("height", 0)),
            boxes=tuple(tuple(b) for b in data.get("boxes", [])),
            scores=tuple(data.get("scores", [])),
            category_ids=tuple(int(c) for c in data.get("category_ids", [])),
            keypoints=None if kps is None else tuple(tuple(tuple(p) for p in inst)
                                                     for inst in kps),
            keypoint_scores=None if kp_scores is None else tuple(tuple(s) for s in kp_scores),
            error=data.get("error"),
            votes=None if data.get("votes") is None else tuple(int(v) for v in data["votes"]),
            spread=None if data.get("spread") is None else tuple(data["spread"]),
            keypoint_spread=(None if data.get("keypoint_spread") is None
                             else tuple(tuple(s) for s in data["keypoint_spread"])),
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-compatible dict (tuples become lists)."""
        return asdict(self)


def encode_records(records: Iterable[ImageRecord]) -> str:
    """Records as JSON lines, each ending in a newline (the log's format)."""
    return "".join(json.dumps(r.to_json(), allow_nan=False) + "\n" for r in records)


def parse_records(lines: Iterable[bytes]) -> Iterator[tuple[ImageRecord, bytes]]:
    """Each record of log ``lines`` with its line, in order; stops at a torn last line
    and skips a line that is not a record."""
    for line in lines:
        if not line.endswith(b"\n"):
            return  # torn last line
        try:
            rec = ImageRecord.from_json(json.loads(line))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError):
            continue
        yield rec, line


def read_records(lines: Iterable[bytes], into: dict[str, ImageRecord] | None = None
                 ) -> dict[str, ImageRecord]:
    """Parses log lines into ``into`` (a new dict by default), by file name, later lines
    winning (:func:`parse_records`)."""
    records: dict[str, ImageRecord] = {} if into is None else into
    for rec, _ in parse_records(lines):
        records[rec.file_name] = rec
    return records


class PredictionLog:
    """Append-only JSON-lines file of :class:`ImageRecord`, keyed by file name.

    A line cut short by a crash is ignored on reading (its image is simply
    redone); a file name written twice keeps its last record, so a retried
    image is never counted twice.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def append(self, records: Iterable[ImageRecord]) -> None:
        """Appends records and forces them to disk before returning."""
        lines = encode_records(records)
        if not lines:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            if fh.tell() > 0 and not self._ends_with_newline():
                fh.write("\n")  # seal a line torn by an earlier crash
            fh.write(lines)
            fh.flush()
            os.fsync(fh.fileno())

    def read(self) -> dict[str, ImageRecord]:
        """All complete records, by file name (later lines win)."""
        if not self.path.exists():
            return {}
        with open(self.path, "rb") as fh:
            return read_records(fh)

    def index(self) -> dict[str, int]:
        """File name -> byte offset of its last complete record; only names are held."""
        offsets: dict[str, int] = {}
        if not self.path.exists():
            return offsets
        with open(self.path, "rb") as fh:
            offset = 0
            for line in fh:
                if not line.endswith(b"\n"):
                    break  # torn last line
                try:
                    name = json.loads(line)["file_name"]
                except (json.JSONDecodeError, KeyError, TypeError, UnicodeDecodeError):
                    name = None
                if isinstance(name, str):
                    offsets[name] = offset
                offset += len(line)
        return offsets

    def iter_records(self, names: Collection[str] | None = None) -> Iterator[ImageRecord]:
        """Records in file-name order (restricted to ``names`` when given), read one at a
        time: memory stays flat however many images the log holds."""
        offsets = self.index()
        wanted = sorted(offsets if names is None else set(offsets) & set(names))
        with open(self.path, "rb") as fh:
            for name in wanted:
                fh.seek(offsets[name])
                yield ImageRecord.from_json(json.loads(fh.readline()))

    def done(self) -> set[str]:
        """File names that already have a record (successful or failed)."""
        return set(self.index())

    def _ends_with_newline(self) -> bool:
        with open(self.path, "rb") as fh:
            fh.seek(-1, os.SEEK_END)
            return fh.read(1) == b"\n"
