"""The by-reference client's decisions, on the plan views the service answers with (the
whole flow against a real service and bucket: tests/test_references.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from distill.errors import DistillError
from jobs.settings import DATASET_PATTERN
from service.client import ClientOptions, dataset_name_for
from service.client_refs import PlanState, _check_ended, _needs_resending, reference_body


def _plan(status: str, statuses: dict[str, int], jobs: int = 2, error: str | None = None
          ) -> dict[str, Any]:
    return {"state": {"status": status, "listed": 10, "skipped": 1, "jobs": jobs,
                      "error": error},
            "batches": {"statuses": statuses, "images": {"done": 0, "failed": 0, "total": 0}}}


def test_a_rerun_resends_a_plan_that_failed_or_lost_batches() -> None:
    assert _needs_resending(_plan("failed", {}))
    assert _needs_resending(_plan("cancelled", {"finished": 1}))
    assert _needs_resending(_plan("finished", {"finished": 1, "failed": 1}))
    assert not _needs_resending(_plan("finished", {"finished": 2}))
    assert _needs_resending(_plan("finished", {"finished": 1}))  # one batch job is gone
    assert not _needs_resending(_plan("finished", {}, jobs=0))  # every image held already
    assert not _needs_resending(_plan("running", {"failed": 1}))  # still going: wait


def test_the_end_of_a_plan_is_checked_on_its_own_batches(caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    state = PlanState(url="u", body={}, dataset="d", plan="p")
    with pytest.raises(DistillError, match="found no images"):
        _check_ended(state, _plan("finished", {}, jobs=0)["state"], {})
    with pytest.raises(DistillError, match="1 failed of its 3 batch jobs"):
        _check_ended(state, _plan("finished", {})["state"], {"finished": 2, "failed": 1})
    _check_ended(state, _plan("finished", {}, error="stopped at 100000 images")["state"],
                 {"finished": 2})
    assert "stopped at 100000 images" in caplog.text


def test_what_the_argument_names(tmp_path: Path) -> None:
    options = ClientOptions(tta="flip", selection={"score_threshold": 0.3, "min_votes": None})
    assert reference_body("s3://b/p/", options) == {"source": "s3://b/p/", "recursive": False,
                                                    "tta": "flip", "score_threshold": 0.3}
    assert reference_body("https://h/a.jpg", options)["images"] == ["https://h/a.jpg"]
    listed = tmp_path / "uris.txt"
    listed.write_text("# mine\ns3://b/a.jpg\n\n  https://h/b.jpg # two\n")
    assert reference_body(str(listed), options)["images"] == ["s3://b/a.jpg", "https://h/b.jpg"]
    (tmp_path / "empty.txt").write_text("# nothing\n")
    (tmp_path / "photo.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    (tmp_path / "blob.bin").write_bytes(b"\xff\xfe\x00\x81")
    for name, words in (("empty.txt", "lists no URIs"), ("photo.jpg", "is an image"),
                        ("blob.bin", "not a text file")):
        with pytest.raises(DistillError, match=words):
            reference_body(str(tmp_path / name), options)


def test_generated_dataset_names_follow_the_pattern() -> None:
    import re

    for stem in ("my pseudo labels", "..weird", "äöü", "x" * 90, "ok-name_1.2"):
        name = dataset_name_for(Path(f"/tmp/{stem}.json"))
        assert re.match(DATASET_PATTERN, name), name
