"""A dataset's COCO file built from spooled records (``jobs.annotations.build_coco``) is
the file the records in memory give: the oldest job keeps a name several jobs share,
a later line of one job wins, the excluded images are left out, and the teacher check
still refuses jobs of two checkpoints. Local directory and S3 (moto's server) alike."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from distill.card import LabeledStats, ModelCard
from distill.predictions import ImageRecord, encode_records
from distill.pseudolabels import finalize
from jobs.annotations import NotAvailableError, build_coco, collect, resolve, spooled
from jobs.records import JobRecord, JobRequest, SavedSelection, StoredFile, utcnow
from jobs.s3 import S3Storage
from jobs.storage import LocalStorage, Storage
from jobs.store import JobStore
from tests.conftest import S3Server

CARD = ModelCard(arch="tiny", task="boxes", min_size=64, max_size=64,
                 categories=[{"id": 1, "name": "car"}, {"id": 2, "name": "bike"}],
                 labeled_stats=LabeledStats(images=10, instances_per_image={"1": 1.0, "2": 0.5}))


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> JobStore:
    storage: Storage
    if request.param == "local":
        storage = LocalStorage(tmp_path / "store")
    else:
        server: S3Server = request.getfixturevalue("s3_server")
        storage = S3Storage(f"s3://{server.bucket()}/p", client=server.client(), retry_s=1)
    return JobStore(storage)


def _image(name: str, *scores: float, width: int = 100) -> ImageRecord:
    boxes = tuple((10.0 * k, 0.0, 10.0 * k + 8, 8.0) for k in range(len(scores)))
    return ImageRecord(file_name=name, width=width, height=20, boxes=boxes, scores=scores,
                       category_ids=tuple(1 + k % 2 for k in range(len(scores))))


def _job(store: JobStore, n: int, lines: list[ImageRecord], sha: str = "a" * 64, *,
         tail: bytes = b"", files: list[str] | None = None) -> JobRecord:
    names = sorted({r.file_name for r in lines}) if files is None else files
    record = JobRecord(
        id=f"{n:032x}", owner="o", dataset="ds", created_at=utcnow() + timedelta(seconds=n),
        files=[StoredFile(name=m, stored="", bytes=1, width=100, height=20, sha256="0" * 64)
               for m in names], request=JobRequest(tta="identity", fusion="vote"),
        timeout_s=60)
    store.storage.put(store.job_key(record.id, "predictions.jsonl"),
                      encode_records(lines).encode() + tail)
    card = {**CARD.to_dict(), "provenance": {"sha256": sha}}
    store.save_json(store.job_key(record.id, "card.json"),
                    {"card": card, "info": {"tta": "identity"}})
    return record


def test_spooled_records_give_the_in_memory_file(store: JobStore) -> None:
    old = _job(store, 1, [_image("a.png", 0.9, 0.4), _image("b.png", 0.3),
                          _image("c.png", 0.8, 0.7, 0.2), _image("b.png", 0.6, 0.5)])
    # A torn last line (a worker killed mid-write) is not a record; a line of an image the
    # job does not list (not its file) is left out.
    new = _job(store, 2, [_image("a.png", 0.1, width=64), _image("d.png", 0.95, 0.05),
                          _image("e.png"), _image("x.png", 0.99)],
               tail=b'{"file_name": "z.png", "wid', files=["a.png", "d.png", "e.png"])
    records = [old, new]
    with spooled(store, records) as spool:
        passed = list(spool.passes())
        assert list(spool.names) == ["a.png", "b.png", "c.png", "d.png", "e.png"]
        assert [r.file_name for r in spool.passes()] == list(spool.names)  # again
        one, two = spool.passes(), spool.passes()  # two passes at once read alike
        assert [(next(one), next(two))[0] for _ in range(3)] == passed[:3]
        assert [r.file_name for r in two] == list(spool.names)[3:]
        assert dict(spool.jobs) == {"a.png": old.id, "b.png": old.id, "c.png": old.id,
                                    "d.png": new.id, "e.png": new.id}
    assert passed[0].width == 100  # the oldest job keeps a.png
    assert passed[1].scores == (0.6, 0.5)  # its later line of b.png wins
    in_memory = collect(store, records)
    assert passed == list(in_memory.by_name.values())
    for saved in (None, SavedSelection(excluded=["c.png"])):
        built = build_coco(store, records, saved=saved)
        selection, _ = resolve(records, None, saved)
        expected = finalize(list(in_memory.by_name.values()), in_memory.card, selection)
        for key in ("images", "annotations", "categories"):
            assert built[key] == expected[key], key
        assert built["info"]["thresholds"] == expected["info"]["thresholds"]
        assert built["info"]["excluded"] == ([] if saved is None else ["c.png"])
    assert "c.png" not in {i["file_name"] for i in built["images"]}

    other = _job(store, 3, [_image("f.png", 0.5)], sha="b" * 64)
    with pytest.raises(NotAvailableError, match="different teachers"):
        build_coco(store, [old, other])
