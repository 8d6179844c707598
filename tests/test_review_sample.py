"""A dataset larger than the review page takes is shown as a uniform sample.

The document holds at most ``max_images`` images, the same ones on every load, while
the thresholds (the rule a download applies and the calibrated ones) are computed over
every image: a sampled image's statuses are the full document's, and the per-category
report counts the sample against the labeled target for the sample's images.
"""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta
from pathlib import Path

from distill.card import LabeledStats, ModelCard
from distill.predictions import ImageRecord, encode_records
from jobs.records import JobRecord, JobRequest, SavedSelection, StoredFile, utcnow
from jobs.storage import LocalStorage
from jobs.store import JobStore
from service.review import review_data, sampled

CARD = ModelCard(arch="tiny", task="boxes", min_size=64, max_size=64,
                 categories=[{"id": 1, "name": "car"}, {"id": 2, "name": "bike"}],
                 labeled_stats=LabeledStats(images=10, instances_per_image={"1": 1.0, "2": 0.5}))


def _job(store: JobStore, n: int, names: list[str], rng: random.Random) -> JobRecord:
    """A job of two transforms (votes 1 or 2, min_votes 2); every 25th image failed."""
    lines = []
    for name in names:
        k = rng.randrange(0, 6)
        lines.append(ImageRecord(
            file_name=name, width=100, height=20,
            boxes=tuple((10.0 * i, 0.0, 10.0 * i + 8, 8.0) for i in range(k)),
            scores=tuple(round(rng.random(), 4) for _ in range(k)),
            category_ids=tuple(rng.choice((1, 2)) for _ in range(k)),
            votes=tuple(rng.choice((1, 2)) for _ in range(k)),
            spread=tuple(0.0 for _ in range(k)))
            if int(name[2:6]) % 25 else ImageRecord(
                file_name=name, width=0, height=0, boxes=(), scores=(), category_ids=(),
                error="cannot decode"))
    record = JobRecord(
        id=f"{n:032x}", owner="o", dataset="ds", created_at=utcnow() + timedelta(seconds=n),
        files=[StoredFile(name=m, stored="", bytes=1, width=100, height=20, sha256="0" * 64)
               for m in names], request=JobRequest(tta="flip", fusion="vote", min_votes=2),
        timeout_s=60)
    store.storage.put(store.job_key(record.id, "predictions.jsonl"),
                      encode_records(lines).encode())
    store.save_json(store.job_key(record.id, "card.json"),
                    {"card": {**CARD.to_dict(), "provenance": {"sha256": "a" * 64}},
                     "info": {"tta": "identity"}})
    return record


def test_the_sample_is_uniform_stable_and_only_when_needed() -> None:
    names = [f"img{i:05d}.png" for i in range(10_000)]
    assert sampled(names, 10_000) is None
    one = sampled(names, 1_000)
    assert one is not None and len(one) == 1_000 and one == sampled(names[::-1], 1_000)
    # Uniform over the set (mean index 5,000; a sample's spread is about 90).
    assert abs(sum(int(n[3:8]) for n in one) / 1_000 - 5_000) < 400
    # A grown dataset keeps the sampled images that are still among the smallest hashes:
    # nothing of the old set enters that was not shown before.
    grown = sampled([*names, *(f"new{i}.png" for i in range(2_000))], 1_000)
    assert grown is not None and {n for n in grown if n.startswith("img")} <= one
    assert len(grown & one) > 700


def test_a_sampled_review_keeps_the_whole_sets_thresholds(tmp_path: Path) -> None:
    store = JobStore(LocalStorage(tmp_path))
    rng = random.Random(0)
    names = [f"im{i:04d}.jpg" for i in range(300)]
    records = [_job(store, n, names[n * 100:(n + 1) * 100], rng) for n in range(3)]
    full = review_data(store, records, None, kind="dataset", name="ds", max_images=1_000)
    part = review_data(store, records, None, kind="dataset", name="ds", max_images=50)
    assert full["sample"] is None and len(full["images"]) == 300
    assert part["sample"] == {"images": 50, "of": 300, "decided_elsewhere": 0}
    assert len(part["images"]) == 50
    assert part["rule"] == full["rule"] and part["calibrated"] == full["calibrated"]
    assert part["rule"]["min_votes"] == 2
    by_name = {im["file_name"]: im for im in full["images"]}
    for im in part["images"]:
        assert im == by_name[im["file_name"]]
    statuses = Counter(s for im in part["images"] for s in im["status"])
    assert statuses["kept"] and statuses["filtered"]  # min_votes 2 filters single votes
    failed = sum(1 for im in part["images"] if im["error"])
    assert full["report"] != part["report"]
    # The report of the sample: its own kept and candidate counts, against its own read
    # images' target; the shortfall is the whole set's (as its thresholds are).
    for cid, mean in ((1, 1.0), (2, 0.5)):
        kept = sum(1 for im in part["images"] for c, st in zip(
            im["category_ids"], im["status"], strict=True) if st == "kept" and c == cid)
        candidates = sum(1 for im in part["images"] if not im["error"] for c, v in zip(
            im["category_ids"], im["votes"], strict=True) if c == cid and v >= 2)
        row = part["report"][str(cid)]
        assert (row["kept"], row["candidates"]) == (kept, candidates)
        assert row["target"] == round(mean * (50 - failed))
        assert row["shortfall"] == full["report"][str(cid)]["shortfall"]
        assert full["report"][str(cid)]["target"] == round(mean * (300 - 12))

    # A saved selection: images left out and decisions keep the rule as a download has it.
    shown = sorted(im["file_name"] for im in part["images"] if not im["error"])
    decided = next(im["file_name"] for im in part["images"]
                   if im["scores"] and im["file_name"] != shown[0])
    outside = sorted(set(names) - set(shown) - {im["file_name"] for im in part["images"]})
    saved = SavedSelection(excluded=[shown[0], outside[0]],
                           rejected={decided: [0], outside[1]: [0]},
                           score_thresholds={"1": 0.5, "2": 0.7})
    again = review_data(store, records, saved, kind="dataset", name="ds", max_images=50)
    assert [im["file_name"] for im in again["images"]] == [im["file_name"]
                                                           for im in part["images"]]
    assert again["sample"]["decided_elsewhere"] == 2
    assert again["rule"]["score"] == {"1": 0.5, "2": 0.7}
    assert again["rule"]["excluded"] == sorted([shown[0], outside[0]])
    assert again["calibrated"] == full["calibrated"]
    one = next(im for im in again["images"] if im["file_name"] == decided)
    assert one["status"][0] == "rejected"
    # The excluded image of the sample is out of its report's target.
    assert again["report"]["1"]["target"] == round(1.0 * (50 - failed - 1))
