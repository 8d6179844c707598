"""The Label Studio tests' fixtures: one Label Studio server, one service stack (a box
and a keypoint teacher, one worker) and the images, package-scoped: every file of
``tests/labelstudio`` uses them, started once, in file order (the later files count the
stack's jobs that the earlier ones left)."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.conftest import ServiceStack, free_port, stop_process, wait_for
from tests.helpers import make_teacher
from tests.labelstudio.server import CALIBRATE_MIN, LABEL_STUDIO, TOKEN, LabelStudioServer
from tests.toolvenv import tool_python


@pytest.fixture(scope="package")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LabelStudioServer]:
    python = tool_python("labelstudio", LABEL_STUDIO)
    root = tmp_path_factory.mktemp("labelstudio")
    (root / "files").mkdir()
    port = free_port()
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(root / "data"),
           "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
           "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(root / "files"),
           # the service is on 127.0.0.1: Label Studio must be allowed to call it
           "ML_BLOCK_LOCAL_IP": "false", "SSRF_PROTECTION_ENABLED": "false"}
    with open(root / "ls.log", "wb") as log:
        proc = subprocess.Popen(
            [str(python.parent / "label-studio"), "start", "--no-browser", "--internal-host",
             "127.0.0.1", "--port", str(port), "--data-dir", str(root / "data"),
             "--username", "admin@example.com", "--password", "distill-secret",
             "--user-token", TOKEN, "--enable-legacy-api-token"],
            cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    wait_for(lambda: proc.poll() is None and httpx.get(f"{url}/health").is_success, 400,
             f"Label Studio to start (log: {root / 'ls.log'})", interval=1)
    yield LabelStudioServer(url, root / "files")
    stop_process(proc)


@pytest.fixture(scope="package")
def stack(make_stack: Callable[..., ServiceStack], teacher_checkpoint: Path,
          synthetic: dict[str, Any], label_studio: LabelStudioServer,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceStack]:
    root = tmp_path_factory.mktemp("ls-teachers")
    make_teacher(root / "boxes.pt", synthetic["labeled"].boxes_json, task="boxes")
    s = make_stack(api=True, workers=0, one_teacher=False,
                   teachers=f"person={teacher_checkpoint},shapes={root / 'boxes.pt'}",
                   label_studio_url=label_studio.url, label_studio_api_key=TOKEN,
                   calibrate_min_images=CALIBRATE_MIN)
    s.start_worker()
    yield s
    s.close()


@pytest.fixture(scope="package")
def images(synthetic: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """40 distinct images: the synthetic ones and their mirror images."""
    out = tmp_path_factory.mktemp("ls-images")
    found = sorted(synthetic["labeled"].images_dir.glob("*.png")) + sorted(
        synthetic["unlabeled"].images_dir.glob("*.png"))
    for p in found:
        shutil.copy(p, out / p.name)
        Image.open(p).transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(out / f"m_{p.name}")
    return sorted(out.glob("*.png"))
