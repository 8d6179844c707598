"""The README's curl examples, run as written against a live service (real curl, uvicorn,
worker and Redis), so the documentation cannot drift from the API."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from PIL import Image

from tests.conftest import API_KEYS, ServiceStack

README = Path(__file__).resolve().parents[1] / "README.md"

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")


def _curl_examples() -> list[str]:
    """Commands of the README's HTTP API block, continuation lines joined."""
    text = README.read_text()
    block = text[text.index("HTTP API"):]
    block = block[block.index("```sh") + 5:block.index("```", block.index("```sh") + 5)]
    joined = re.sub(r"\\\n\s*", " ", block)
    lines = [ln.split(" #")[0].strip() for ln in joined.splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def _run(command: str, env: dict[str, str], cwd: Path) -> list[tuple[int, str]]:
    """Runs one README line; returns (HTTP status, body) of each curl in it."""
    marked = command.replace("curl -s", "curl -s -w '\\n@@%{http_code}@@\\n'")
    proc = subprocess.run(["bash", "-c", marked], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, f"{command}\n{proc.stderr}"
    parts = re.split(r"\n@@(\d{3})@@\n", proc.stdout)
    return [(int(code), body) for body, code in zip(parts[0::2], parts[1::2], strict=False)]


def test_readme_curl_examples_work(live_service: ServiceStack, tmp_path: Path,
                                   unlabeled_images: list[Path]) -> None:
    examples = _curl_examples()
    assert examples[0].startswith("KEY=") and len(examples) >= 8
    Image.open(unlabeled_images[0]).save(tmp_path / "a.png")
    Image.open(unlabeled_images[1]).convert("RGB").save(tmp_path / "b.jpg")
    env = {**os.environ, "KEY": API_KEYS[0], "URL": live_service.url}
    upload, *rest = examples[1:]
    [(code, body)] = _run(upload, env, tmp_path)
    assert code == 202, body
    job = json.loads(body)["id"]
    live_service.wait_job(job)
    env["JOB"] = job
    seen = []
    for command in rest:
        for code, body in _run(command, env, tmp_path):
            assert 200 <= code < 300, f"{command} -> {code}: {body}"
            seen.append(json.loads(body))
    coco = next(b for b in seen if "annotations" in b and "images" in b)
    assert {img["file_name"] for img in coco["images"]} == {"a.png", "b.jpg"}
