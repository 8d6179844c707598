"""Run configs declared once: flags, recorded command lines and result settings all come
from the fields of TrainConfig and ExperimentConfig (training.config_flags)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from distill.cli import build_parser
from distill.errors import ConfigError
from distill.options import SYNTH_FAMILIES
from training.config_flags import from_namespace, result_fields, values_before
from training.experiment_config import ExperimentConfig, config_from_args
from training.train_config import CROWD_RULES, TrainConfig
from training.variants import BY_NAME, VARIANTS


def _parsed(cfg: TrainConfig) -> TrainConfig:
    """The configuration that ``cfg``'s recorded command line makes."""
    args = build_parser().parse_args(cfg.to_command()[1:])
    parsed: TrainConfig = from_namespace(TrainConfig, args)
    return parsed


@pytest.mark.parametrize("changes", [
    {},
    {"pseudo_json": Path("p.json"), "pseudo_images": Path("u"), "labeled_ratio": 0.5,
     "init": "t.pt", "crowd": "drop", "steps": (0.5,), "scale_jitter": (1.0, 1.5),
     "arch_options": {"box_detections_per_img": 50, "name": "x", "on": True},
     "tensorboard": False, "progress": False, "resume": True, "stop_at": 3, "sync_bn": True,
     "warmup_iters": 7, "max_grad_norm": 5.0, "num_workers": 2, "threads": 1,
     "min_size": 100, "max_size": 200, "backbone_weights": Path("bw.pt"), "device": "cpu",
     "seed": 3, "iters": 60, "weight_decay": 1e-3},
    {"tensorboard": True, "arch": "fasterrcnn_resnet50_fpn"},
])
def test_the_recorded_command_line_makes_the_same_config(changes: dict) -> None:
    cfg = replace(TrainConfig(task="boxes", train_json=Path("l.json"), images=Path("im"),
                              out=Path("o.pt")), **changes)
    assert _parsed(cfg) == cfg


def test_the_recorded_command_line_spells_the_schedule_and_what_differs() -> None:
    cfg = TrainConfig(task="keypoints", train_json=Path("l.json"), images=Path("im"),
                      out=Path("o.pt"), device="cpu", tensorboard=False, progress=False)
    assert cfg.to_command() == [
        "distill", "train", "--task", "keypoints", "--train-json", "l.json", "--images", "im",
        "--arch", "tiny", "--iters", "1500", "--batch-size", "4", "--lr", "0.02",
        "--out", "o.pt", "--seed", "0", "--device", "cpu", "--no-tensorboard", "--quiet"]


def test_flags_take_their_words_from_the_tables() -> None:
    parser = build_parser()
    train = parser.parse_args(["train", "--task", "boxes", "--train-json", "a", "--images",
                               "b", "--out", "c"])
    assert from_namespace(TrainConfig, train) == TrainConfig(
        task="boxes", train_json=Path("a"), images=Path("b"), out=Path("c"))
    for crowd in CROWD_RULES:
        parser.parse_args(["train", "--task", "boxes", "--train-json", "a", "--images", "b",
                           "--out", "c", "--crowd", crowd])
    for family in SYNTH_FAMILIES:
        assert config_from_args(parser.parse_args(["experiment", "--family", family]),
                                []).family == family
        parser.parse_args(["synth", "out", "--family", family])
    with pytest.raises(SystemExit):
        parser.parse_args(["experiment", "--family", "cats"])


def test_quick_sets_the_sizes_and_keeps_every_other_flag() -> None:
    args = build_parser().parse_args(["experiment", "--quick", "--labeled", "99",
                                      "--labeled-ratio", "0.5", "--oracle", "--family",
                                      "blocks", "--quiet", "--lr", "0.01"])
    cfg = config_from_args(args, ["distill", "experiment"])
    assert (cfg.quick, cfg.labeled, cfg.seeds, cfg.results_md) == (True, 6, (0,), None)
    assert (cfg.labeled_ratio, cfg.oracle, cfg.family, cfg.progress, cfg.lr) == (
        0.5, True, "blocks", False, 0.01)
    plain = config_from_args(build_parser().parse_args(["experiment", "--second-round"]), [])
    assert plain.rounds == 2 and plain.results_md == Path("docs/RESULTS.md")


def test_run_folders_made_before_a_setting_existed_still_resume(tmp_path: Path) -> None:
    from training.experiment import _claim_out_dir

    assert result_fields(ExperimentConfig) == (
        "family", "labeled", "unlabeled", "shifted", "test", "teacher_iters",
        "student_iters", "batch_size", "lr", "labeled_ratio", "student_init", "tta", "arch",
        "min_size", "max_size", "precision", "quick")
    assert values_before(ExperimentConfig) == {"family": "figures", "labeled_ratio": 0.6,
                                               "student_init": "scratch", "precision": "fp32"}
    cfg = ExperimentConfig(out_dir=tmp_path)
    old = {k: getattr(cfg, k) for k in result_fields(ExperimentConfig)
           if k not in values_before(ExperimentConfig)}
    (tmp_path / "settings.json").write_text(json.dumps(old))
    _claim_out_dir(cfg)
    with pytest.raises(ConfigError, match=r"labeled_ratio: 0\.6 -> 0\.5"):
        _claim_out_dir(replace(cfg, labeled_ratio=0.5))


def test_loop_run_folders_made_before_the_precision_existed_still_resume(
        tmp_path: Path) -> None:
    from training.loop import _claim
    from training.loop_config import LoopConfig

    cfg = LoopConfig(labeled=tmp_path / "l.json", images=tmp_path, unlabeled=tmp_path,
                     out=tmp_path / "run")
    _claim(cfg, "boxes")
    settings = cfg.out / "settings.json"
    older = json.loads(settings.read_text())
    assert older.pop("precision") == "fp32"
    settings.write_text(json.dumps(older))
    _claim(cfg, "boxes")
    with pytest.raises(ConfigError, match="precision: fp32 -> bf16"):
        _claim(replace(cfg, precision="bf16"), "boxes")


def test_every_variant_learns_from_rows_above_it() -> None:
    seen: set[str] = set()
    for v in VARIANTS:
        assert v.labeler in seen or v.split is None
        assert BY_NAME[v.plain].name in seen | {v.name}
        seen.add(v.name)
    assert len(seen) == len(VARIANTS)
