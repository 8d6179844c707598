"""The export format table, the cvat export and per-keypoint scores in Label Studio, on
real pseudo-label files (``tests/pseudo_files.py``); pycocotools reads what is written.

datumaro's reading of the COCO exports is in ``test_export_datumaro.py``.
"""

from __future__ import annotations

import argparse
import copy
import io
import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest
from pycocotools.coco import COCO

from distill.coco import objects
from distill.errors import DataError
from distill.export_cli import register
from distill.exports.coco import to_cvat
from distill.exports.formats import (
    EXPORT_FORMATS,
    ExportFormat,
    ExportOptions,
    export_format,
    write_export,
)
from distill.exports.labelstudio import to_labelstudio
from tests.pseudo_files import FILE_NAMES, K, pseudo_labels

README = Path(__file__).resolve().parents[1] / "README.md"
CVAT_KEYS = {"licenses", "info", "categories", "images", "annotations"}  # datumaro's stream


def _pycocotools(coco: dict[str, Any]) -> COCO:
    api = COCO()
    api.dataset = copy.deepcopy(coco)
    api.createIndex()
    return api


@pytest.mark.parametrize("task", ["keypoints", "boxes"])
def test_pseudo_label_file_has_licenses_and_segmentation_and_loads_in_pycocotools(
        task: str) -> None:
    coco = pseudo_labels(task)
    assert coco["licenses"] == [] and isinstance(coco["info"], dict)
    assert all(a["segmentation"] == [] for a in coco["annotations"])
    api = _pycocotools(coco)
    assert len(api.getImgIds()) == len(FILE_NAMES)
    assert len(api.getAnnIds(iscrowd=None)) == len(coco["annotations"])
    assert len(api.getAnnIds(iscrowd=False)) == len(objects(coco)) < len(coco["annotations"])


@pytest.mark.parametrize("task", ["keypoints", "boxes"])
def test_cvat_export_leaves_ignore_regions_out_and_adds_what_datumaro_requires(
        task: str) -> None:
    coco = pseudo_labels(task)
    before = copy.deepcopy(coco)
    cvat = to_cvat(coco)
    assert coco == before  # the training file is left as it is
    assert set(cvat) == CVAT_KEYS
    assert [a["id"] for a in cvat["annotations"]] == [a["id"] for a in objects(coco)]
    assert all(a["iscrowd"] == 0 and a["segmentation"] == [] for a in cvat["annotations"])
    assert cvat["info"] == coco["info"] and cvat["images"] == coco["images"]
    assert len(_pycocotools(cvat).getAnnIds()) == len(objects(coco))
    # A file from elsewhere: no licenses, info or segmentation, a skeleton-less category,
    # another top-level key; the export still has exactly what CVAT's reader accepts.
    bare = {k: v for k, v in copy.deepcopy(coco).items() if k not in ("licenses", "info")}
    bare["extra"] = {"note": "datumaro's stream reader refuses unknown keys"}
    for a in bare["annotations"]:
        del a["segmentation"]
    for c in bare["categories"]:
        c.pop("skeleton", None)
    fixed = to_cvat(bare)
    assert set(fixed) == CVAT_KEYS and fixed["licenses"] == [] and fixed["info"] == {}
    assert all(a["segmentation"] == [] for a in fixed["annotations"])
    assert all(c["skeleton"] == [] for c in fixed["categories"] if c.get("keypoints"))


def test_labelstudio_keypoints_carry_their_own_scores() -> None:
    coco = pseudo_labels("keypoints")
    kept = objects(coco)
    for task, img in zip(to_labelstudio(coco), coco["images"], strict=True):
        result = task["predictions"][0]["result"]
        boxes = {r["id"]: r for r in result if r["type"] == "rectanglelabels"}
        ann = next(a for a in kept if a["image_id"] == img["id"])
        own = ann["distill"]["keypoint_scores"]
        points = [r for r in result if r["type"] == "keypointlabels"]
        assert len(points) == ann["num_keypoints"] > 0
        for p in points:
            j = int(p["id"].rsplit("_kp", 1)[1])
            assert p["score"] == own[j] and ann["keypoints"][3 * j + 2] == 2
        assert {boxes[p["parentID"]]["score"] for p in points} == {ann["score"]}
        assert len({p["score"] for p in points}) > 1  # not one instance score for all
    # Without per-keypoint scores (a file from elsewhere) each takes the instance's.
    for a in coco["annotations"]:
        a.pop("distill", None)
    points = [r for t in to_labelstudio(coco) for r in t["predictions"][0]["result"]
              if r["type"] == "keypointlabels"]
    assert points and {p["score"] for p in points} == {kept[0]["score"]}


def test_malformed_keypoint_scores_are_a_data_error() -> None:
    coco = pseudo_labels("keypoints")
    objects(coco)[0]["distill"]["keypoint_scores"] = [0.5] * (K - 1)
    with pytest.raises(DataError, match="keypoint_scores"):
        to_labelstudio(coco)


@pytest.mark.parametrize("fmt", list(EXPORT_FORMATS))
def test_every_format_renders_what_its_media_type_says(fmt: str, tmp_path: Path) -> None:
    spec = export_format(fmt)
    assert spec.name == fmt and spec.help and spec.suffix.startswith(".")
    for task in ("keypoints", "boxes"):
        data = spec.render(pseudo_labels(task), ExportOptions())
        if spec.media_type == "application/json":
            json.loads(data)
        else:
            assert spec.media_type == "application/zip"
            assert zipfile.ZipFile(io.BytesIO(data)).namelist()
        out = write_export(pseudo_labels(task), fmt, tmp_path / f"{task}{spec.suffix}")
        assert out.read_bytes() == data
        if spec.companion is not None:
            companion = spec.companion.path_beside(out)
            assert companion.read_text(encoding="utf-8") == spec.companion.render(
                pseudo_labels(task))


def test_cli_choices_and_options_come_from_the_table() -> None:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="command", required=True)
    register(sub)
    export = sub.choices["export"]
    fmt = next(a for a in export._actions if a.dest == "format")
    assert list(fmt.choices or []) == list(EXPORT_FORMATS)
    assert all(name in (export.description or "") for name in EXPORT_FORMATS)
    with pytest.raises(ValueError, match="unknown options"):
        ExportFormat("x", lambda coco, _: b"", "text/plain", ".x", "x", frozenset({"nope"}))


def test_readme_documents_every_format() -> None:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("### Exports for labeling tools"):]
    section = section[:section.index("\n## ")]
    documented = set(re.findall(r"^- `([a-z]+)`:", section, flags=re.M))
    assert documented == set(EXPORT_FORMATS)
