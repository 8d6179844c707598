"""``distill client annotate`` against the live service: batches, dataset result, resuming."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from pycocotools.coco import COCO

from distill.annotate import annotate_folder
from distill.options import InferenceOptions
from distill.processes import free_port
from service.client import ClientOptions, annotate_folder_remote
from tests.conftest import API_KEYS, REPO, ServiceStack


def _client(stack: ServiceStack, folder: Path, out: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILL_")}
    return subprocess.run(
        [sys.executable, "-m", "distill.cli", "client", "annotate", str(folder), "--url",
         stack.url, "--key", API_KEYS[0], "--out", str(out), "--batch-size", "2", "--quiet",
         "--poll", "0.2"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def _job_count(stack: ServiceStack) -> int:
    with stack.client() as c:
        return len(c.get("/jobs", params={"limit": 1000}).json()["jobs"])


def _labels(coco: dict[str, Any]) -> tuple[Any, ...]:
    return coco["images"], coco["annotations"], coco["info"]["thresholds"]


def test_client_batches_downloads_and_resumes(live_service: ServiceStack,
                                              teacher_checkpoint: Path,
                                              unlabeled_images: list[Path],
                                              tmp_path: Path) -> None:
    folder = tmp_path / "images"
    folder.mkdir()
    for p in unlabeled_images[:5]:
        shutil.copy(p, folder / p.name)
    (folder / "notes.txt").write_text("not an image, not uploaded")
    out = tmp_path / "pseudo.json"
    before = _job_count(live_service)

    run = _client(live_service, folder, out)
    assert run.returncode == 0, run.stderr
    assert "5 images" in run.stdout
    coco = json.loads(out.read_text())
    COCO(str(out))
    state_file = out.with_name(out.name + ".state.json")
    state = json.loads(state_file.read_text())
    assert [len(b["files"]) for b in state["batches"]] == [2, 2, 1]
    assert _job_count(live_service) == before + 3
    # Three batches, one dataset, one calibration: the same file as annotating locally.
    local_out = tmp_path / "local.json"
    annotate_folder(teacher_checkpoint, folder, local_out,
                    options=InferenceOptions(tta="identity", batch_size=2), progress=False)
    assert _labels(coco) == _labels(json.loads(local_out.read_text()))

    # Interrupted before the last batch was recorded: a rerun submits only that batch.
    # (Reruns call the client in-process: the command line was covered above.)
    state["batches"] = state["batches"][:2]
    state_file.write_text(json.dumps(state))
    out.unlink()
    options = ClientOptions(batch_size=2, poll_s=0.2, progress=False)
    annotate_folder_remote(live_service.url, API_KEYS[0], folder, out, options)
    assert _job_count(live_service) == before + 4
    assert _labels(json.loads(out.read_text())) == _labels(coco)  # no image twice

    # Everything submitted: a rerun only downloads again.
    annotate_folder_remote(live_service.url, API_KEYS[0], folder, out, options)
    assert _job_count(live_service) == before + 4


def test_client_says_when_the_service_cannot_be_reached(tmp_path: Path,
                                                        unlabeled_images: list[Path]) -> None:
    """Connection refused: one line naming the URL and how to resume, exit 2, no traceback."""
    folder = tmp_path / "images"
    folder.mkdir()
    shutil.copy(unlabeled_images[0], folder / unlabeled_images[0].name)
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILL_")}
    done = subprocess.run(
        [sys.executable, "-m", "distill.cli", "client", "annotate", str(folder), "--url", url,
         "--out", str(tmp_path / "out.json"), "--quiet"], cwd=REPO, env=env,
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert f"cannot reach the service at {url}" in done.stderr
    assert "rerun the same command" in done.stderr
    assert "Traceback" not in done.stderr
