"""Several teachers in one service, on the real stack: real Redis, a real API, one real
worker process per teacher. Also: the API process never loads torch."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from distill.cardfile import file_sha256, read_card
from distill.options import TTA_PRESETS
from distill.tta.transforms import parse_preset
from jobs.settings import DATASET_PATTERN
from tests.conftest import API_KEYS, ServiceStack, wait_for
from tests.helpers import make_teacher


@pytest.fixture(scope="module")
def box_teacher(synthetic: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight ``tiny`` box teacher (its own file: a test replaces it)."""
    path = tmp_path_factory.mktemp("box-teacher") / "det.pt"
    make_teacher(path, synthetic["labeled"].boxes_json, task="boxes", seed=0)
    return path


def _teachers(stack: ServiceStack) -> dict[str, dict[str, Any]]:
    with stack.client() as c:
        return {t["name"]: t for t in c.get("/teachers").json()["teachers"]}


def _post(stack: ServiceStack, images: list[Path], **form: str) -> httpx.Response:
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in images]
    with stack.client() as c:
        return c.post("/annotate", files=files, data=form)


def _annotations(stack: ServiceStack, path: str) -> httpx.Response:
    with stack.client() as c:
        return c.get(path)


def test_each_job_runs_on_its_teachers_worker(
        make_stack: Callable[..., ServiceStack], teacher_checkpoint: Path, box_teacher: Path,
        unlabeled_images: list[Path]) -> None:
    stack = make_stack(api=True, workers=0, one_teacher=False,
                       teachers=f"person={teacher_checkpoint},vehicles={box_teacher}")
    stack.start_worker(args=("--teacher", "person"))
    listed = _teachers(stack)
    assert set(listed) == {"person", "vehicles"}
    assert listed["person"]["task"] == "keypoints" and listed["vehicles"]["task"] == "boxes"
    assert len(listed["person"]["workers"]) == 1 and listed["vehicles"]["workers"] == []
    assert listed["vehicles"]["sha256"] == file_sha256(box_teacher)

    # What the upload form offers, from the one preset table: each teacher's presets under
    # the service's limits (the paper's 1200 px is refused for a 416 px teacher, saying why).
    assert "standard" in listed["person"]["presets"] and "paper" not in listed["person"]["presets"]
    assert "1200 px" in listed["person"]["refused_presets"]["paper"]
    with stack.client() as c:
        options = c.get("/options").json()
    assert [p["name"] for p in options["presets"]] == list(TTA_PRESETS)
    assert {p["name"]: p["passes"] for p in options["presets"]} == {
        name: len(parse_preset(name, 800, 1333)) for name in TTA_PRESETS}
    assert options["default_preset"] == "identity" and options["max_files"] == 64
    assert options["dataset_pattern"] == DATASET_PATTERN

    # Several teachers: a job must name one, and only a registered one.
    refused = _post(stack, unlabeled_images[:1])
    assert refused.status_code == 422 and "person, vehicles" in refused.text
    unknown = _post(stack, unlabeled_images[:1], teacher="cats")
    assert unknown.status_code == 422 and "unknown teacher 'cats'" in unknown.text

    images = unlabeled_images[:3]
    person = stack.submit(images, teacher="person", dataset="mixed")
    vehicles = stack.submit(images, teacher="vehicles", dataset="mixed")
    assert (person["teacher"], vehicles["teacher"]) == ("person", "vehicles")
    stack.wait_job(person["id"])
    # No worker serves "vehicles" yet: the job waits, and says for what.
    waiting = stack.job(vehicles["id"])
    assert waiting["status"] == "queued" and "vehicles" in waiting["waiting_for"]

    stack.start_worker(args=("--teacher", "vehicles"))
    stack.wait_job(vehicles["id"])
    workers = {name: [w["worker"] for w in t["workers"]] for name, t in _teachers(stack).items()}
    for job, teacher, checkpoint in ((person, "person", teacher_checkpoint),
                                     (vehicles, "vehicles", box_teacher)):
        state = json.loads((stack.data_dir / "jobs" / job["id"] / "state.json").read_text())
        assert [state["worker"]] == workers[teacher]  # run by that teacher's own worker
        coco = _annotations(stack, f"/jobs/{job['id']}/annotations").json()
        assert coco["categories"] == read_card(checkpoint).categories
        assert coco["info"]["teacher"]["sha256"] == file_sha256(checkpoint)
        assert coco["info"]["teacher_name"] == teacher
        assert stack.job(job["id"])["teacher_sha256"] == file_sha256(checkpoint)

    # A dataset whose batches ran with different teachers cannot be calibrated as one.
    mixed = _annotations(stack, "/datasets/mixed/annotations")
    assert mixed.status_code == 409 and "different teachers" in mixed.text
    with stack.client() as c:
        datasets = c.get("/datasets").json()["datasets"]
        other = c.get("/datasets", headers={"Authorization": f"Bearer {API_KEYS[1]}"}).json()
    assert datasets == [{"name": "mixed", "jobs": 2, "statuses": {"finished": 2},
                         "images": {"done": 6, "failed": 0, "total": 6}}]
    assert other == {"datasets": []}


def test_a_replaced_checkpoint_serves_new_jobs_and_old_jobs_keep_their_card(
        make_stack: Callable[..., ServiceStack], box_teacher: Path, synthetic: dict[str, Any],
        unlabeled_images: list[Path], tmp_path: Path) -> None:
    served = tmp_path / "vehicles.pt"
    shutil.copy(box_teacher, served)
    stack = make_stack(api=True, workers=0, one_teacher=False, teachers=f"vehicles={served}")
    stack.start_worker()  # no --teacher: every registered teacher
    old_sha = file_sha256(served)
    old = stack.submit(unlabeled_images[:2])  # the only teacher is the default
    stack.wait_job(old["id"])

    # Replace the file under the running service (atomically, as a deploy would).
    replacement = tmp_path / "new.pt"
    make_teacher(replacement, synthetic["labeled"].boxes_json, task="boxes", seed=1)
    os.replace(replacement, served)
    new_sha = file_sha256(served)
    assert new_sha != old_sha
    new = stack.submit(unlabeled_images[:2])
    stack.wait_job(new["id"])
    assert stack.job(new["id"])["teacher_sha256"] == new_sha
    assert stack.job(old["id"])["teacher_sha256"] == old_sha
    wait_for(lambda: _teachers(stack)["vehicles"]["workers"][0]["sha256"] == new_sha, 10,
             "the worker to announce the new checkpoint")
    # Re-selection of the old job uses the card it ran with, not today's file.
    again = _annotations(stack, f"/jobs/{old['id']}/annotations?score_thresh=0.05").json()
    assert again["info"]["teacher"]["sha256"] == old_sha
    fresh = _annotations(stack, f"/jobs/{new['id']}/annotations?score_thresh=0.05").json()
    assert fresh["info"]["teacher"]["sha256"] == new_sha


def _mapped_libraries(pid: int) -> set[str]:
    with open(f"/proc/{pid}/maps", encoding="utf-8") as fh:
        return {Path(line.split()[-1]).name for line in fh if "/" in line}


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc (Linux)")
def test_the_api_process_never_loads_torch(make_stack: Callable[..., ServiceStack],
                                           unlabeled_images: list[Path]) -> None:
    """The API serves an upload, a job's re-selection and a dataset download without torch:
    the process never maps torch's shared libraries (a lazy ``import torch`` anywhere on
    those paths would)."""
    stack = make_stack(api=True, workers=1)
    accepted = stack.submit(unlabeled_images[:2], dataset="no-torch")
    stack.wait_job(accepted["id"])
    reselected = _annotations(stack, f"/jobs/{accepted['id']}/annotations?score_thresh=0.1")
    assert reselected.status_code == 200 and reselected.json()["info"]["selection"][
        "score_threshold"] == 0.1
    assert _annotations(stack, "/datasets/no-torch/annotations").status_code == 200
    assert stack.api is not None
    libraries = _mapped_libraries(stack.api.pid)
    assert libraries, "could not read the API's memory map"
    assert not [name for name in libraries if "torch" in name], sorted(libraries)
    # The worker, for contrast, does map it: the check can fail.
    assert [name for name in _mapped_libraries(stack.workers[0].pid) if "libtorch" in name]
