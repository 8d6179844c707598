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
- the oracle: a student taught the hidden images' true labels, what those images would
  give labeled by hand (pseudo-labels of them usually give less; the sweep's students
  took 22-63% of it, per task and seed). If the oracle does not beat the baseline,
  pseudo-labels of such images are unlikely to; the student's share of the oracle's
  gain says how much of it the teacher's labels deliver.

With fewer labels than the real run (the teacher sees ``1 - S`` of them), a preflight
errs on the student's side: distillation pays more where labels are scarcer.
"""

from __future__ import annotations

import os
import random
import shutil
from pathlib import Path, PurePosixPath
from typing import Any

from distill.cardfile import file_sha256
from distill.coco import load_coco
from distill.data import SplitFiles
from distill.errors import ConfigError, DataError
from distill.fileio import read_json, write_json_atomic
from distill.images import IMAGE_SUFFIXES

HIDDEN_IMAGES = "hidden-images"
RECORD = "preflight.json"  # what was hidden, so that a rerun reuses exactly that


def hide(train_json: Path, images: Path, share: float, seed: int, folder: Path
         ) -> tuple[SplitFiles, SplitFiles, dict[str, Any]]:
    """Splits the labeled training file into the visible part and the hidden one (drawn by
    ``seed``), and links the hidden images into a flat folder of their own, the
    "unlabeled" folder the loop annotates. Returns the visible split, the hidden split
    (its file holds the truth, named as in that folder) and how it was made. A folder
    that hid something else (another share, seed or labeled file) is refused."""
    coco = load_coco(train_json)
    ids = sorted((im["id"] for im in coco["images"]), key=_id_order)  # as the file has them
    n_hidden = round(share * len(ids))
    if not 0 < n_hidden < len(ids):
        raise ConfigError(f"--preflight {share:g} of the {len(ids)} labeled training images "
                          "leaves no image on one side; use more labeled images or another "
                          "share")
    draw = _hiding_seed(seed)
    hidden = set(random.Random(draw).sample(ids, n_hidden))
    record = {"share": share, "seed": draw, "labeled_sha256": file_sha256(train_json),
              "hidden": sorted(hidden, key=_id_order)}
    folder.mkdir(parents=True, exist_ok=True)
    _claim(folder / RECORD, record)
    flat = _flat_names(coco, hidden, images)
    visible_json, hidden_json = folder / "visible.json", folder / "hidden.json"
    write_json_atomic(visible_json, {
        **coco, "images": [im for im in coco["images"] if im["id"] not in hidden],
        "annotations": [a for a in coco["annotations"] if a["image_id"] not in hidden]})
    write_json_atomic(hidden_json, {
        **coco, "images": [{**im, "file_name": flat[im["id"]][0]} for im in coco["images"]
                           if im["id"] in hidden],
        "annotations": [a for a in coco["annotations"] if a["image_id"] in hidden]})
    _link(dict(flat.values()), folder / HIDDEN_IMAGES)
    info = {"share": share, "hidden": n_hidden, "visible": len(ids) - n_hidden, "seed": draw}
    return (SplitFiles(images, visible_json, visible_json),
            SplitFiles(folder / HIDDEN_IMAGES, hidden_json, hidden_json), info)


def _hiding_seed(seed: int) -> int:
    """The draw of the hidden images: not the held-out split's own ``seed``, so that the
    two draws do not repeat each other."""
    return seed + 1


def _id_order(image_id: Any) -> tuple[bool, Any]:
    """Numbers in order, then strings (COCO ids are either)."""
    return isinstance(image_id, str), image_id


def _claim(path: Path, record: dict[str, Any]) -> None:
    """Records what is hidden, or refuses a folder that hid something else (its models
    were trained on that)."""
    if path.is_file():
        before = read_json(path, "the preflight's record")
        if before != record:
            raise ConfigError(f"{path.parent} hid other images (another --preflight share, "
                              "--seed or labeled file) for the models it holds; choose "
                              "another --out")
        return
    write_json_atomic(path, record, indent=1)


def _flat_names(coco: dict[str, Any], hidden: set[Any], images: Path
                ) -> dict[Any, tuple[str, Path]]:
    """Per hidden image id: its name in the flat hidden folder (a running number and the
    file's own name, so unique and never hidden by a leading dot) and the labeled file it
    links to, which must lie inside ``images`` (checked without following links)."""
    out: dict[Any, tuple[str, Path]] = {}
    for n, im in enumerate(i for i in coco["images"] if i["id"] in hidden):
        rel = PurePosixPath(str(im["file_name"]).replace("\\", "/"))
        source = images / rel
        if rel.is_absolute() or ".." in rel.parts or not source.is_file():
            raise DataError(f"labeled image {im['file_name']!r} is not a file inside {images}")
        if rel.suffix.lower() not in IMAGE_SUFFIXES:
            raise DataError(f"labeled image {im['file_name']!r}: the preflight labels only "
                            f"{', '.join(IMAGE_SUFFIXES)} files")
        out[im["id"]] = (f"{n:06d}_{rel.name}", source.absolute())
    return out


def _link(files: dict[str, Path], target: Path) -> None:
    """``target`` holding exactly ``files`` (name -> the labeled file): symbolic links,
    or copies where links cannot be made."""
    target.mkdir(parents=True, exist_ok=True)
    for entry in target.iterdir():
        if entry.name not in files:
            entry.unlink()
    for name, source in files.items():
        dest = target / name
        if dest.is_symlink() and os.readlink(dest) == str(source):
            continue
        if dest.is_symlink() or dest.exists():
            dest.unlink()
        try:
            os.symlink(source, dest)
        except OSError:
            shutil.copyfile(source, dest)


# Below this oracle gain (AP) a share of it is noise: seeds of one setting part by more.
MIN_GAIN_FOR_SHARE = 1.0


def verdict(rows: dict[str, dict[str, Any]], metric: str,
            quality: dict[str, dict[str, dict[str, float]]]) -> dict[str, Any]:
    """The preflight's answer from the held-out rows (single pass): the oracle's gain over
    the baseline, the round-1 student's, the student's share of the oracle's (when the
    oracle gains at least ``MIN_GAIN_FOR_SHARE``), and the round-1 pseudo-labels'
    precision and recall against the hidden truth."""
    ap = {name: row["single"][metric]["AP"] for name, row in rows.items()}
    tta = {name: row["tta"][metric]["AP"] for name, row in rows.items() if "tta" in row}
    oracle_gain = ap["oracle"] - ap["baseline"]
    student_gain = ap["student"] - ap["baseline"]
    first = quality["pseudo"][metric]
    return {"oracle_gain": round(oracle_gain, 1) + 0.0,
            "oracle_gain_tta": (round(tta["oracle"] - tta["baseline"], 1) + 0.0
                                if {"oracle", "baseline"} <= tta.keys() else None),
            "student_gain": round(student_gain, 1) + 0.0,
            "student_share": (round(student_gain / oracle_gain, 2)
                              if oracle_gain >= MIN_GAIN_FOR_SHARE else None),
            "precision50": first["precision50"], "recall50": first["recall50"]}


def verdict_lines(v: dict[str, Any], metric: str) -> list[str]:
    """The verdict in words, for the report."""
    unit = "keypoint AP" if metric == "keypoints" else "box AP"
    oracle, student, share = v["oracle_gain"], v["student_gain"], v["student_share"]
    lines = [f"- The oracle (the hidden images with their true labels) is {oracle:+.1f} "
             f"{unit} against the equal-budget baseline: what these images would give "
             "labeled by hand, usually more than pseudo-labels of them can."]
    with_tta = v.get("oracle_gain_tta")
    if with_tta is not None and (with_tta > 0) != (oracle > 0):
        lines.append(f"- With TTA on both sides the oracle is {with_tta:+.1f} {unit}: single "
                     "pass and TTA disagree, so this budget (or this test split) cannot tell; "
                     "train longer or hold out more images before deciding.")
    if oracle <= 0:
        lines.append("- Even true labels of these images do not beat the baseline at this "
                     "budget, so pseudo-labels of images like them are unlikely to: train "
                     "longer first (the baseline may still be rising) or look for other "
                     "images.")
    student_line = f"- The round-1 student is {student:+.1f} {unit} against the baseline"
    if share is not None and student > 0:
        student_line += f": {100 * share:.0f}% of the oracle's gain"
    lines.append(student_line + ".")
    lines.append(f"- Round-1 pseudo-labels against the hidden truth: precision "
                 f"{v['precision50']:.2f}, recall {v['recall50']:.2f} (at IoU / OKS 0.5).")
    lines.append("- One seed: runs of the same settings with another --seed differ by a few "
                 "AP (docs/sweep/SWEEP.md), so run a second seed before trusting a small "
                 "difference.")
    return lines
