"""GPU check: the ResNet-50 keypoint and box teachers under the ``paper`` preset on a GPU.

Prints, per task, images per second in float32 and in float16 (autocast), the
batch size that ran (after any out-of-memory back-off), peak GPU memory, and
how well the float16 pseudo-labels agree with the float32 ones on the same
images: the share of float32 detections (the 20 best per image) matched by a
float16 one of the same class at IoU >= 0.9, the mean IoU of the matches, and for
keypoints the mean distance of matched keypoints in pixels.

The teachers have random weights (nothing is downloaded): the figures are
speed and numerical agreement, not accuracy. A trained checkpoint can be given
with ``--kp-teacher`` / ``--box-teacher``. ``--dry-run`` runs the same code on
the CPU with the tiny model, small images and one pass, for the test suite::

    python benchmarks/gpu_check.py --device cuda --images 32 --batch-size 8
    python benchmarks/gpu_check.py --dry-run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torchvision.ops import box_iou

from distill.annotate import Teacher
from distill.card import ModelCard, flip_map_from_names
from distill.checkpoint import save_checkpoint
from distill.coco import COCO_SIGMAS
from distill.data import PERSON_CATEGORY
from distill.models.zoo import build_model
from distill.options import InferenceOptions

COCO17 = list(COCO_SIGMAS)
TOP = 20  # detections per image compared: random weights give no confident ones


def _teacher(root: Path, task: str, arch: str, sizes: tuple[int, int]) -> Path:
    """A random-weight teacher checkpoint of ``arch``."""
    torch.manual_seed(0)
    if task == "keypoints":
        names = COCO17 if arch != "tiny" else list(PERSON_CATEGORY["keypoints"])
        cats = [{"id": 1, "name": "person", "keypoints": names}]
        model = build_model(arch, "keypoints", num_classes=2, num_keypoints=len(names),
                            min_size=sizes[0], max_size=sizes[1])
        flip = flip_map_from_names(names)
    else:
        cats = [{"id": i, "name": f"class{i}"} for i in range(1, 4)]
        model = build_model(arch, "boxes", num_classes=4, min_size=sizes[0], max_size=sizes[1])
        flip = []
    card = ModelCard(arch=arch, task=task, categories=cats,  # type: ignore[arg-type]
                     min_size=sizes[0], max_size=sizes[1], flip_map=flip,
                     provenance={"name": f"gpu-check-{task}"})
    path = root / f"{task}.pt"
    save_checkpoint(path, card, model.state_dict())
    return path


def _images(n: int, size: tuple[int, int]) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.rand(3, size[1], size[0], generator=g) for _ in range(n)]


def _run(teacher: Teacher, images: list[torch.Tensor], batch: int
         ) -> tuple[list[dict[str, torch.Tensor]], float]:
    """All images through the predictor in batches (halving on OOM); outputs, seconds."""
    outputs: list[dict[str, torch.Tensor]] = []
    t0 = time.perf_counter()
    k = 0
    while k < len(images):
        chunk = images[k:k + batch]
        try:
            outputs += teacher.predictor(chunk)
            k += len(chunk)
        except torch.cuda.OutOfMemoryError:
            torch.cuda.empty_cache()
            if batch == 1:
                raise
            batch //= 2
    if teacher.predictor.device.type == "cuda":
        torch.cuda.synchronize()
    return outputs, time.perf_counter() - t0


def agreement(full: list[dict[str, torch.Tensor]], half: list[dict[str, torch.Tensor]]
              ) -> dict[str, float]:
    """How far float16 detections are from float32 ones (see the module docstring)."""
    matched = total = 0
    ious: list[float] = []
    dists: list[float] = []
    for a, b in zip(full, half, strict=True):
        keep = a["scores"].argsort(descending=True)[:TOP]
        boxes, labels = a["boxes"][keep], a["labels"][keep]
        total += len(boxes)
        if not len(boxes) or not len(b["boxes"]):
            continue
        iou = box_iou(boxes, b["boxes"])
        iou[labels[:, None] != b["labels"][None, :]] = 0
        best, j = iou.max(dim=1)
        ok = best >= 0.9
        matched += int(ok.sum())
        ious += best[ok].tolist()
        if "keypoints" in a and ok.any():
            ka = a["keypoints"][keep][ok][..., :2]
            kb = b["keypoints"][j[ok]][..., :2]
            dists.append(float((ka - kb).norm(dim=-1).mean()))
    return {"matched": matched / total if total else 1.0, "detections": float(total),
            "mean_iou": sum(ious) / len(ious) if ious else 1.0,
            "kp_px": sum(dists) / len(dists) if dists else 0.0}


def check(task: str, checkpoint: Path, args: argparse.Namespace) -> dict[str, Any]:
    """One teacher: float32 and float16 runs, their speed and agreement."""
    options = InferenceOptions(tta=args.tta, device=args.device, batch_size=args.batch_size)
    images = _images(args.images, tuple(args.image_size))
    report: dict[str, Any] = {"task": task}
    outputs = {}
    for name, half in (("fp32", False), ("fp16", True)):
        teacher = Teacher.load(checkpoint, replace(options, half=half))
        _run(teacher, images[:1], 1)  # warm-up: cuDNN autotuning, allocator
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        outputs[name], seconds = _run(teacher, images, args.batch_size)
        report[f"{name}_img_s"] = len(images) / seconds
        report["passes"] = len(teacher.predictor.transforms)
        if args.device.startswith("cuda"):
            report[f"{name}_peak_gib"] = torch.cuda.max_memory_allocated() / 2**30
    report.update(agreement(outputs["fp32"], outputs["fp16"]))
    return report


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tta", default="paper")
    ap.add_argument("--images", type=int, default=32)
    ap.add_argument("--image-size", type=int, nargs=2, default=(640, 480), help="W H")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--kp-teacher", type=Path)
    ap.add_argument("--box-teacher", type=Path)
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU, tiny model, 2 small images, identity preset (for tests)")
    args = ap.parse_args(argv)
    arch, sizes = "keypointrcnn_resnet50_fpn", (800, 1333)
    if args.dry_run:
        args.device, args.tta, args.images, args.image_size = "cpu", "identity", 2, (96, 80)
        args.batch_size = 2
        arch, sizes = "tiny", (64, 96)
    elif not torch.cuda.is_available() and args.device.startswith("cuda"):
        print("no CUDA device here: run on a GPU machine, or --dry-run", file=sys.stderr)
        return 2
    root = Path(tempfile.mkdtemp(prefix="gpu-check-"))
    box_arch = "fasterrcnn_resnet50_fpn" if arch != "tiny" else "tiny"
    teachers = {"keypoints": args.kp_teacher or _teacher(root, "keypoints", arch, sizes),
                "boxes": args.box_teacher or _teacher(root, "boxes", box_arch, sizes)}
    gpu = torch.cuda.get_device_name() if args.device != "cpu" else "cpu"
    print(f"device {args.device} ({gpu}), preset {args.tta}, {args.images} images of "
          f"{args.image_size[0]}x"
          f"{args.image_size[1]}, batch {args.batch_size}")
    for task, path in teachers.items():
        r = check(task, path, args)
        memory = (f", peak {r['fp32_peak_gib']:.1f} / {r['fp16_peak_gib']:.1f} GiB"
                  if "fp32_peak_gib" in r else "")
        print(f"  {task:9s} {r['passes']:2d} passes: fp32 {r['fp32_img_s']:.2f} img/s, fp16 "
              f"{r['fp16_img_s']:.2f} img/s{memory}; fp16 vs fp32: {100 * r['matched']:.1f}% "
              f"of {int(r['detections'])} detections matched (mean IoU {r['mean_iou']:.4f})"
              + (f", keypoints {r['kp_px']:.2f} px apart" if task == "keypoints" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
