"""What the review page needs: every raw prediction, the calibrated thresholds and targets,
the saved selection, and image bytes (thumbnails made once).

The page moves thresholds in the browser, so it gets all predictions (not
only the kept ones) in one compact document; images load lazily, one request
each, through an owner-checked endpoint. Nothing here runs a model.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from PIL import Image, ImageOps

from distill.fileio import atomic_writer
from distill.images import open_image
from distill.predictions import PredictionLog
from jobs.records import JobRecord, SavedSelection
from jobs.store import JobStore
from service.annotations import NotAvailableError, build_coco

THUMB_SIZE = 320  # px, the longer side


def review_data(store: JobStore, records: list[JobRecord], saved: SavedSelection | None,
                *, kind: str, name: str) -> dict[str, Any]:
    """The review document of finished jobs (oldest first): one job, or a dataset's."""
    calibrated = build_coco(store, records, None, None)  # the job's own rule, no review yet
    info = calibrated["info"]
    refs: dict[str, tuple[str, int]] = {}
    for record in records:
        for n, f in enumerate(record.files):
            refs.setdefault(f.name, (record.id, n))
    images: list[dict[str, Any]] = []
    for record in records:
        for file_name, rec in sorted(PredictionLog(store.log_path(record.id)).read().items()):
            ref = refs.get(file_name)
            if ref is None or ref[0] != record.id:
                continue  # not this job's file (or an older job's copy of the same image)
            images.append({
                "file_name": file_name, "job": ref[0], "n": ref[1], "width": rec.width,
                "height": rec.height, "error": rec.error, "boxes": rec.boxes,
                "scores": rec.scores, "category_ids": rec.category_ids,
                "keypoints": rec.keypoints, "keypoint_scores": rec.keypoint_scores,
                "votes": rec.votes, "keypoint_spread": rec.keypoint_spread})
    return {
        "kind": kind, "name": name, "teacher": records[0].teacher,
        "task": info["teacher"]["task"], "categories": calibrated["categories"],
        "calibrated": info["thresholds"], "report": info["categories_report"],
        "labeled_stats": info.get("labeled_stats"), "images": images,
        "saved": None if saved is None else saved.model_dump(mode="json")}


def image_path(store: JobStore, record: JobRecord, n: int) -> Path:
    """The stored bytes of the job's ``n``-th image; only that job's own files."""
    if not 0 <= n < len(record.files):
        raise NotAvailableError(f"job {record.id} has no image {n}")
    path = store.images_dir(record.id) / record.files[n].stored
    if not path.is_file():
        raise NotAvailableError(f"the images of job {record.id} were deleted")
    return path


def thumbnail(store: JobStore, record: JobRecord, n: int) -> Path:
    """A JPEG of at most ``THUMB_SIZE`` px, made on first request and kept."""
    target = store.job_dir(record.id) / "thumbs" / f"{n}.jpg"
    if target.is_file():
        return target
    img = open_image(image_path(store, record, n))
    img = ImageOps.contain(img, (THUMB_SIZE, THUMB_SIZE), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    with atomic_writer(target) as fh:
        fh.write(buf.getvalue())
    return target
