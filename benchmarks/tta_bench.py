"""Multi-transform inference: speed of the shared-box keypoint path, and pseudo-label quality.

Prints, on the tiny keypoint teacher with the 18-pass ``paper-relative`` preset:

* seconds per image of the shared-box path (one detector pass, then backbone +
  keypoint branch per transform), of a naive path that runs the whole model
  on every transform, and of the floor (the backbone passes alone);
* COCO AP of the teacher's predictions on the unlabeled split against its
  hidden ground truth, identity vs multi-transform, for keypoints and boxes,
  both for the raw ensembled predictions and for the calibrated pseudo-label
  file that a user would train on.

Teachers are trained on the synthetic labeled split first (cached under --out).
Usage: ``python benchmarks/tta_bench.py --out out/bench-tta``.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path
from typing import Any

import torch

from distill.annotate import annotate_folder
from distill.card import ModelCard
from distill.checkpoint import load_checkpoint
from distill.coco import objects
from distill.data import generate
from distill.images import load_image
from distill.models.zoo import build_from_card
from distill.options import InferenceOptions
from distill.tta.keypoints import KeypointTTA
from distill.tta.transforms import parse_preset
from training.pseudo_quality import raw_and_kept_ap
from training.trainer import TrainConfig, train


def _teacher(files: dict[str, Any], out: Path, task: str, iters: int,
             given: Path | None) -> Path:
    """A teacher trained on the labeled split: ``given``, cached, or trained now."""
    if given is not None:
        return given
    ckpt = out / f"teacher-{task}.pt"
    if not ckpt.exists():
        split = "keypoints_json" if task == "keypoints" else "boxes_json"
        print(f"training the {task} teacher for {iters} iterations ...", flush=True)
        train(TrainConfig(task=task, train_json=getattr(files["labeled"], split),  # type: ignore[arg-type]
                          images=files["labeled"].images_dir, out=ckpt, iters=iters,
                          device="cpu", progress=False))
    return ckpt


def _time_paths(model: Any, card: ModelCard, images: list[torch.Tensor], preset: str
                ) -> dict[str, float]:
    """Seconds per image of the shared-box, naive and floor paths."""
    transforms = parse_preset(preset, card.min_size, card.max_size)
    shared = KeypointTTA(model, transforms, card.flip_permutation())

    def naive(batch: list[torch.Tensor]) -> None:
        for t in transforms:  # the whole detector, keypoint branch included, per transform
            rcnn = t.rcnn_transform(model.transform)
            il, _ = rcnn([i.flip(-1) for i in batch] if t.hflip else batch)
            feats = model.backbone(il.tensors)
            props, _ = model.rpn(il, feats)
            model.roi_heads(feats, props, il.image_sizes)

    def floor(batch: list[torch.Tensor]) -> None:
        for t in transforms:
            model.backbone(t.apply(batch, model.transform).tensors)

    timings = {}
    for name, fn in (("shared-box", shared), ("naive", naive), ("floor", floor)):
        with torch.inference_mode():
            fn(images[:2])  # warm-up
            t0 = time.perf_counter()
            for i in range(0, len(images), 4):
                fn(images[i:i + 4])
            timings[name] = (time.perf_counter() - t0) / len(images)
    return timings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/bench-tta"))
    parser.add_argument("--iters", type=int, default=1500, help="teacher iterations")
    parser.add_argument("--timing-images", type=int, default=16)
    parser.add_argument("--preset", default="paper-relative")
    parser.add_argument("--kp-teacher", type=Path, help="use this keypoint teacher (trained on "
                        "the seed-0 synthetic labeled split) instead of training one")
    parser.add_argument("--box-teacher", type=Path, help="likewise for boxes")
    args = parser.parse_args()
    torch.manual_seed(0)
    data = args.out / "data"
    files = generate(data, labeled=150, unlabeled=100, test=0, seed=0)
    unlabeled = files["unlabeled"]
    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}")

    kp_ckpt = _teacher(files, args.out, "keypoints", args.iters, args.kp_teacher)
    box_ckpt = _teacher(files, args.out, "boxes", args.iters, args.box_teacher)

    card, state, _ = load_checkpoint(kp_ckpt)
    model = build_from_card(card, state).eval()
    images = [load_image(p) for p in sorted(unlabeled.images_dir.iterdir())[:args.timing_images]]
    t = _time_paths(model, card, images, args.preset)
    n = len(parse_preset(args.preset, card.min_size, card.max_size))
    print(f"\nkeypoint TTA, {args.preset} ({n} passes), s/image over {len(images)} images:")
    for name, sec in t.items():
        print(f"  {name:10s} {sec:7.3f} s/img   ({sec / t['floor']:.2f}x floor)")
    print(f"  shared-box is {t['naive'] / t['shared-box']:.2f}x faster than naive")

    rows = []
    for task, ckpt, gt_json in (("keypoints", kp_ckpt, unlabeled.keypoints_json),
                                ("boxes", box_ckpt, unlabeled.boxes_json)):
        card, _, _ = load_checkpoint(ckpt)
        for preset in dict.fromkeys(("identity", "standard", args.preset)):
            pseudo = args.out / f"pseudo-{task}-{preset}.json"
            t0 = time.perf_counter()
            annotate_folder(ckpt, unlabeled.images_dir, pseudo,
                            options=InferenceOptions(tta=preset), progress=False)
            seconds = time.perf_counter() - t0
            raw, selected = raw_and_kept_ap(pseudo, gt_json, card)
            metric = "keypoints" if task == "keypoints" else "bbox"
            rows.append((task, preset, raw[metric], selected[metric],
                         len(objects(json.loads(pseudo.read_text()))), seconds))
    print("\npseudo-label quality on the unlabeled split (COCO AP vs hidden ground truth):")
    print(f"  {'task':10s} {'preset':16s} {'raw AP':>7s} {'kept AP':>8s} {'kept':>6s} {'sec':>6s}")
    for task, preset, raw_ap, kept_ap, kept, sec in rows:
        print(f"  {task:10s} {preset:16s} {raw_ap:7.1f} {kept_ap:8.1f} {kept:6d} {sec:6.0f}")


if __name__ == "__main__":
    main()
