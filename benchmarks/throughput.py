"""Throughput of one worker: images per second, the floor, and where the time goes.

For each teacher (keypoints, boxes) and preset (``standard``, ``paper-relative``) it
runs the worker's own loop (``infer_to_log``: decode, multi-transform inference,
log write) over the same images and prints

- images per second with the defaults (keypoint cap and running score floor), with the
  cap alone, and with neither (the keypoint path before either existed);
- the floor: the backbone passes alone, the least any multi-transform path costs;
- the share of time per stage: decode, resize, backbone, RPN, box head, keypoint
  head (keypoint RoIAlign, head, predictor), fusion, log write, other;
- for keypoints, whether each run's pseudo-label file equals the one of the run with
  neither (same thresholds, annotations and keypoints), and the AP against the hidden
  truth.

Teachers are trained on the synthetic labeled split when not given (cached in --out).
One torch thread by default, as one worker on a shared 2-core machine runs::

    python benchmarks/throughput.py --kp-teacher T.pt --box-teacher T.pt --images 16
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

import distill.annotate as annotate_module
from distill.annotate import Teacher, infer_to_log, score_floor
from distill.data import generate
from distill.options import InferenceOptions
from distill.predictions import PredictionLog
from distill.pseudolabels import SelectionConfig, finalize
from distill.tta.boxes import BoxTTA
from training.pseudo_quality import pseudo_label_quality
from training.trainer import TrainConfig, train

STAGES = ("decode", "resize", "backbone", "rpn", "box head", "keypoint head", "fusion",
          "log write")


class Timers:
    """Seconds per stage, from forward hooks on the detector's parts and wrapped calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._start: dict[int, float] = {}

    def hook(self, module: torch.nn.Module, stage: str) -> None:
        """Times every call of ``module`` as ``stage``."""
        def pre(mod: torch.nn.Module, args: Any) -> None:
            self._start[id(mod)] = time.perf_counter()

        def post(mod: torch.nn.Module, args: Any, out: Any) -> None:
            self.seconds[stage] += time.perf_counter() - self._start.pop(id(mod))
        module.register_forward_pre_hook(pre)
        module.register_forward_hook(post)

    def wrap(self, fn: Callable[..., Any], stage: str) -> Callable[..., Any]:
        """``fn`` timed as ``stage``."""
        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - t0
        return timed


@contextmanager
def instrumented(teacher: Teacher, timers: Timers) -> Iterator[None]:
    """Hooks on the teacher's model and wrappers on decode, fusion and the log write."""
    model = teacher.model
    timers.hook(model.transform, "resize")
    timers.hook(model.backbone, "backbone")
    timers.hook(model.rpn, "rpn")
    heads = model.roi_heads
    if teacher.card.task == "keypoints":
        for part in (heads.box_roi_pool, heads.box_head, heads.box_predictor):
            timers.hook(part, "box head")
        for part in (heads.keypoint_roi_pool, heads.keypoint_head, heads.keypoint_predictor):
            timers.hook(part, "keypoint head")
    else:
        timers.hook(heads, "box head")
    saved = (annotate_module.load_image, BoxTTA._fuse, PredictionLog.append)
    annotate_module.load_image = timers.wrap(saved[0], "decode")  # type: ignore[assignment]
    BoxTTA._fuse = timers.wrap(saved[1], "fusion")  # type: ignore[method-assign]
    PredictionLog.append = timers.wrap(saved[2], "log write")  # type: ignore[method-assign]
    try:
        yield
    finally:
        annotate_module.load_image, BoxTTA._fuse, PredictionLog.append = saved  # type: ignore[method-assign]
        for module in model.modules():
            module._forward_hooks.clear()
            module._forward_pre_hooks.clear()


def run(checkpoint: Path, images: list[Path], options: InferenceOptions, out: Path
        ) -> dict[str, Any]:
    """The worker's loop over ``images``: seconds, stage shares, and the COCO file."""
    teacher = Teacher.load(checkpoint, options)
    infer_to_log(teacher, [(images[0].name, images[0])], PredictionLog(out / "warmup.jsonl"))
    log = PredictionLog(out / "predictions.jsonl")
    log.path.unlink(missing_ok=True)
    timers = Timers()
    with instrumented(teacher, timers):
        t0 = time.perf_counter()
        infer_to_log(teacher, [(p.name, p) for p in images], log,
                     floor=score_floor(teacher, SelectionConfig()))
        seconds = time.perf_counter() - t0
    coco = finalize(log.read().values(), teacher.card, SelectionConfig(), teacher.info())
    shares = {s: timers.seconds.get(s, 0.0) / seconds for s in STAGES}
    shares["other"] = max(0.0, 1 - sum(shares.values()))
    return {"img_s": len(images) / seconds, "s_img": seconds / len(images), "shares": shares,
            "coco": coco, "passes": len(teacher.predictor.transforms), "card": teacher.card}


def floor(checkpoint: Path, images: list[Path], preset: str) -> float:
    """Seconds per image of the backbone passes alone (resize + backbone per transform)."""
    from distill.images import load_image

    teacher = Teacher.load(checkpoint, InferenceOptions(tta=preset))
    model, tensors = teacher.model, [load_image(p) for p in images]
    with torch.inference_mode():
        model.backbone(teacher.predictor.transforms[0].apply(tensors[:1], model.transform).tensors)
        t0 = time.perf_counter()
        for img in tensors:
            for t in teacher.predictor.transforms:
                model.backbone(t.apply([img], model.transform).tensors)
    return (time.perf_counter() - t0) / len(tensors)


def same_pseudo_labels(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The same images, annotations (boxes, scores, keypoints) and thresholds."""
    return (a["images"] == b["images"] and a["annotations"] == b["annotations"]
            and a["info"]["thresholds"] == b["info"]["thresholds"])


def _teacher(splits: dict[str, Any], out: Path, task: str, iters: int, given: Path | None
             ) -> Path:
    if given is not None:
        return given
    ckpt = out / f"teacher-{task}.pt"
    if not ckpt.exists():
        print(f"training the {task} teacher for {iters} iterations ...", flush=True)
        split = "keypoints_json" if task == "keypoints" else "boxes_json"
        train(TrainConfig(task=task, train_json=getattr(splits["labeled"], split),  # type: ignore[arg-type]
                          images=splits["labeled"].images_dir, out=ckpt, iters=iters,
                          device="cpu", progress=False))
    return ckpt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("out/bench-throughput"))
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--presets", nargs="+", default=["standard", "paper-relative"])
    ap.add_argument("--kp-teacher", type=Path)
    ap.add_argument("--box-teacher", type=Path)
    ap.add_argument("--train-iters", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="images per forward pass of the defaults and cap-only runs "
                         "(default: the worker's, 1 on a CPU)")
    ap.add_argument("--tasks", nargs="+", choices=("keypoints", "boxes"),
                    default=["keypoints", "boxes"])
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    splits = generate(args.out / "data", labeled=100, unlabeled=max(100, args.images),
                      test=0, seed=0)
    images = sorted(splits["unlabeled"].images_dir.glob("*.png"))[: args.images]
    given = {"keypoints": args.kp_teacher, "boxes": args.box_teacher}
    teachers = {task: _teacher(splits, args.out, task, args.train_iters, given[task])
                for task in args.tasks}
    rows = []
    for task, ckpt in teachers.items():
        truth = json.loads(getattr(splits["unlabeled"], f"{task}_json").read_text())
        for preset in args.presets:
            base = InferenceOptions(tta=preset, batch_size=args.batch_size)
            default = run(ckpt, images, base, args.out / f"{task}-{preset}-default")
            row = {"task": task, "preset": preset, "passes": default["passes"],
                   "floor_s": floor(ckpt, images, preset), "default": default}
            if task == "keypoints":
                row["cap only"] = run(ckpt, images, replace(base, keypoint_floor=0.0),
                                      args.out / f"{task}-{preset}-cap")
                # The path before the cap and the floor, at the batch size it had (4).
                row["neither"] = run(ckpt, images, replace(base, keypoint_cap=0,
                                                           keypoint_floor=0.0, batch_size=4),
                                     args.out / f"{task}-{preset}-all")
                for name in ("default", "cap only", "neither"):
                    row[name]["same_file"] = same_pseudo_labels(row[name]["coco"],
                                                                row["neither"]["coco"])
                    quality = pseudo_label_quality(row[name]["coco"], truth, row[name]["card"])
                    row[name]["ap"] = quality["keypoints"]["AP"]
                # The floor alone: the defaults against the cap only, at one batch size.
                row["floor_same"] = same_pseudo_labels(row["default"]["coco"],
                                                       row["cap only"]["coco"])
            rows.append(row)
            print(_line(row), flush=True)
    print("\nshare of time per stage (defaults):")
    print("task       preset           " + " ".join(f"{s[:9]:>9s}" for s in (*STAGES, "other")))
    for row in rows:
        shares = row["default"]["shares"]
        print(f"{row['task']:10s} {row['preset']:16s} "
              + " ".join(f"{100 * shares[s]:8.1f}%" for s in (*STAGES, "other")))
    return 0


def _line(row: dict[str, Any]) -> str:
    text = (f"{row['task']:9s} {row['preset']:15s} {row['passes']:2d} passes, floor "
            f"{row['floor_s']:.3f} s/img:")
    for name in ("default", "cap only", "neither"):
        if name not in row:
            continue
        r = row[name]
        text += (f"\n    {name:9s} {r['img_s']:.2f} img/s ({r['s_img']:.3f} s/img, "
                 f"{r['s_img'] / row['floor_s']:.2f}x floor)")
        if "same_file" in r:
            speedup = row["neither"]["s_img"] / r["s_img"]
            text += (f", {speedup:.2f}x the speed of neither, file "
                     f"{'identical' if r['same_file'] else 'DIFFERS'}, keypoint AP {r['ap']:.1f}")
    if "floor_same" in row:
        text += ("\n    the score floor alone (defaults vs cap only): file "
                 + ("identical" if row["floor_same"] else "DIFFERS"))
    return text


if __name__ == "__main__":
    sys.exit(main())
