"""``training.preflight``: which labels a preflight hides (and that no other model sees
them), the hidden images' flat folder, reruns, and the verdict's arithmetic and words.
The whole loop with ``--preflight`` runs in tests/test_loop.py."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from distill.errors import ConfigError, DataError
from training.preflight import HIDDEN_IMAGES, hide, verdict, verdict_lines


def _labeled(root: Path, names: list[str], ids: list[Any]) -> Path:
    """A labeled COCO file of one box per image, the images written under ``root/img``."""
    for name in names:
        path = root / "img" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (16, 16)).save(path)
    coco = {"images": [{"id": i, "file_name": n, "width": 16, "height": 16}
                       for i, n in zip(ids, names, strict=True)],
            "annotations": [{"id": k + 1, "image_id": i, "category_id": 1,
                             "bbox": [1, 1, 5, 5], "area": 25, "iscrowd": 0}
                            for k, i in enumerate(ids)],
            "categories": [{"id": 1, "name": "thing"}]}
    path = root / "labeled.json"
    path.write_text(json.dumps(coco))
    return path


@pytest.mark.parametrize("ids", [[10, 11, 12, 13, 14, 15], ["a", "b", "c", "d", "e", "f"]])
def test_hidden_labels_reach_only_the_hidden_file(tmp_path: Path, ids: list[Any]) -> None:
    names = ["x.jpg", "sub/y.png", "sub/deeper/z.jpg", ".dot.jpg", "w.JPG", "v.jpeg"]
    labeled = _labeled(tmp_path, names, ids)
    visible, hidden, info = hide(labeled, tmp_path / "img", 0.5, 0, tmp_path / "held-out")
    seen = json.loads(visible.json_for("boxes").read_text())
    truth = json.loads(hidden.json_for("boxes").read_text())
    assert info["hidden"] == 3 == len(truth["images"]) and len(seen["images"]) == 3
    shown_ids = {im["id"] for im in seen["images"]}
    hidden_ids = {im["id"] for im in truth["images"]}
    assert not shown_ids & hidden_ids and shown_ids | hidden_ids == set(ids)
    assert {a["image_id"] for a in seen["annotations"]} == shown_ids
    assert {a["image_id"] for a in truth["annotations"]} == hidden_ids
    # The hidden folder holds exactly the hidden images, under the hidden file's names,
    # none of them hidden from a folder listing by a leading dot.
    folder = tmp_path / "held-out" / HIDDEN_IMAGES
    assert hidden.images_dir == folder
    listed = sorted(p.name for p in folder.iterdir())
    assert listed == sorted(im["file_name"] for im in truth["images"])
    assert not any(n.startswith(".") for n in listed)
    for im in truth["images"]:
        original = next(n for i, n in zip(ids, names, strict=True) if i == im["id"])
        assert (folder / im["file_name"]).read_bytes() == (
            tmp_path / "img" / original).read_bytes()


def test_a_rerun_hides_the_same_images_and_another_share_is_refused(tmp_path: Path) -> None:
    labeled = _labeled(tmp_path, [f"{k}.jpg" for k in range(8)], list(range(8)))
    out = tmp_path / "held-out"
    _, first, _ = hide(labeled, tmp_path / "img", 0.5, 3, out)
    stray = out / HIDDEN_IMAGES / "stray.jpg"
    stray.write_bytes(b"not one of them")
    _, again, _ = hide(labeled, tmp_path / "img", 0.5, 3, out)
    assert again.json_for("boxes").read_text() == first.json_for("boxes").read_text()
    assert not stray.exists()
    for share, seed in ((0.25, 3), (0.5, 4)):
        with pytest.raises(ConfigError, match="hid other images"):
            hide(labeled, tmp_path / "img", share, seed, out)


def test_linked_image_folders_work_and_paths_outside_are_refused(tmp_path: Path) -> None:
    store = tmp_path / "store"
    labeled = _labeled(store, [f"{k}.jpg" for k in range(4)], list(range(4)))
    (tmp_path / "linked").mkdir()
    for k in range(4):  # a folder of links into a data store
        os.symlink(store / "img" / f"{k}.jpg", tmp_path / "linked" / f"{k}.jpg")
    _, hidden, _ = hide(labeled, tmp_path / "linked", 0.5, 0, tmp_path / "a")
    assert len(list(hidden.images_dir.iterdir())) == 2
    for bad in ("../outside.jpg", "/etc/passwd", "missing.jpg"):
        coco = json.loads(labeled.read_text())
        coco["images"] = [{**im, "file_name": bad} for im in coco["images"]]
        path = tmp_path / "bad.json"
        path.write_text(json.dumps(coco))
        with pytest.raises(DataError, match="is not a file inside"):
            hide(path, store / "img", 0.5, 0, tmp_path / f"b{abs(hash(bad))}")


def _rows(**ap: float) -> dict[str, dict[str, Any]]:
    return {name: {"single": {"bbox": {"AP": value}}} for name, value in ap.items()}


def test_the_verdict_in_numbers_and_words() -> None:
    quality = {"pseudo": {"bbox": {"precision50": 0.8123, "recall50": 0.7}}}
    v = verdict(_rows(baseline=40.0, student=43.0, oracle=46.0), "bbox", quality)
    assert v == {"oracle_gain": 6.0, "oracle_gain_tta": None, "student_gain": 3.0,
                 "student_share": 0.5, "precision50": 0.8123, "recall50": 0.7}
    text = "\n".join(verdict_lines(v, "bbox"))
    assert "is +6.0 box AP" in text and "+3.0 box AP against the baseline: 50% of" in text
    assert "precision 0.81, recall 0.70" in text
    # An oracle gain within noise gives no share; a student below the baseline no share.
    tiny = verdict(_rows(baseline=40.0, student=42.0, oracle=40.3), "bbox", quality)
    assert tiny["student_share"] is None and tiny["oracle_gain"] == 0.3
    below = verdict(_rows(baseline=40.0, student=38.0, oracle=45.0), "bbox", quality)
    assert "is -2.0 box AP against the baseline." in "\n".join(verdict_lines(below, "bbox"))
    # An oracle that does not beat the baseline says so, and the student still shows.
    none = verdict(_rows(baseline=40.0, student=40.5, oracle=39.0), "bbox", quality)
    words = "\n".join(verdict_lines(none, "bbox"))
    assert "do not beat the baseline" in words and "+0.5 box AP" in words
    assert "disagree" not in words
    # TTA on both sides says otherwise: the verdict says the two disagree.
    rows = _rows(baseline=40.0, student=39.0, oracle=39.3)
    for name, tta in (("baseline", 42.0), ("student", 41.2), ("oracle", 47.2)):
        rows[name]["tta"] = {"bbox": {"AP": tta}}
    mixed = verdict(rows, "bbox", quality)
    assert mixed["oracle_gain"] == -0.7 and mixed["oracle_gain_tta"] == 5.2
    assert "single pass and TTA disagree" in "\n".join(verdict_lines(mixed, "bbox"))
