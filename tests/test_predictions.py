"""The prediction log: append, torn lines, de-duplication, streaming reads."""

from __future__ import annotations

from pathlib import Path

from distill.predictions import ImageRecord, PredictionLog


def _rec(name: str, score: float) -> ImageRecord:
    return ImageRecord(file_name=name, width=10, height=10, boxes=((0.0, 0.0, 5.0, 5.0),),
                       scores=(score,), category_ids=(1,))


def test_streaming_reads_match_the_full_read(tmp_path: Path) -> None:
    log = PredictionLog(tmp_path / "p.jsonl")
    log.append([_rec("b.png", 0.1), _rec("a.png", 0.2)])
    log.append([ImageRecord.failed("c.png", "corrupt"), _rec("b.png", 0.9)])  # b retried
    with open(log.path, "a") as fh:
        fh.write('{"file_name": "d.png", "wid')  # a crash mid-line
    assert log.done() == {"a.png", "b.png", "c.png"}
    streamed = list(log.iter_records())
    assert [r.file_name for r in streamed] == ["a.png", "b.png", "c.png"]  # sorted, once each
    assert streamed[1].scores == (0.9,)  # the last record of a name wins
    assert {r.file_name: r for r in streamed} == log.read()
    assert [r.file_name for r in log.iter_records({"c.png", "zzz.png"})] == ["c.png"]
    # Appending after a torn line seals it first, so the new record is readable.
    log.append([_rec("e.png", 0.5)])
    assert "e.png" in log.done() and "d.png" not in log.done()


def test_records_round_trip_through_json() -> None:
    rec = ImageRecord(file_name="x.png", width=3, height=4, boxes=((1.0, 2.0, 3.0, 4.0),),
                      scores=(0.5,), category_ids=(7,), keypoints=(((1.0, 2.0), (3.0, 4.0)),),
                      keypoint_scores=((0.1, -2.0),))
    assert ImageRecord.from_json(rec.to_json()) == rec
