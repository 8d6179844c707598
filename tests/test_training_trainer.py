"""The training loop: it learns, it resumes exactly, it runs on 2 gloo processes."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from distill.checkpoint import load_checkpoint
from distill.coco import load_coco
from distill.data import generate
from distill.fileio import write_json_atomic
from distill.processes import free_port
from training.run_files import metrics_path, resume_path
from training.trainer import TrainConfig, train


@pytest.fixture(autouse=True)
def _threads() -> Iterator[None]:
    """These tests pick their own thread counts; the rest of the suite gets its own back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def synth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("synth")
    splits = generate(root, labeled=6, unlabeled=6, test=0, seed=0)
    # A two-image subset with persons, to overfit.
    files = {}
    for task in ("keypoints", "boxes"):
        src = splits["labeled"].keypoints_json if task == "keypoints" \
            else splits["labeled"].boxes_json
        coco = load_coco(src)
        ids = [img["id"] for img in coco["images"]
               if any(a["image_id"] == img["id"] for a in coco["annotations"])][:2]
        small = {**coco, "images": [i for i in coco["images"] if i["id"] in ids],
                 "annotations": [a for a in coco["annotations"] if a["image_id"] in ids]}
        files[task] = root / f"two_{task}.json"
        write_json_atomic(files[task], small)
    return {"splits": splits, "two": files, "images": splits["labeled"].images_dir}


def _config(synth: dict[str, Any], out: Path, **kw: Any) -> TrainConfig:
    base: dict[str, Any] = {
        "task": "keypoints", "train_json": synth["splits"]["labeled"].keypoints_json,
        "images": synth["images"], "out": out, "iters": 8, "batch_size": 2, "lr": 0.01,
        "min_size": 128, "max_size": 224, "log_every": 2, "checkpoint_every": 4,
        "progress": False, "device": "cpu", "command": ["distill", "train", "(test)"]}
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("task", ["keypoints", "boxes"])
def test_loss_goes_down_when_overfitting(synth: dict[str, Any], tmp_path: Path,
                                         task: str, precision: str) -> None:
    torch.set_num_threads(1)
    cfg = _config(synth, tmp_path / "m.pt", task=task, train_json=synth["two"][task],
                  iters=40, log_every=10, warmup_iters=5, lr=0.01, flip_prob=0.0,
                  scale_jitter=(1.0, 1.0), steps=(0.95,), precision=precision)
    result = train(cfg)
    losses = [h["loss"] for h in result.history]
    assert len(losses) == 4
    assert losses[-1] < 0.7 * losses[0], losses
    card, _, extra = load_checkpoint(cfg.out)
    assert card.task == task and extra["iteration"] == 40
    assert card.labeled_stats.images == 2
    assert "distill train" in card.provenance["command"]
    if task == "keypoints":
        assert card.flip_map and card.oks_sigmas is not None
        assert len(card.oks_sigmas) == len(card.keypoint_names)
    lines = metrics_path(cfg.out).read_text().splitlines()
    assert [json.loads(line)["iter"] for line in lines] == [10, 20, 30, 40]


@pytest.mark.parametrize("task", ["keypoints", "boxes"])
def test_bf16_autocast_computes_the_same_losses_roughly_and_keeps_float32_weights(
        synth: dict[str, Any], tmp_path: Path, task: str) -> None:
    """The first iteration (same weights, same minibatch) under bf16 autocast: its
    losses within a few percent of float32's, yet not the same numbers (autocast ran);
    the checkpoint holds float32 weights and says how it was trained."""
    torch.set_num_threads(1)
    first = {}
    for precision in ("fp32", "bf16"):
        cfg = _config(synth, tmp_path / f"{precision}.pt", task=task, iters=1, log_every=1,
                      precision=precision)
        first[precision] = train(cfg).history[0]
        card, state, _ = load_checkpoint(cfg.out)
        assert {v.dtype for v in state.values() if v.is_floating_point()} == {torch.float32}
        assert card.provenance["training"]["precision"] == precision
    losses = [k for k in first["fp32"] if k.startswith("loss")]
    assert losses and all(first["bf16"][k] == pytest.approx(first["fp32"][k], rel=0.05, abs=0.01)
                          for k in losses), first
    assert first["bf16"]["loss"] != first["fp32"]["loss"]


def test_resume_continues_where_it_stopped(synth: dict[str, Any], tmp_path: Path) -> None:
    torch.set_num_threads(1)
    pseudo = {"pseudo_json": synth["splits"]["unlabeled"].keypoints_json,
              "pseudo_images": synth["splits"]["unlabeled"].images_dir}
    whole = _config(synth, tmp_path / "whole.pt", **pseudo)
    train(whole)
    parts = _config(synth, tmp_path / "parts.pt", stop_at=4, **pseudo)
    first = train(parts)
    assert first.iterations == 4 and not parts.out.exists()
    assert resume_path(parts.out).is_file()
    parts.stop_at, parts.resume = None, True
    second = train(parts)
    assert (second.start_iteration, second.iterations) == (4, 8)

    _, w_state, w_extra = load_checkpoint(resume_path(whole.out))
    _, p_state, p_extra = load_checkpoint(resume_path(parts.out))
    assert w_extra["iteration"] == p_extra["iteration"] == 8
    ws, ps = w_extra["sampler"][0], p_extra["sampler"][0]
    assert torch.equal(ws["generator"], ps["generator"])
    assert (ws["epochs"], ws["positions"], ws["batches"]) == \
        (ps["epochs"], ps["positions"], ps["batches"])
    assert torch.equal(w_extra["rng"][0]["torch"], p_extra["rng"][0]["torch"])
    for key, value in w_state.items():
        torch.testing.assert_close(p_state[key], value, rtol=1e-4, atol=1e-5, msg=key)
    iters = [json.loads(line)["iter"] for line in metrics_path(parts.out).read_text().splitlines()]
    assert iters == [2, 4, 6, 8]


def _ddp_worker(rank: int, world: int, port: int, cfg: TrainConfig) -> None:
    torch.set_num_threads(1)
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port),
                       "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": str(world)})
    train(cfg)


@pytest.mark.slow
def test_two_gloo_processes(synth: dict[str, Any], tmp_path: Path) -> None:
    cfg = _config(synth, tmp_path / "ddp.pt", iters=4, batch_size=2,
                  pseudo_json=synth["splits"]["unlabeled"].keypoints_json,
                  pseudo_images=synth["splits"]["unlabeled"].images_dir)
    mp.spawn(_ddp_worker, args=(2, free_port(), cfg), nprocs=2, join=True)
    card, _, extra = load_checkpoint(cfg.out)
    assert extra["iteration"] == 4 and card.task == "keypoints"
    _, _, state = load_checkpoint(resume_path(cfg.out))
    samplers = state["sampler"]
    assert [s["rank"] for s in samplers] == [0, 1]
    assert not torch.equal(samplers[0]["generator"], samplers[1]["generator"])
    lines = metrics_path(cfg.out).read_text().splitlines()
    assert [json.loads(line)["iter"] for line in lines] == [2, 4]


@pytest.mark.slow
def test_one_iteration_of_a_torchvision_detector(synth: dict[str, Any], tmp_path: Path) -> None:
    torch.set_num_threads(2)
    cfg = _config(synth, tmp_path / "tv.pt", arch="keypointrcnn_resnet50_fpn", iters=1,
                  batch_size=1, min_size=128, max_size=192, log_every=1)
    result = train(cfg)
    assert result.iterations == 1
    card, state, _ = load_checkpoint(cfg.out)
    assert card.arch == "keypointrcnn_resnet50_fpn" and card.min_size == 128
    assert any(k.startswith("roi_heads.keypoint_predictor") for k in state)


def test_train_command_line(synth: dict[str, Any], tmp_path: Path,
                            caplog: pytest.LogCaptureFixture) -> None:
    from distill.cli import main

    torch.set_num_threads(1)
    out = tmp_path / "cli.pt"
    with caplog.at_level(logging.INFO, logger="training"):
        code = main(["train", "--task", "boxes", "--train-json",
                     str(synth["splits"]["labeled"].boxes_json), "--images",
                     str(synth["images"]), "--iters", "2", "--batch-size", "2", "--min-size",
                     "128", "--max-size", "224", "--out", str(out), "--quiet", "--device",
                     "cpu", "--no-tensorboard", "--checkpoint-every", "1",
                     "--arch-option", "box_detections_per_img=50"])
    assert code == 0
    # --quiet has no bar, but says where it is at each checkpoint (not after the last).
    beats = [r.getMessage() for r in caplog.records if "it/s, about" in r.getMessage()]
    assert len(beats) == 1 and beats[0].startswith("cli: iteration 1 of 2")
    card, _, extra = load_checkpoint(out)
    assert extra["iteration"] == 2 and card.task == "boxes"
    assert [c["name"] for c in card.categories] == ["person", "ball", "cone", "kite"]
    assert card.arch_options == {"box_detections_per_img": 50}
    command = card.provenance["command"]
    assert command.startswith("distill train --task boxes") and "--iters 2" in command
    assert "--arch-option box_detections_per_img=50" in command
    bad = main(["train", "--task", "boxes", "--train-json", str(tmp_path / "missing.json"),
                "--images", str(synth["images"]), "--out", str(out), "--quiet"])
    assert bad == 2  # a DistillError, reported without a traceback
