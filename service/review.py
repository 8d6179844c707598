"""What the review page needs: every raw prediction, the calibrated thresholds and targets,
the saved selection, and image bytes (thumbnails made once).

The page moves thresholds in the browser, so it gets all predictions (not
only the kept ones) of the images it shows in one compact document (a large dataset:
a uniform sample of them); images load lazily, one request each, through an
owner-checked endpoint. Nothing here runs a model.
"""

from __future__ import annotations

import hashlib
import heapq
import io
from collections import Counter
from collections.abc import Collection, Iterable
from typing import Any

from PIL import Image, ImageOps

from distill.card import ModelCard
from distill.images import open_image
from distill.predictions import ImageRecord
from distill.pseudolabel_file import candidate_categories, category_report, to_coco
from distill.pseudolabel_file import thresholds_json as _thresholds_json
from distill.pseudolabels import select, without_excluded
from jobs.records import JobRecord, SavedSelection
from jobs.store import JobStore
from service.annotations import NotAvailableError, resolve, spooled

THUMB_SIZE = 320  # px, the longer side


def review_data(store: JobStore, records: list[JobRecord], saved: SavedSelection | None,
                *, kind: str, name: str, max_images: int) -> dict[str, Any]:
    """The review document of finished jobs (oldest first): one job, or a dataset's.

    ``rule`` is the selection a download applies now (the saved one, else the job's),
    with the thresholds it resolved to; every prediction carries its ``status`` under
    that rule (:meth:`distill.calibrate.Selection.status`), so the page draws and
    counts what the file holds, and applies the same rule when its sliders move.
    ``calibrated`` holds the job's own thresholds and ``min_votes`` (what the page's
    "reset to calibrated" returns to).

    Thresholds are calibrated over every image, but the document holds at most
    ``max_images`` of them: a larger set is shown as a uniform sample (:func:`sampled`;
    ``sample`` says how many of how many), whose per-category ``report`` compares the
    sample's kept counts with the labeled target for the sample's images (its
    ``shortfall``, like the thresholds, is the whole set's). The records
    are streamed from a spool (:func:`jobs.annotations.spooled`), so only the sample is
    held in memory.
    """
    config, source = resolve(records, None, saved)
    with spooled(store, records) as spool:
        card = ModelCard.from_dict(spool.stored["card"])
        passes = spool.passes
        selection = select(without_excluded(passes, config.excluded), card, config)
        own = (selection if source == "job"
               else select(passes, card, resolve(records, None, None)[0]))
        sample = sampled(spool.names, max_images)
        shown, whole_counts = _shown(passes(), sample, config.excluded, selection.min_votes)
        owners = dict(spool.jobs)
        transforms = len(spool.stored["info"].get("transforms") or [])
        total_images = len(spool.names)
        decided = {*config.excluded, *config.accepted, *config.rejected}
        elsewhere = sum(1 for n in decided if n in spool.jobs and sample is not None
                        and n not in sample)
    coco = to_coco(without_excluded(shown, config.excluded), card, selection)
    report = coco["info"]["categories_report"]
    if whole_counts is not None:  # a shortfall is the whole set's, as its thresholds are
        candidates, ok = whole_counts
        for cid, row in category_report(card, selection, candidates, [], ok).items():
            if cid != "keypoints":
                report[cid]["shortfall"] = row["shortfall"]
    refs: dict[str, tuple[str, int]] = {}
    for record in records:
        for n, f in enumerate(record.files):
            refs.setdefault(f.name, (record.id, n))
    images: list[dict[str, Any]] = []
    for rec in sorted(shown, key=lambda r: (refs.get(r.file_name, ("", 0)), r.file_name)):
        ref = refs.get(rec.file_name)
        if ref is None or ref[0] != owners[rec.file_name]:
            continue  # not a file of the job it was read from
        status = [selection.status(c, s, None if rec.votes is None else rec.votes[i],
                                   file_name=rec.file_name, index=i)
                  for i, (c, s) in enumerate(zip(rec.category_ids, rec.scores, strict=True))]
        images.append({
            "file_name": rec.file_name, "job": ref[0], "n": ref[1], "width": rec.width,
            "height": rec.height, "error": rec.error, "boxes": rec.boxes,
            "scores": rec.scores, "category_ids": rec.category_ids,
            "keypoints": rec.keypoints, "keypoint_scores": rec.keypoint_scores,
            "votes": rec.votes, "keypoint_spread": rec.keypoint_spread, "status": status})
    return {
        "kind": kind, "name": name, "teacher": records[0].teacher,
        "task": card.task, "categories": coco["categories"],
        # A sample: the images shown (failed ones included) of every image the jobs hold,
        # and how many images with a saved decision (excluded, accepted, rejected) lie
        # outside it (the decisions still apply to downloads).
        "sample": (None if sample is None else {
            "images": len(images), "of": total_images, "decided_elsewhere": elsewhere}),
        "calibrated": {**_thresholds_json(own), "min_votes": own.min_votes},
        "report": report,
        "rule": {**_thresholds_json(selection), "source": source,
                 "min_votes": selection.min_votes, "excluded": sorted(config.excluded),
                 "accepted": {k: sorted(v) for k, v in config.accepted.items()},
                 "rejected": {k: sorted(v) for k, v in config.rejected.items()}},
        "transforms": transforms,
        "labeled_stats": coco["info"].get("labeled_stats"), "images": images,
        "saved": None if saved is None else saved.model_dump(mode="json")}


def _shown(records: Iterable[ImageRecord], sample: frozenset[str] | None,
           excluded: frozenset[str], min_votes: int
           ) -> tuple[list[ImageRecord], tuple[Counter[int], int] | None]:
    """The records of the sample (all of them: None), and with a sample the whole set's
    calibration candidates per category and images that count (read, not excluded), in
    the same pass."""
    if sample is None:
        return list(records), None
    shown: list[ImageRecord] = []
    candidates: Counter[int] = Counter()
    ok = 0
    for rec in records:
        if rec.file_name in sample:
            shown.append(rec)
        if rec.error is None and rec.file_name not in excluded:
            ok += 1
            candidates.update(candidate_categories(rec, min_votes))
    return shown, (candidates, ok)


def sampled(names: Collection[str], limit: int) -> frozenset[str] | None:
    """The names the review shows of a set larger than ``limit`` (None: all of them):
    those with the smallest hash of the name, a uniform sample that is the same on every
    load while the set does not change, and that changes little as it grows (an image
    leaves it only for a new one with a smaller hash)."""
    if len(names) <= limit:
        return None
    return frozenset(heapq.nsmallest(
        limit, names, key=lambda n: hashlib.blake2b(n.encode(), digest_size=8).digest()))


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
