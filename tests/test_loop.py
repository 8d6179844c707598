"""``distill loop`` end to end on tiny generated data: locally, resumed, and through a
live service."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from distill.cli import main
from tests.conftest import API_KEYS, ServiceStack, free_port

# A few iterations on small images, one thread: the plumbing, not the method.
TINY = ["--teacher-iters", "3", "--student-iters", "4", "--batch-size", "2", "--min-size",
        "96", "--max-size", "160", "--tta", "flip", "--threads", "1", "--quiet"]


@pytest.fixture(autouse=True)
def _threads() -> Iterator[None]:
    """The loop sets torch's threads; the rest of the suite gets its own back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _loop(split: Any, out: Path, json_path: Path, *extra: str) -> int:
    return main(["loop", "--labeled", str(json_path), "--images", str(split.images_dir),
                 "--unlabeled", str(_unlabeled(split)), "--out", str(out), *TINY, *extra])


def _unlabeled(labeled: Any) -> Path:
    return labeled.images_dir.parent / "unlabeled"


def test_loop_trains_resumes_and_reports_a_second_round(
        synthetic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    labeled, out = synthetic["labeled"], tmp_path / "run"
    assert _loop(labeled, out, labeled.boxes_json, "--rounds", "2") == 0
    first = capsys.readouterr().out
    # No --test-json: a quarter of the 8 labeled images held out, by the seed, and said so.
    assert "held-out split: 2 of the 8 labeled images" in first
    held = json.loads((out / "held-out" / "test.json").read_text())
    train = json.loads((out / "held-out" / "train.json").read_text())
    assert len(held["images"]) == 2 and len(train["images"]) == 6
    assert not {i["id"] for i in held["images"]} & {i["id"] for i in train["images"]}
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "boxes"  # the box file's categories name no keypoints
    assert list(report["rows"]) == ["teacher", "baseline", "student", "student-round2"]
    assert report["deltas"]["baseline"] == {"single": 0.0, "tta": 0.0}
    assert set(report["pseudo"]) == {"pseudo", "pseudo-round2"}
    assert report["pseudo"]["pseudo"]["images"] == len(list(_unlabeled(labeled).iterdir()))
    md = (out / "report" / "report.md").read_text()
    for row in ("| teacher |", "| teacher + TTA |", "| baseline (equal budget) |",
                "| student |", "| student + TTA |", "| student round 2 |",
                "| student round 2 + TTA |"):
        assert row in md
    assert "| model | box AP | box AP50 | vs baseline |" in md
    assert (out / "report" / "ap.png").stat().st_size > 1000
    # The same command again: every step is found done, nothing retrains.
    times = json.loads((out / "times.json").read_text())
    mtime = (out / "student-round2.pt").stat().st_mtime_ns
    assert _loop(labeled, out, labeled.boxes_json, "--rounds", "2") == 0
    second = capsys.readouterr().out
    assert "train student-round2: done earlier" in second and "train teacher ..." not in second
    assert json.loads((out / "times.json").read_text()) == times
    assert (out / "student-round2.pt").stat().st_mtime_ns == mtime
    # Other budgets in the same folder would reuse stale steps: refused.
    assert _loop(labeled, out, labeled.boxes_json, "--student-iters", "5") == 2
    assert "other settings (student_iters: 4 -> 5)" in capsys.readouterr().err


def test_loop_labels_round_one_through_a_live_service(
        synthetic: dict[str, Any], live_service: ServiceStack, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The service's teacher labels round 1 (no local teacher: no teacher row); the
    round-1 student labels round 2 locally."""
    labeled, out = synthetic["labeled"], tmp_path / "remote"
    monkeypatch.delenv("DISTILL_API_KEY", raising=False)
    assert _loop(labeled, out, labeled.keypoints_json, "--url", live_service.url,
                 "--key", API_KEYS[0], "--rounds", "2") == 0
    report = json.loads((out / "report.json").read_text())
    assert report["task"] == "keypoints"
    assert list(report["rows"]) == ["baseline", "student", "student-round2"]
    assert any(c.startswith("distill client annotate") for c in report["commands"])
    # The key reaches the client through its environment and is recorded nowhere.
    assert API_KEYS[0] not in (out / "report.json").read_text()
    assert report["config"]["command"][:3] == ["distill", "loop", "--labeled"]
    coco = json.loads((out / "pseudo.json").read_text())
    assert len(coco["images"]) == report["pseudo"]["pseudo"]["images"] > 0
    md = (out / "report" / "report.md").read_text()
    assert "keypoint AP" in md and f"the service's teacher at {live_service.url}" in md


def test_a_teacher_of_the_other_task_and_a_dead_url_are_refused(
        synthetic: dict[str, Any], teacher_checkpoint: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    labeled = synthetic["labeled"]
    assert _loop(labeled, tmp_path / "run", labeled.boxes_json, "--teacher",
                 str(teacher_checkpoint)) == 2
    assert "is a keypoints model; the labeled file is boxes" in capsys.readouterr().err
    # --url where no service answers: refused before any training.
    port = free_port()
    assert _loop(labeled, tmp_path / "run2", labeled.boxes_json, "--url",
                 f"http://127.0.0.1:{port}") == 2
    assert "no distill service answers" in capsys.readouterr().err
    assert not list((tmp_path / "run2").glob("*.pt"))


def test_a_preflight_hides_labels_and_measures_the_oracle(
        synthetic: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from distill.checkpoint import load_checkpoint

    labeled, out = synthetic["labeled"], tmp_path / "preflight"
    base = ["loop", "--labeled", str(labeled.boxes_json), "--images", str(labeled.images_dir),
            "--out", str(out), *TINY]
    assert main([*base, "--preflight", "0.5"]) == 0
    said = capsys.readouterr().out
    assert "preflight: the labels of 3 of the 6 training images are hidden" in said
    folder = out / "held-out"
    train, visible, hidden, test = (json.loads((folder / f"{n}.json").read_text())
                                    for n in ("train", "visible", "hidden", "test"))
    # The hidden images are training images, never test ones, and their folder holds them.
    assert {i["id"] for i in visible["images"]} | {i["id"] for i in hidden["images"]} == {
        i["id"] for i in train["images"]}
    assert not {i["id"] for i in visible["images"]} & {i["id"] for i in hidden["images"]}
    assert not {i["id"] for i in hidden["images"]} & {i["id"] for i in test["images"]}
    assert sorted(p.name for p in (folder / "hidden-images").iterdir()) == sorted(
        i["file_name"] for i in hidden["images"])
    # Every model learned from the visible labels only (the oracle from the hidden ones
    # too, as its pseudo-labeled set), and calibrates from their statistics.
    for model in ("teacher", "baseline", "student", "oracle"):
        card, _, _ = load_checkpoint(out / f"{model}.pt")
        assert card.labeled_stats is not None and card.labeled_stats.images == 3, model
        assert card.provenance["training"]["train_json"].endswith("visible.json"), model
    report = json.loads((out / "report.json").read_text())
    assert list(report["rows"]) == ["teacher", "baseline", "student", "oracle"]
    quality = report["pseudo_quality"]["pseudo"]["bbox"]
    assert 0 <= quality["precision50"] <= 1 and 0 <= quality["recall50"] <= 1
    verdict = report["preflight"]
    assert verdict["precision50"] == quality["precision50"]
    md = (out / "report" / "report.md").read_text()
    assert "| oracle (true labels) |" in md
    assert "The oracle (the hidden images with their true labels) is" in md
    # Another share in the same folder would mix models of two splits: refused.
    assert main([*base, "--preflight", "0.25"]) == 2
    assert "other settings (preflight: 0.5 -> 0.25)" in capsys.readouterr().err
    # A teacher or unlabeled folder from elsewhere has seen, or is not, the hidden images.
    assert main([*base, "--preflight", "0.5", "--unlabeled", str(_unlabeled(labeled))]) == 2
    assert "not with --unlabeled" in capsys.readouterr().err
    assert main([*base[:-len(TINY)], "--out", str(tmp_path / "none"), *TINY]) == 2
    assert "--unlabeled is required" in capsys.readouterr().err
