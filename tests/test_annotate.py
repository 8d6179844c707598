"""`distill annotate` end to end: COCO output, calibration, resume, bad images."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from distill.annotate import Teacher, annotate_folder, infer_to_log
from distill.cli import main
from distill.images import list_images
from distill.options import InferenceOptions
from distill.predictions import PredictionLog
from distill.pseudolabels import SelectionConfig
from tests.helpers import make_synth, make_teacher

FAST = InferenceOptions(tta="flip", batch_size=3)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("annotate")
    splits = make_synth(root / "data", labeled=8, unlabeled=7)
    make_teacher(root / "kp.pt", splits["labeled"].keypoints_json, "keypoints")
    make_teacher(root / "box.pt", splits["labeled"].boxes_json, "boxes")
    return {"root": root, "splits": splits}


def _load(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def test_keypoint_pseudo_labels_are_valid_calibrated_coco(setup: dict, tmp_path: Path) -> None:
    splits, root = setup["splits"], setup["root"]
    out = tmp_path / "pseudo.json"
    report = annotate_folder(root / "kp.pt", splits["unlabeled"].images_dir, out,
                             options=FAST, progress=False)
    data = json.loads(out.read_text())
    coco = _load(out)
    assert report.images == 7 == len(coco.getImgIds())
    k = len(data["categories"][0]["keypoints"])
    for ann in data["annotations"]:
        assert len(ann["keypoints"]) == 3 * k and ann["iscrowd"] == 0 and "score" in ann
        assert ann["num_keypoints"] == sum(v > 0 for v in ann["keypoints"][2::3])
        _, _, w, h = ann["bbox"]
        assert w >= 0 and h >= 0 and ann["area"] == pytest.approx(w * h, abs=0.05)
        dropped = [ann["keypoints"][3 * i:3 * i + 3] for i in range(k)
                   if ann["keypoints"][3 * i + 2] == 0]
        assert all(p == [0, 0, 0] for p in dropped)
    # Calibration: as many persons per image as the labeled set, and as many
    # kept keypoints per person as labeled visible ones (ties aside).
    stats = data["info"]["labeled_stats"]
    target = round(stats["instances_per_image"]["1"] * 7)
    assert target <= len(data["annotations"]) <= target + 2
    kept = sum(a["num_keypoints"] for a in data["annotations"]) / len(data["annotations"])
    assert kept == pytest.approx(stats["visible_keypoints_per_instance"], abs=0.5)
    info = data["info"]
    assert info["transforms"] == ["256", "256+flip"] and info["tta"] == "flip"
    assert info["teacher"]["sha256"] and info["thresholds"]["keypoint"] is not None
    # COCOeval can score it against the hidden ground truth (file names match).
    gt = _load(splits["unlabeled"].keypoints_json)
    by_name = {img["file_name"]: img["id"] for img in gt.dataset["images"]}
    own = {img["id"]: img["file_name"] for img in data["images"]}
    dets = [{**a, "image_id": by_name[own[a["image_id"]]]} for a in data["annotations"]]
    with contextlib.redirect_stdout(io.StringIO()):
        ev = COCOeval(gt, gt.loadRes(dets), "keypoints")
        ev.params.kpt_oks_sigmas = np.full(k, 0.07)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert -1 <= ev.stats[0] <= 1


def test_box_pseudo_labels_per_category_targets(setup: dict, tmp_path: Path) -> None:
    splits, root = setup["splits"], setup["root"]
    out = tmp_path / "boxes.json"
    annotate_folder(root / "box.pt", splits["unlabeled"].images_dir, out,
                    options=InferenceOptions(tta="x1,x1.25+flip", batch_size=4),
                    progress=False)
    data = json.loads(out.read_text())
    _load(out)
    available: dict[int, int] = {}
    for rec in PredictionLog(Path(str(out) + ".predictions.jsonl")).read().values():
        for c in rec.category_ids:
            available[c] = available.get(c, 0) + 1
    counts: dict[int, int] = {}
    for a in data["annotations"]:
        counts[a["category_id"]] = counts.get(a["category_id"], 0) + 1
    for cat, mean in data["info"]["labeled_stats"]["instances_per_image"].items():
        # A random-weight teacher may predict fewer of a category than the target.
        target = min(round(mean * 7), available.get(int(cat), 0))
        if data["info"]["thresholds"]["score"][cat] is None:
            assert target == 0 and counts.get(int(cat), 0) == 0
        else:
            assert target <= counts.get(int(cat), 0) <= target + 2


def test_explicit_thresholds_replace_calibration(setup: dict, tmp_path: Path) -> None:
    splits, root = setup["splits"], setup["root"]
    out = tmp_path / "explicit.json"
    annotate_folder(root / "kp.pt", splits["unlabeled"].images_dir, out, options=FAST,
                    selection=SelectionConfig(score_threshold=0.0, keypoint_threshold=1e9),
                    progress=False)
    data = json.loads(out.read_text())
    assert data["info"]["thresholds"]["keypoint"] == 1e9
    assert all(a["num_keypoints"] == 0 for a in data["annotations"])
    logged = PredictionLog(Path(str(out) + ".predictions.jsonl")).read().values()
    assert len(data["annotations"]) == sum(len(r.scores) for r in logged) > 0  # all kept


def test_interrupted_run_resumes_without_redoing_images(setup: dict, tmp_path: Path) -> None:
    splits, root = setup["splits"], setup["root"]
    images = list_images(splits["unlabeled"].images_dir)
    out = tmp_path / "resumed.json"
    log = PredictionLog(Path(str(out) + ".predictions.jsonl"))
    teacher = Teacher.load(root / "kp.pt", FAST)
    # A first run that got through three images, then died mid-write.
    infer_to_log(teacher, [(p.name, p) for p in images[:3]], log)
    with open(log.path, "a") as fh:
        fh.write('{"file_name": "torn')
    report = annotate_folder(root / "kp.pt", splits["unlabeled"].images_dir, out, options=FAST,
                             progress=False)
    assert report.skipped_as_done == 3 and report.images == 7
    names = [img["file_name"] for img in json.loads(out.read_text())["images"]]
    assert sorted(names) == sorted(p.name for p in images)  # each image exactly once
    fresh = tmp_path / "fresh.json"
    annotate_folder(root / "kp.pt", splits["unlabeled"].images_dir, fresh, options=FAST,
                    progress=False)
    a, b = json.loads(out.read_text()), json.loads(fresh.read_text())
    assert a["annotations"] == b["annotations"]  # resuming changes nothing


def test_bad_images_are_reported_and_skipped(setup: dict, tmp_path: Path) -> None:
    splits, root = setup["splits"], setup["root"]
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = list_images(splits["unlabeled"].images_dir)[:2]
    for p in good:
        (folder / p.name).write_bytes(p.read_bytes())
    (folder / "garbage.png").write_bytes(b"this is not a png")
    (folder / "truncated.png").write_bytes(good[0].read_bytes()[:200])
    out = tmp_path / "mixed.json"
    report = annotate_folder(root / "kp.pt", folder, out, options=FAST, progress=False)
    data = json.loads(out.read_text())
    assert report.images == 2 and report.failed == 2
    assert {e["file_name"] for e in data["info"]["errors"]} == {"garbage.png", "truncated.png"}


def test_cli_end_to_end_and_errors(setup: dict, tmp_path: Path) -> None:
    splits, root = setup["splits"], setup["root"]
    out = tmp_path / "cli.json"
    proc = subprocess.run(
        [sys.executable, "-m", "distill.cli", "annotate", "--teacher", str(root / "kp.pt"),
         "--images", str(splits["unlabeled"].images_dir), "--out", str(out), "--tta", "identity",
         "--quiet"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "pseudo-labels on 7 images" in proc.stdout
    _load(out)
    assert main(["annotate", "--teacher", str(tmp_path / "nope.pt"), "--images",
                 str(splits["unlabeled"].images_dir), "--out", str(out)]) == 2
    assert main(["annotate", "--teacher", str(root / "kp.pt"), "--images",
                 str(splits["unlabeled"].images_dir), "--out", str(out), "--tta", "bogus"]) == 2


def test_an_image_that_breaks_inference_fails_alone(setup: dict, tmp_path: Path) -> None:
    from PIL import Image

    splits, root = setup["splits"], setup["root"]
    folder = tmp_path / "sliver"
    folder.mkdir()
    good = list_images(splits["unlabeled"].images_dir)[0]
    (folder / good.name).write_bytes(good.read_bytes())
    Image.new("RGB", (3000, 1), (128, 128, 128)).save(folder / "sliver.png")  # resizes to 0 rows
    out = tmp_path / "sliver.json"
    report = annotate_folder(root / "kp.pt", folder, out, options=FAST, progress=False)
    errors = json.loads(out.read_text())["info"]["errors"]
    assert report.images == 1 and [e["file_name"] for e in errors] == ["sliver.png"]
    assert errors[0]["error"].startswith("inference failed")


def test_out_of_gpu_memory_halves_the_batch_and_loses_nothing(tmp_path: Path) -> None:
    """A device that runs out of memory above 2 images per pass: the batch is halved (for
    the rest of the run) and every image still gets its prediction."""
    import torch

    from distill.annotate import _predict
    from distill.images import load_image
    from distill.score_floor import ScoreFloor

    splits = make_synth(tmp_path / "data", labeled=3, unlabeled=5)
    make_teacher(tmp_path / "t.pt", splits["labeled"].keypoints_json)
    teacher = Teacher.load(tmp_path / "t.pt", InferenceOptions(tta="identity", batch_size=5))
    real = teacher.predictor
    sizes: list[int] = []

    def small_device(images: list[torch.Tensor], *, floor: ScoreFloor | None = None
                     ) -> list[dict[str, torch.Tensor]]:
        sizes.append(len(images))
        if len(images) > 2:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(images, floor=floor)

    teacher.predictor = small_device  # type: ignore[assignment]
    paths = sorted(splits["unlabeled"].images_dir.glob("*.png"))
    records = _predict(teacher, [p.name for p in paths], [load_image(p) for p in paths], None)
    assert [r.error for r in records] == [None] * 5
    assert [r.file_name for r in records] == [p.name for p in paths]
    assert sizes[0] == 5 and max(sizes[1:]) <= 2 and teacher.max_batch <= 2


def test_drawn_boxes_get_keypoints_and_the_other_images_are_detected(setup: dict,
                                                                      tmp_path: Path) -> None:
    """``infer_to_log(prompts=...)`` (Label Studio's drawn boxes): a Keypoint R-CNN
    teacher records the drawn boxes with keypoints in them; an image without boxes, in
    the same batch, is detected as always; an unreadable one fails alone; a box teacher
    detects the prompted image too."""
    splits, root = setup["splits"], setup["root"]
    images = list_images(splits["unlabeled"].images_dir)[:2]
    sources: list[tuple[str, bytes | Path]] = [
        ("drawn.png", images[0]), ("plain.png", images[1]), ("broken.png", b"not an image")]
    prompts = {"drawn.png": [(0.1, 0.2, 0.5, 0.9), (0.6, 0.0, 1.0, 0.5)],
               "broken.png": [(0.0, 0.0, 1.0, 1.0)]}
    teacher = Teacher.load(root / "kp.pt", FAST)
    log = PredictionLog(tmp_path / "kp.jsonl")
    assert infer_to_log(teacher, sources, log, prompts=prompts) == (2, 1)
    got = log.read()
    assert got["broken.png"].error is not None
    drawn, plain = got["drawn.png"], got["plain.png"]
    w, h = drawn.width, drawn.height
    assert [tuple(round(v, 1) for v in b) for b in drawn.boxes] == [
        (round(0.1 * w, 1), round(0.2 * h, 1), round(0.5 * w, 1), round(0.9 * h, 1)),
        (round(0.6 * w, 1), 0.0, float(w), round(0.5 * h, 1))]
    assert drawn.keypoints is not None and len(drawn.keypoints) == 2
    for (x0, y0, x1, y1), points in zip(drawn.boxes, drawn.keypoints, strict=True):
        assert all(x0 - 1 <= x <= x1 + 1 and y0 - 1 <= y <= y1 + 1 for x, y in points)
    assert all(0 < s <= 1 for s in drawn.scores)
    # The plain image is what a run without prompts records.
    alone = PredictionLog(tmp_path / "alone.jsonl")
    infer_to_log(teacher, sources[1:2], alone)
    assert alone.read()["plain.png"] == plain
    box_teacher = Teacher.load(root / "box.pt", FAST)
    prompted, detected = PredictionLog(tmp_path / "b1.jsonl"), PredictionLog(tmp_path / "b2.jsonl")
    infer_to_log(box_teacher, sources[:1], prompted, prompts=prompts)
    infer_to_log(box_teacher, sources[:1], detected)
    assert prompted.read() == detected.read()  # no keypoint head: detected as always
