"""The COCO exports imported by datumaro, the reader behind CVAT's COCO importers.

datumaro lives in its own virtual environment, ``.venv-datumaro`` at the repository root
(gitignored), made on first use and reused while its stamp names the same requirement, as
``tests/contract/schemathesis.sh`` makes its own. Only when the package index cannot be
reached is the test skipped, saying so; a failed install with a reachable index fails it.
The files are real pseudo-label files (``tests/pseudo_files.py``) exported through the
format table, laid out as datumaro expects (``annotations/<task>_default.json`` beside an
``images/`` folder), and read whole and streaming (CVAT's reader) by
``tests/contract/datumaro_import.py``.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from distill.coco import objects
from distill.exports.formats import write_export
from tests.pseudo_files import FILE_NAMES, K, pseudo_labels

ROOT = Path(__file__).resolve().parents[1]
VENV = ROOT / ".venv-datumaro"
# The newest release, with wheels for Python 3.10-3.14; CVAT pins its own fork of it.
REQUIREMENT = "datumaro==1.13.12"
SCRIPT = ROOT / "tests" / "contract" / "datumaro_import.py"
TASKS = {"keypoints": "person_keypoints", "boxes": "instances"}  # file name prefixes


def _datumaro_python() -> Path:
    """The venv's interpreter, after making the venv if its stamp is missing or stale."""
    python, stamp = VENV / "bin" / "python", VENV / "distill-requirement.txt"
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(ROOT / ".venv-datumaro.lock", "w") as lock:  # one maker at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists() and stamp.is_file() and stamp.read_text() == REQUIREMENT:
            return python
        shutil.rmtree(VENV, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
        pip = subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                              "--disable-pip-version-check", REQUIREMENT],
                             capture_output=True, text=True, timeout=1200)
        if pip.returncode != 0:
            probe = subprocess.run([str(python), "-m", "pip", "index", "versions", "datumaro"],
                                   capture_output=True, text=True, timeout=300)
            if probe.returncode != 0:
                last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
                pytest.skip(f"the package index cannot be reached, so {REQUIREMENT} cannot be "
                            f"installed into {VENV.name}: {last}")
            pytest.fail(f"pip install {REQUIREMENT} failed with the index reachable:\n"
                        f"{pip.stdout[-2000:]}\n{pip.stderr[-4000:]}")
        stamp.write_text(REQUIREMENT)
    return python


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Per task and export format: the COCO dict written and datumaro's reading of it."""
    python = _datumaro_python()
    written: dict[str, dict[str, Any]] = {}
    args = []
    for task, prefix in TASKS.items():
        coco = pseudo_labels(task)
        for fmt in ("coco", "cvat"):
            root = tmp_path_factory.mktemp(f"{task}-{fmt}")
            (root / "images").mkdir()
            out = write_export(coco, fmt, root / "annotations" / f"{prefix}_default.json")
            written[f"{task}/{fmt}"] = json.loads(out.read_text(encoding="utf-8"))
            args.append(f"{out}:coco_{prefix}")
    run = subprocess.run([str(python), str(SCRIPT), *args], capture_output=True, text=True,
                         timeout=300, cwd=ROOT)
    assert run.returncode == 0, f"datumaro refused a file:\n{run.stderr[-6000:]}"
    read = json.loads(run.stdout)["files"]
    return {key: (written[key], read[arg]) for key, arg in zip(written, args, strict=True)}


def _ids() -> list[str]:
    return sorted(name.rsplit(".", 1)[0] for name in FILE_NAMES)


@pytest.mark.parametrize("task", list(TASKS))
def test_cvat_export_imports_as_cvat_reads_it(files: dict[str, Any], task: str) -> None:
    coco, read = files[f"{task}/cvat"]
    kept = objects(pseudo_labels(task))
    assert [a["id"] for a in coco["annotations"]] == [a["id"] for a in kept]
    for mode in ("whole", "stream"):
        got = read[mode]
        assert got["warnings"] == [], mode
        assert got["items"] == len(FILE_NAMES) and got["ids"] == _ids(), mode
        assert got["crowd"] == 0, mode  # no ignore region arrives as an object
        assert got["annotations"].get("bbox") == len(kept), mode
        if task == "keypoints":
            assert got["annotations"].get("points") == len(kept), mode
        else:
            assert set(got["annotations"]) == {"bbox"}, mode


@pytest.mark.parametrize("task", list(TASKS))
def test_plain_coco_export_imports_too_with_ignore_regions_as_crowd_boxes(
        files: dict[str, Any], task: str) -> None:
    """Why the cvat export leaves ignore regions out: datumaro reads them as ordinary boxes
    that merely carry ``is_crowd``, an attribute CVAT drops unless a label declares it."""
    coco, read = files[f"{task}/coco"]
    ignore = [a for a in coco["annotations"] if a["iscrowd"]]
    assert ignore and coco["licenses"] == []
    assert all(a["segmentation"] == [] for a in coco["annotations"])
    for mode in ("whole", "stream"):
        got = read[mode]
        assert got["warnings"] == [], mode
        assert got["items"] == len(FILE_NAMES), mode
        assert got["crowd"] == len(ignore) * (2 if task == "keypoints" else 1), mode
        assert got["annotations"].get("bbox") == len(coco["annotations"]), mode
    if task == "keypoints":
        assert all(len(a["keypoints"]) == 3 * K for a in coco["annotations"])
