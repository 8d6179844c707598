"""What the review page needs: every raw prediction, the calibrated thresholds and targets,
the saved selection, and image bytes (thumbnails made once).

The page moves thresholds in the browser, so it gets all predictions (not
only the kept ones) in one compact document; images load lazily, one request
each, through an owner-checked endpoint. Nothing here runs a model.
"""

from __future__ import annotations

import io
from typing import Any

from PIL import Image, ImageOps

from distill.images import open_image
from distill.pseudolabel_file import thresholds_json as _thresholds_json
from distill.pseudolabel_file import to_coco
from distill.pseudolabels import select, without_excluded
from jobs.records import JobRecord, SavedSelection
from jobs.store import JobStore
from service.annotations import NotAvailableError, collect, resolve

THUMB_SIZE = 320  # px, the longer side


def review_data(store: JobStore, records: list[JobRecord], saved: SavedSelection | None,
                *, kind: str, name: str) -> dict[str, Any]:
    """The review document of finished jobs (oldest first): one job, or a dataset's.

    ``rule`` is the selection a download applies now (the saved one, else the job's),
    with the thresholds it resolved to; every prediction carries its ``status`` under
    that rule (:meth:`distill.calibrate.Selection.status`), so the page draws and
    counts what the file holds, and applies the same rule when its sliders move.
    ``calibrated`` holds the job's own thresholds and ``min_votes`` (what the page's
    "reset to calibrated" returns to).
    """
    preds = collect(store, records)
    config, source = resolve(records, None, saved)
    kept = without_excluded(list(preds.by_name.values()), config.excluded)
    selection = select(kept, preds.card, config)
    coco = to_coco(kept, preds.card, selection)
    own = (selection if source == "job"
           else select(list(preds.by_name.values()), preds.card, resolve(records, None, None)[0]))
    refs: dict[str, tuple[str, int]] = {}
    for record in records:
        for n, f in enumerate(record.files):
            refs.setdefault(f.name, (record.id, n))
    images: list[dict[str, Any]] = []
    for file_name, rec in sorted(preds.by_name.items(), key=lambda kv: (
            refs.get(kv[0], ("", 0)), kv[0])):
        ref = refs.get(file_name)
        if ref is None or ref[0] != preds.jobs[file_name]:
            continue  # not a file of the job it was read from
        status = [selection.status(c, s, None if rec.votes is None else rec.votes[i],
                                   file_name=file_name, index=i)
                  for i, (c, s) in enumerate(zip(rec.category_ids, rec.scores, strict=True))]
        images.append({
            "file_name": file_name, "job": ref[0], "n": ref[1], "width": rec.width,
            "height": rec.height, "error": rec.error, "boxes": rec.boxes,
            "scores": rec.scores, "category_ids": rec.category_ids,
            "keypoints": rec.keypoints, "keypoint_scores": rec.keypoint_scores,
            "votes": rec.votes, "keypoint_spread": rec.keypoint_spread, "status": status})
    info = coco["info"]
    return {
        "kind": kind, "name": name, "teacher": records[0].teacher,
        "task": preds.card.task, "categories": coco["categories"],
        "calibrated": {**_thresholds_json(own), "min_votes": own.min_votes},
        "report": info["categories_report"],
        "rule": {**_thresholds_json(selection), "source": source,
                 "min_votes": selection.min_votes, "excluded": sorted(config.excluded),
                 "accepted": {k: sorted(v) for k, v in config.accepted.items()},
                 "rejected": {k: sorted(v) for k, v in config.rejected.items()}},
        "transforms": len(preds.info.get("transforms") or []),
        "labeled_stats": info.get("labeled_stats"), "images": images,
        "saved": None if saved is None else saved.model_dump(mode="json")}


def image_key(store: JobStore, record: JobRecord, n: int) -> str:
    """The key of the job's ``n``-th stored image; only that job's own files."""
    if not 0 <= n < len(record.files):
        raise NotAvailableError(f"job {record.id} has no image {n}")
    key = store.image_key(record.id, record.files[n].stored)
    if not store.storage.exists(key):
        raise NotAvailableError(f"the images of job {record.id} were deleted")
    return key


def thumbnail(store: JobStore, record: JobRecord, n: int) -> str:
    """The key of a JPEG of at most ``THUMB_SIZE`` px, made on first request and kept."""
    target = store.job_key(record.id, "thumbs", f"{n}.jpg")
    if store.storage.exists(target):
        return target
    data = store.storage.get(image_key(store, record, n))
    if data is None:
        raise NotAvailableError(f"the images of job {record.id} were deleted")
    img = open_image(data)
    img = ImageOps.contain(img, (THUMB_SIZE, THUMB_SIZE), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    store.storage.put(target, buf.getvalue())
    return target
