"""``distill loop --preflight S``: will a student pay on this data, before any unlabeled
image is spent on it?

The loop runs on the labeled set alone. A share ``S`` of its training images (the
held-out test split stays out) has its labels hidden and plays the unlabeled folder:
the teacher and the equal-budget baseline train on the rest, the teacher pseudo-labels
the hidden images, a student learns from both. Because the hidden images have true
labels, two more answers come for free, the two the README asks a user to measure
before spending compute:

- how good the pseudo-labels are (precision and recall at IoU / OKS 0.5 against the
  hidden truth, :func:`training.pseudo_quality.pseudo_label_quality`), and
- the oracle: a student taught the hidden images' true labels, the most any
  pseudo-labels of those images could give. If the oracle does not beat the baseline,
  no pseudo-labels will; the student's share of the oracle's gain says how much of it
  the teacher's labels deliver.

With fewer labels than the real run (the teacher sees ``1 - S`` of them), a preflight
errs on the student's side: distillation pays more where labels are scarcer.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path
from typing import Any

from distill.coco import load_coco
from distill.data import SplitFiles
from distill.errors import ConfigError, DataError
from distill.fileio import write_json_atomic

HIDDEN_IMAGES = "hidden-images"


def hide(train_json: Path, images: Path, share: float, seed: int, folder: Path
         ) -> tuple[SplitFiles, SplitFiles, dict[str, Any]]:
    """Splits the labeled training file into the visible part and the hidden one (drawn by
    ``seed``), and links the hidden images into a flat folder of their own, the
    "unlabeled" folder the loop annotates. Returns the visible split, the hidden split
    (its file holds the truth, named as in that folder) and how it was made."""
    coco = load_coco(train_json)
    ids = sorted(int(im["id"]) for im in coco["images"])
    n_hidden = round(share * len(ids))
    if not 0 < n_hidden < len(ids):
        raise ConfigError(f"--preflight {share:g} of the {len(ids)} labeled training images "
                          "leaves no image on one side; use more labeled images or another "
                          "share")
    hidden = set(random.Random(seed + 1).sample(ids, n_hidden))
    folder.mkdir(parents=True, exist_ok=True)
    visible_json, hidden_json = folder / "visible.json", folder / "hidden.json"
    flat = _flat_names(coco, hidden)
    if not (visible_json.is_file() and hidden_json.is_file()):
        write_json_atomic(visible_json, {
            **coco, "images": [im for im in coco["images"] if im["id"] not in hidden],
            "annotations": [a for a in coco["annotations"] if a["image_id"] not in hidden]})
        write_json_atomic(hidden_json, {
            **coco, "images": [{**im, "file_name": flat[im["id"]]} for im in coco["images"]
                               if im["id"] in hidden],
            "annotations": [a for a in coco["annotations"] if a["image_id"] in hidden]})
    _link(coco, hidden, flat, images, folder / HIDDEN_IMAGES)
    info = {"share": share, "hidden": n_hidden, "visible": len(ids) - n_hidden,
            "seed": seed + 1}
    return (SplitFiles(images, visible_json, visible_json),
            SplitFiles(folder / HIDDEN_IMAGES, hidden_json, hidden_json), info)


def _flat_names(coco: dict[str, Any], hidden: set[int]) -> dict[int, str]:
    """A name per hidden image directly inside the hidden folder (``a/b.jpg`` ->
    ``a__b.jpg``), checked unique."""
    flat = {int(im["id"]): str(im["file_name"]).replace("\\", "/").strip("/").replace("/", "__")
            for im in coco["images"] if int(im["id"]) in hidden}
    if len(set(flat.values())) < len(flat):
        raise DataError("two hidden images would share a name in the preflight's folder; "
                        "rename them in the labeled file")
    return flat


def _link(coco: dict[str, Any], hidden: set[int], flat: dict[int, str], images: Path,
          target: Path) -> None:
    """Each hidden image in ``target`` under its flat name: a symbolic link to the labeled
    file (a copy where links cannot be made), which must lie inside ``images``."""
    target.mkdir(parents=True, exist_ok=True)
    root = images.resolve()
    for im in coco["images"]:
        if int(im["id"]) not in hidden:
            continue
        source = (root / str(im["file_name"])).resolve()
        if not source.is_relative_to(root) or not source.is_file():
            raise DataError(f"labeled image {im['file_name']!r} is not a file inside "
                            f"{images}")
        dest = target / flat[int(im["id"])]
        if dest.exists():
            continue
        try:
            os.symlink(source, dest)
        except OSError:
            shutil.copyfile(source, dest)


def verdict(rows: dict[str, dict[str, Any]], metric: str,
            quality: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """The preflight's answer from the held-out rows (single pass): the oracle's gain over
    the baseline, the student's, the student's share of the oracle's, and the round-1
    pseudo-labels' precision and recall against the hidden truth."""
    ap = {name: row["single"][metric]["AP"] for name, row in rows.items()}
    oracle_gain = round(ap["oracle"] - ap["baseline"], 1) + 0.0
    student_gain = round(ap["student"] - ap["baseline"], 1) + 0.0
    first = quality["pseudo"][metric]
    return {"oracle_gain": oracle_gain, "student_gain": student_gain,
            "student_share": (round(student_gain / oracle_gain, 2)
                              if oracle_gain > 0 else None),
            "precision50": first["precision50"], "recall50": first["recall50"]}


def verdict_lines(v: dict[str, Any], metric: str) -> list[str]:
    """The verdict in words, for the report."""
    unit = "keypoint AP" if metric == "keypoints" else "box AP"
    lines = [f"- The oracle (the hidden images with their true labels) gains "
             f"{v['oracle_gain']:+.1f} {unit} over the equal-budget baseline: the most any "
             "pseudo-labels of these images could give."]
    if v["oracle_gain"] <= 0:
        lines.append("- It does not beat the baseline: more images of this kind would not "
                     "help at this budget, so no pseudo-labels will. Train longer or on "
                     "other images first.")
    else:
        share = v["student_share"]
        lines.append(f"- The student gains {v['student_gain']:+.1f} {unit}, "
                     f"{100 * share:.0f}% of the oracle's gain." if share is not None
                     else f"- The student gains {v['student_gain']:+.1f} {unit}.")
    lines.append(f"- Round-1 pseudo-labels against the hidden truth: precision "
                 f"{v['precision50']:.2f}, recall {v['recall50']:.2f} (at IoU / OKS 0.5).")
    lines.append("- One seed: runs of the same settings with another --seed differ by a few "
                 "AP (docs/sweep/SWEEP.md), so run a second seed before trusting a small "
                 "difference.")
    return lines
