"""Peak memory of building a dataset's COCO file from its jobs' prediction logs: the
spooled records (``jobs.annotations.build_coco``, what workers and the API run) against
the records read into memory (``collect`` + ``finalize``, how it was built before); and
of the review page's document (``service.review.review_data``) of every image against
the uniform sample of ``--review-images`` it holds for a larger dataset.

    python benchmarks/dataset_memory.py --images 20000 --candidates 40

Writes the jobs (logs of random box candidates, one teacher card) into a temporary local
store, then measures each way in a fresh process (peak traced Python allocations, with
``tracemalloc``, and the process's peak RSS growth) and checks both give the same file.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from datetime import timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from distill.card import LabeledStats, ModelCard
from distill.predictions import ImageRecord, encode_records
from jobs.records import JobRecord, JobRequest, StoredFile, utcnow
from jobs.storage import LocalStorage
from jobs.store import JobStore

CARD = ModelCard(arch="tiny", task="boxes", min_size=64, max_size=640,
                 categories=[{"id": c, "name": f"c{c}"} for c in (1, 2, 3)],
                 labeled_stats=LabeledStats(images=100, instances_per_image={
                     "1": 2.0, "2": 0.5, "3": 0.1}))


def make_jobs(root: Path, images: int, candidates: int, per_job: int) -> None:
    """Jobs of ``per_job`` images, each image with ``candidates`` random boxes."""
    store, rng = JobStore(LocalStorage(root)), random.Random(0)
    for n, start in enumerate(range(0, images, per_job)):
        names = [f"img_{i:07d}.jpg" for i in range(start, min(images, start + per_job))]
        lines = []
        for name in names:
            boxes = []
            for _ in range(candidates):
                x, y = rng.uniform(0, 600), rng.uniform(0, 400)
                boxes.append((round(x, 2), round(y, 2), round(x + rng.uniform(5, 80), 2),
                              round(y + rng.uniform(5, 80), 2)))
            lines.append(ImageRecord(
                file_name=name, width=640, height=480, boxes=tuple(boxes),
                scores=tuple(round(rng.random(), 4) for _ in boxes),
                category_ids=tuple(rng.choice((1, 1, 1, 2, 3)) for _ in boxes)))
        record = JobRecord(
            id=f"{n:032x}", owner="o", dataset="ds",
            created_at=utcnow() + timedelta(seconds=n), timeout_s=60,
            files=[StoredFile(name=m, stored="", bytes=1, width=640, height=480,
                              sha256="0" * 64) for m in names],
            request=JobRequest(tta="identity", fusion="vote"))
        store.save_job(record)
        store.storage.put(store.job_key(record.id, "predictions.jsonl"),
                          encode_records(lines).encode())
        store.save_json(store.job_key(record.id, "card.json"), {
            "card": {**CARD.to_dict(), "provenance": {"sha256": "a" * 64}}, "info": {}})


def measure(root: Path, way: str, review_images: int) -> dict[str, Any]:
    """Builds the file (or the review document) one way in this process; its peak memory
    and a digest."""
    from distill.pseudolabels import finalize
    from jobs.annotations import build_coco, collect, resolve
    from service.review import review_data

    store = JobStore(LocalStorage(root))
    records = sorted(store.list_jobs(), key=lambda r: r.created_at)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    tracemalloc.start()
    if way.startswith("review"):
        limit = review_images if way == "review-sample" else 10**9
        doc = review_data(store, records, None, kind="dataset", name="ds", max_images=limit)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        traced_s = time.perf_counter() - t0
        t1 = time.perf_counter()  # again untraced: the time a page waits for it
        review_data(store, records, None, kind="dataset", name="ds", max_images=limit)
        return {"peak_mib": peak / 2**20, "seconds": traced_s,
                "untraced_seconds": time.perf_counter() - t1,
                "rss_growth_mib": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
                                   - rss0) / 1024,
                "document_mib": len(json.dumps(doc)) / 2**20, "images": len(doc["images"]),
                "thresholds": json.dumps(doc["rule"]["score"], sort_keys=True)}
    if way == "spooled":
        coco = build_coco(store, records)
    else:
        preds = collect(store, records)
        coco = finalize(list(preds.by_name.values()), preds.card,
                        resolve(records, None, None)[0])
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
    return {"peak_mib": peak / 2**20, "rss_growth_mib": rss / 1024,
            "seconds": time.perf_counter() - t0,
            "annotations": len(coco["annotations"]), "images": len(coco["images"]),
            "thresholds": json.dumps(coco["info"]["thresholds"], sort_keys=True)}


def main() -> None:
    """Writes the jobs once, then measures each way in its own process."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--candidates", type=int, default=40, help="box candidates per image")
    p.add_argument("--per-job", type=int, default=500, help="images per batch job")
    p.add_argument("--review-images", type=int, default=10_000,
                   help="the review's sample (DISTILL_REVIEW_MAX_IMAGES)")
    p.add_argument("--measure", choices=["spooled", "in-memory", "review-all", "review-sample"],
                   help=argparse.SUPPRESS)
    p.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.measure:
        print(json.dumps(measure(args.root, args.measure, args.review_images)))
        return
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "store"
        make_jobs(root, args.images, args.candidates, args.per_job)
        log_mib = sum(f.stat().st_size for f in root.rglob("*.jsonl")) / 2**20
        print(f"{args.images} images, {args.candidates} candidates each, "
              f"{log_mib:.0f} MiB of logs")
        results = {}
        for way in ("in-memory", "spooled"):
            out = subprocess.run([sys.executable, __file__, "--measure", way, "--root",
                                  str(root)], capture_output=True, text=True, check=True)
            results[way] = json.loads(out.stdout)
            r = results[way]
            print(f"{way:>9}: peak traced {r['peak_mib']:.0f} MiB, peak RSS growth "
                  f"{r['rss_growth_mib']:.0f} MiB, {r['seconds']:.1f} s under tracemalloc "
                  f"({r['annotations']} annotations)")
        same = all(results["spooled"][k] == results["in-memory"][k]
                   for k in ("annotations", "images", "thresholds"))
        print("same file" if same else "FILES DIFFER")
        for way in ("review-all", "review-sample"):
            out = subprocess.run([sys.executable, __file__, "--measure", way, "--root",
                                  str(root), "--review-images", str(args.review_images)],
                                 capture_output=True, text=True, check=True)
            results[way] = r = json.loads(out.stdout)
            print(f"{way:>13}: {r['images']} images, document {r['document_mib']:.0f} MiB, "
                  f"peak traced {r['peak_mib']:.0f} MiB, peak RSS growth "
                  f"{r['rss_growth_mib']:.0f} MiB, {r['seconds']:.1f} s under tracemalloc, "
                  f"{r['untraced_seconds']:.1f} s without")
        print("same review thresholds" if results["review-all"]["thresholds"]
              == results["review-sample"]["thresholds"] else "REVIEW THRESHOLDS DIFFER")


if __name__ == "__main__":
    main()
