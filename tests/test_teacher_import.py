"""`distill teacher import` / `stats`: torchvision weights in, a teacher that runs out.

Every torchvision architecture of the zoo is built with torchvision's own
builder (random weights, nothing downloaded), saved as torchvision and its
reference scripts save, imported, and run through the identity preset: the
imported teacher must reproduce torchvision's own outputs, with labels mapped
to COCO category ids.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from torchvision.models import detection as tvd

from distill.cardfile import read_card
from distill.checkpoint import load_checkpoint
from distill.coco import labeled_statistics, load_coco
from distill.errors import CardError, ConfigError, DistillError
from distill.predictions import ImageRecord
from distill.teachers.cli import register
from distill.teachers.labels import COCO_PERSON_SKELETON, load_categories
from distill.teachers.rcnn_import import import_teacher

SIZE: dict[str, Any] = {"min_size": 128, "max_size": 160}
# A low threshold keeps random heads' detections; fewer proposals keep the box heads cheap.
OPTS: dict[str, Any] = {"box_score_thresh": 0.01, "rpn_post_nms_top_n_test": 300}
ARCH_FLAGS = ["--arch-option", "box_score_thresh=0.01",
              "--arch-option=rpn_post_nms_top_n_test=300"]
# Keypoint R-CNN's head runs per detection: few keep it cheap.
KP_OPTS: dict[str, Any] = {**OPTS, "box_detections_per_img": 10}
BOX_CATS = [{"id": 3, "name": "car"}, {"id": 7, "name": "bus"}, {"id": 11, "name": "cat"}]
# fasterrcnn_mobilenet_v3_large_fpn is imported with a 3-category COCO file, the others as
# torchvision's COCO models (91 box outputs, or person with 17 keypoints).
NUM_CLASSES = {"keypointrcnn_resnet50_fpn": 2, "fasterrcnn_resnet50_fpn": 91,
               "fasterrcnn_resnet50_fpn_v2": 91, "fasterrcnn_mobilenet_v3_large_fpn": 4}


def cli(argv: list[str]) -> int:
    """`distill ...` as the console script runs it (exit 2 and one line for DistillError)."""
    from distill import cli as main_cli

    if "distill.teachers.cli" in getattr(main_cli, "_PLUGINS", ()):
        return main_cli.main(argv)
    parser = argparse.ArgumentParser(prog="distill")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except DistillError as exc:
        print(f"distill {args.command}: error: {exc}", file=sys.stderr)
        return 2


def _write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _box_json(path: Path, extra_category: bool = False) -> Path:
    cats = [*BOX_CATS, {"id": 99, "name": "boat"}] if extra_category else BOX_CATS
    images = [{"id": i, "file_name": f"{i}.png", "width": 150, "height": 120} for i in range(4)]
    anns = [{"id": j, "image_id": j % 4, "category_id": [3, 3, 7, 3, 11][j], "iscrowd": 0,
             "bbox": [10, 10, 30, 20], "area": 600} for j in range(5)]
    return _write_json(path, {"images": images, "annotations": anns, "categories": cats})


def _person_json(path: Path) -> Path:
    from torchvision.models._meta import _COCO_PERSON_KEYPOINT_NAMES

    person = {"id": 1, "name": "person", "supercategory": "person",
              "keypoints": list(_COCO_PERSON_KEYPOINT_NAMES), "skeleton": COCO_PERSON_SKELETON}
    images = [{"id": i, "file_name": f"{i}.png", "width": 150, "height": 120} for i in range(2)]
    anns = [{"id": j, "image_id": 0, "category_id": 1, "iscrowd": 0, "bbox": [5, 5, 40, 80],
             "area": 3200, "num_keypoints": 2 + j,
             "keypoints": [10, 10, 2] * (2 + j) + [0, 0, 0] * (15 - j)} for j in range(3)]
    return _write_json(path, {"images": images, "annotations": anns, "categories": [person]})


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Any, Path, Path]]:
    """arch -> (torchvision model in eval mode, raw state-dict file, reference checkpoint)."""
    root = tmp_path_factory.mktemp("weights")
    cache: dict[str, tuple[Any, Path, Path]] = {}

    def get(arch: str) -> tuple[Any, Path, Path]:
        if arch not in cache:
            torch.manual_seed(0)
            extra = {"num_keypoints": 17, **KP_OPTS} if arch.startswith("keypoint") else OPTS
            model = getattr(tvd, arch)(weights=None, weights_backbone=None,
                                       num_classes=NUM_CLASSES[arch], **SIZE, **extra)
            with torch.no_grad():
                # Random features give large logits that one arbitrary class wins; damp
                # them, and make labels 1 and the last (90: toothbrush) win by bias alone.
                cls_score = model.roi_heads.box_predictor.cls_score
                cls_score.weight *= 0.02
                cls_score.weight[[1, -1]] = 0.0
                cls_score.bias.zero_()
                cls_score.bias[[1, -1]] = 3.0
            state = model.state_dict()
            if arch != "fasterrcnn_resnet50_fpn_v2":
                # torchvision's published COCO weights come from FrozenBatchNorm models,
                # which have no num_batches_tracked (v2's have plain BatchNorm).
                state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
            raw, ref = root / f"{arch}.pth", root / f"{arch}_model_25.pth"
            torch.save(state, raw)
            # As torchvision's references/detection/train.py saves, argparse args included.
            torch.save({"model": state, "optimizer": {}, "lr_scheduler": {}, "epoch": 3,
                        "args": argparse.Namespace(lr=0.02, epochs=26, data_path="/coco")}, ref)
            cache[arch] = (model.eval(), raw, ref)
        return cache[arch]

    return get


def _matched(got: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]
             ) -> dict[str, torch.Tensor]:
    """``got`` reordered to pair with ``expected`` (same label, nearest box and score):
    fusion re-sorts by score, and damped random heads give many near-equal scores."""
    assert len(got["labels"]) == len(expected["labels"])
    cost = (torch.cdist(expected["boxes"], got["boxes"], p=1)
            + (expected["scores"][:, None] - got["scores"][None, :]).abs()
            + 1e6 * (expected["labels"][:, None] != got["labels"][None, :]))
    order: list[int] = []
    for row in cost:
        row[order] = float("inf")
        order.append(int(row.argmin()))
    return {k: v[order] for k, v in got.items()}


@pytest.mark.slow
@pytest.mark.parametrize("arch", list(NUM_CLASSES))
def test_imported_teacher_reproduces_torchvision(arch: str, saved: Any, tmp_path: Path) -> None:
    from distill.annotate import Teacher
    from distill.options import FusionParams, InferenceOptions

    model, raw, ref = saved(arch)
    keypoints = arch.startswith("keypoint")
    categories = str(_box_json(tmp_path / "cats.json")) if NUM_CLASSES[arch] == 4 else "coco"
    labeled = _person_json(tmp_path / "person.json") if keypoints else None
    # The function on the raw state dict; the CLI on the reference-script checkpoint.
    opts = KP_OPTS if keypoints else OPTS
    card, state = import_teacher(arch, raw, categories, stats=None, **SIZE, name="t",
                                 arch_options=opts, labeled_json=labeled)
    out = tmp_path / "teacher.pt"
    argv = ["teacher", "import", "--arch", arch, "--weights", str(ref), "--categories",
            categories, "--out", str(out), "--min-size", "128", "--max-size", "160",
            *[f"--arch-option={k}={v}" for k, v in opts.items()]]
    assert cli(argv + (["--labeled-json", str(labeled)] if labeled else [])) == 0
    written, written_state, _ = load_checkpoint(out)
    assert read_card(out).to_dict() == written.to_dict()  # the API reads it without torch
    assert card.provenance["source_format"] == "state-dict"
    assert written.provenance["source_format"] == "torchvision-reference-checkpoint"
    assert written.provenance["name"] == "teacher" and written.arch_options == opts
    assert all(torch.equal(state[k], written_state[k]) for k in state)
    assert written.num_classes == NUM_CLASSES[arch]

    image = torch.rand(3, 120, 150, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        expected = model([image])[0]
    # One pass pooled NMS-ed is the detector's own output; raw pooling would vote its boxes.
    teacher = Teacher.load(out, InferenceOptions(tta="identity",
                                                 fusion=FusionParams(pooling="nms")))
    got = _matched(teacher.predictor([image])[0], expected)
    assert len(expected["boxes"]) > 0, "random weights gave no detections: the test is vacuous"
    # The teacher runs channels-last on a CPU: the same sums in another order, which 50
    # random-weight layers grow to about 2e-5 of a coordinate (a wrong weight moves
    # boxes by pixels).
    torch.testing.assert_close(got["boxes"], expected["boxes"], atol=1e-3, rtol=1e-4)
    torch.testing.assert_close(got["scores"], expected["scores"], atol=1e-4, rtol=0)
    ids = [written.category_id(int(v)) for v in got["labels"]]
    assert ids == [written.category_id(int(v)) for v in expected["labels"]]
    # Random heads also score torchvision's unused "N/A" slots; records drop those.
    record = ImageRecord.from_output("x.png", 150, 120, got, written)
    assert list(record.category_ids) == [i for i in ids if i is not None]
    if keypoints:
        torch.testing.assert_close(got["keypoints"], expected["keypoints"], atol=2e-3, rtol=0)
        assert written.keypoint_names[5] == "left_shoulder" and len(written.flip_map) == 8
        assert written.oks_sigmas is not None and written.oks_sigmas[0] == pytest.approx(0.026)
        assert written.categories[0]["skeleton"] == COCO_PERSON_SKELETON
        assert labeled is not None
        assert written.labeled_stats == labeled_statistics(load_coco(labeled), "keypoints")
    elif categories == "coco":
        names = {int(c["id"]): c["name"] for c in written.categories}
        assert len(names) == 80 and written.category_id(12) is None  # an "N/A" slot
        assert (written.category_id(1), names[1]) == (1, "person")
        assert (written.category_id(90), names[90]) == (90, "toothbrush")
        assert {1, 90} <= set(ids)
    else:
        assert written.category_id(1) == 3 and written.category_id(3) == 11
        assert written.labeled_stats is None


def test_coco_convention_never_writes_an_unused_id() -> None:
    from distill.card import ModelCard

    cats = load_categories("coco", "boxes")
    card = ModelCard(arch="fasterrcnn_resnet50_fpn", task="boxes", categories=cats.categories,
                     min_size=800, max_size=1333, label_ids=cats.label_ids)
    output = {"boxes": torch.tensor([[0.0, 0, 10, 10]] * 4),
              "scores": torch.tensor([0.9, 0.8, 0.7, 0.6]),
              "labels": torch.tensor([1, 12, 90, 83])}  # 12 and 83 are "N/A" slots
    record = ImageRecord.from_output("a.png", 20, 20, output, card)
    assert record.category_ids == (1, 90) and record.scores == (0.9, 0.7)


def _fails(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert "distill teacher: error:" in err and "Traceback" not in err
    return err


def test_wrong_architecture_is_named(saved: Any, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    _, raw, _ = saved("fasterrcnn_mobilenet_v3_large_fpn")
    err = _fails(["teacher", "import", "--arch", "fasterrcnn_resnet50_fpn", "--weights", str(raw),
                  "--categories", str(_box_json(tmp_path / "c.json")),
                  "--out", str(tmp_path / "t.pt")], capsys)
    assert "do not fit fasterrcnn_resnet50_fpn" in err and "missing keys" in err
    assert "backbone.body." in err and "--arch fasterrcnn_mobilenet_v3_large_fpn" in err
    assert not (tmp_path / "t.pt").exists()


def test_wrong_class_count_is_named(saved: Any, tmp_path: Path,
                                    capsys: pytest.CaptureFixture[str]) -> None:
    _, raw, _ = saved("fasterrcnn_resnet50_fpn")  # 91 classes
    cats = _box_json(tmp_path / "c.json")  # 3 categories
    base = ["teacher", "import", "--arch", "fasterrcnn_resnet50_fpn", "--weights", str(raw),
            "--out", str(tmp_path / "t.pt")]
    err = _fails([*base, "--categories", str(cats)], capsys)
    assert "weights have 91 classes (roi_heads.box_predictor.cls_score.weight is 91 x 1024)" \
        in err and "c.json imply 4 (3 categories + background)" in err
    assert "--labels category-id" in err  # the reference scripts' convention, suggested
    _, raw, _ = saved("fasterrcnn_mobilenet_v3_large_fpn")  # 4 classes
    err = _fails([*base[:3], "fasterrcnn_mobilenet_v3_large_fpn", "--weights", str(raw),
                  "--categories", "coco", *base[6:]], capsys)
    assert "weights have 4 classes" in err and "imply 91 (80 categories in 90 label slots" in err
    assert not (tmp_path / "t.pt").exists()


def test_reference_script_labels_are_category_ids(saved: Any, tmp_path: Path) -> None:
    # torchvision's references/detection train on raw category ids with 91 outputs.
    _, raw, _ = saved("fasterrcnn_resnet50_fpn")
    card, _ = import_teacher("fasterrcnn_resnet50_fpn", raw, _box_json(tmp_path / "c.json"),
                             stats=None, **SIZE, name=None, labels="category-id")
    assert card.num_classes == 91 and [c["id"] for c in card.categories] == [3, 7, 11]
    assert [card.category_id(i) for i in (1, 3, 7, 11, 90)] == [None, 3, 7, 11, None]
    _, raw, _ = saved("fasterrcnn_mobilenet_v3_large_fpn")  # labels 0..3 cannot hold id 11
    with pytest.raises(CardError, match=r"ids of c.json \(3..11\) do not fit labels 1..3"):
        import_teacher("fasterrcnn_mobilenet_v3_large_fpn", raw, tmp_path / "c.json",
                       stats=None, **SIZE, name=None, labels="category-id")


def test_wrong_keypoint_count_is_named(saved: Any, tmp_path: Path) -> None:
    _, raw, _ = saved("keypointrcnn_resnet50_fpn")
    data = json.loads(_person_json(tmp_path / "p.json").read_text())
    data["categories"][0]["keypoints"] = data["categories"][0]["keypoints"][:13]
    with pytest.raises(CardError, match=r"weights have 17 keypoints .* imply 13"):
        import_teacher("keypointrcnn_resnet50_fpn", raw, _write_json(tmp_path / "p.json", data),
                       stats=None, **SIZE, name=None)


def test_truncated_file_is_named(saved: Any, tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    _, raw, _ = saved("fasterrcnn_mobilenet_v3_large_fpn")
    cut = tmp_path / "cut.pth"
    data = raw.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    err = _fails(["teacher", "import", "--arch", "fasterrcnn_mobilenet_v3_large_fpn",
                  "--weights", str(cut), "--categories", str(_box_json(tmp_path / "c.json")),
                  "--out", str(tmp_path / "t.pt")], capsys)
    assert "cut.pth" in err and "not a readable" in err


def test_stats_file_and_labeled_json_give_the_same_card(saved: Any, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]
                                                        ) -> None:
    _, raw, _ = saved("fasterrcnn_mobilenet_v3_large_fpn")
    cats, stats_file = _box_json(tmp_path / "c.json"), tmp_path / "stats.json"
    assert cli(["teacher", "stats", str(cats), "--task", "boxes", "--out", str(stats_file)]) == 0
    base = ["teacher", "import", "--arch", "fasterrcnn_mobilenet_v3_large_fpn", "--categories",
            str(cats), *ARCH_FLAGS, "--min-size", "128", "--max-size", "160"]
    assert cli([*base, "--weights", str(raw), "--stats", str(stats_file),
                "--out", str(tmp_path / "a.pt")]) == 0
    assert cli([*base, "--weights", str(raw), "--labeled-json", str(cats),
                "--out", str(tmp_path / "b.pt")]) == 0
    expected = labeled_statistics(load_coco(cats), "boxes")
    assert expected.instances_per_image == {"3": 0.75, "7": 0.25, "11": 0.25}
    assert read_card(tmp_path / "a.pt").labeled_stats == expected
    assert read_card(tmp_path / "b.pt").labeled_stats == expected

    # Without statistics: imported, with a warning saying what calibration needs.
    capsys.readouterr()
    assert cli([*base, "--weights", str(raw), "--out", str(tmp_path / "c.pt")]) == 0
    assert "calibrated selection" in capsys.readouterr().err
    assert read_card(tmp_path / "c.pt").labeled_stats is None

    # Re-carding a distill checkpoint (with DDP-style keys elsewhere) keeps its sizes.
    state = torch.load(raw, weights_only=True)
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "ddp.pth")
    card, _ = import_teacher("fasterrcnn_mobilenet_v3_large_fpn", tmp_path / "ddp.pth", cats,
                             stats=None, **SIZE, name=None)
    assert card.provenance["source_format"] == "state-dict+ddp"
    card, _ = import_teacher("fasterrcnn_mobilenet_v3_large_fpn", tmp_path / "c.pt", cats,
                             stats=None, min_size=None, max_size=None, name=None,
                             labeled_json=cats)
    assert card.provenance["source_format"] == "distill-checkpoint"
    assert (card.min_size, card.max_size, card.arch_options) == (128, 160, OPTS)
    assert card.labeled_stats == expected

    # Statistics naming a category the teacher lacks are refused.
    other = json.loads(stats_file.read_text())
    other["instances_per_image"]["99"] = 0.5
    err = _fails([*base, "--weights", str(raw), "--stats",
                  str(_write_json(tmp_path / "bad.json", other)),
                  "--out", str(tmp_path / "d.pt")], capsys)
    assert "category ids ['99']" in err



def test_misspelt_arch_option_is_refused(saved: Any, tmp_path: Path) -> None:
    # torchvision hands unknown options to its transform, which ignores them: check here.
    _, raw, _ = saved("fasterrcnn_mobilenet_v3_large_fpn")
    with pytest.raises(ConfigError, match=r"no option 'box_score_tresh'.*'box_score_thresh'"):
        import_teacher("fasterrcnn_mobilenet_v3_large_fpn", raw,
                       _box_json(tmp_path / "c.json"), stats=None, **SIZE, name=None,
                       arch_options={"box_score_tresh": 0.5})
