"""The COCO exports imported by datumaro, the reader behind CVAT's COCO importers.

datumaro lives in its own virtual environment, ``.venv-datumaro`` (tests/toolvenv.py).
The files are real pseudo-label files (``tests/pseudo_files.py``) exported through the
format table, laid out as datumaro expects (``annotations/<task>_default.json`` beside an
``images/`` folder), and read whole and streaming (CVAT's reader) by
``tests/contract/datumaro_import.py``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from distill.coco import objects
from distill.exports.formats import write_export
from tests.pseudo_files import FILE_NAMES, K, pseudo_labels
from tests.toolvenv import tool_python

ROOT = Path(__file__).resolve().parents[1]
# The newest release, with wheels for Python 3.10-3.14; CVAT pins its own fork of it.
REQUIREMENT = "datumaro==1.13.12"
SCRIPT = ROOT / "tests" / "contract" / "datumaro_import.py"
TASKS = {"keypoints": "person_keypoints", "boxes": "instances"}  # file name prefixes


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Per task and export format: the COCO dict written and datumaro's reading of it."""
    python = tool_python("datumaro", [REQUIREMENT])
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
