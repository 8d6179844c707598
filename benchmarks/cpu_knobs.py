"""Do the usual CPU speed knobs pay for the teacher's backbone passes? (issue 14, point 3)

Times the backbone of a teacher over the passes of a TTA preset, per image, for:

- ``plain``: one pass at a time (what the worker does);
- ``flip pair batched``: the passes of an image that share a shape (a scale's
  identity and mirror) through the backbone as one batch;
- ``channels_last``: the backbone and its input in channels-last memory format;
- ``torch.compile``: the backbone compiled (``dynamic=True``: image sizes vary),
  its compile time reported apart.

Each variant's outputs are compared with the plain ones (max absolute difference),
so a knob that changes the numbers shows it::

    python benchmarks/cpu_knobs.py --teacher out/bench-throughput/teacher-keypoints.pt \\
        --images out/bench-throughput/data/images/unlabeled --count 12 --threads 1
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor

from distill.annotate import Teacher
from distill.images import load_image
from distill.options import InferenceOptions


def _passes(teacher: Teacher, images: list[Tensor]) -> list[list[Tensor]]:
    """Per image, the resized (and mirrored) input tensor of every transform."""
    model = teacher.model
    return [[t.apply([img], model.transform).tensors for t in teacher.predictor.transforms]
            for img in images]


def _time(fn: Callable[[], list[Tensor]]) -> tuple[float, list[Tensor]]:
    fn()  # warm-up (allocator, one-off kernels)
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", type=Path, required=True)
    ap.add_argument("--images", type=Path, required=True)
    ap.add_argument("--count", type=int, default=12)
    ap.add_argument("--tta", default="standard")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    teacher = Teacher.load(args.teacher, InferenceOptions(tta=args.tta))
    backbone = teacher.model.backbone.eval()
    files = sorted(args.images.glob("*.png"))[: args.count]
    inputs = _passes(teacher, [load_image(p) for p in files])
    n = len(files)

    def plain(net: Callable[[Tensor], dict[str, Tensor]] = backbone,
              fmt: torch.memory_format = torch.contiguous_format) -> list[Tensor]:
        with torch.inference_mode():
            return [net(x.contiguous(memory_format=fmt))["0"] for per in inputs for x in per]

    def paired() -> list[Tensor]:
        """Passes of one image that share a shape (a scale's identity and mirror) as one
        batch; outputs back in pass order."""
        out: list[Tensor] = []
        with torch.inference_mode():
            for per in inputs:
                groups: dict[tuple[int, ...], list[int]] = {}
                for i, x in enumerate(per):
                    groups.setdefault(tuple(x.shape), []).append(i)
                results: dict[int, Tensor] = {}
                for members in groups.values():
                    batch = backbone(torch.cat([per[i] for i in members]))["0"]
                    results.update({i: batch[k:k + 1] for k, i in enumerate(members)})
                out += [results[i] for i in range(len(per))]
        return out

    base_s, base = _time(plain)
    rows = [("plain", base_s, 0.0)]
    for name, fn in (("flip pair batched", paired),
                     ("channels_last", lambda: plain(backbone.to(
                         memory_format=torch.channels_last), torch.channels_last))):
        seconds, out = _time(fn)
        rows.append((name, seconds, max(float((a - b).abs().max()) for a, b in zip(
            out, base, strict=True))))
    backbone.to(memory_format=torch.contiguous_format)
    if not args.no_compile:
        compiled = torch.compile(backbone, dynamic=True)
        t0 = time.perf_counter()
        plain(compiled)  # the first call compiles
        compile_s = time.perf_counter() - t0
        seconds, out = _time(lambda: plain(compiled))
        rows.append((f"torch.compile (compiling took {compile_s:.0f} s)", seconds,
                     max(float((a - b).abs().max()) for a, b in zip(out, base, strict=True))))
    print(f"{n} images x {len(inputs[0])} passes ({args.tta}), {args.threads} thread(s); "
          "backbone seconds per image:")
    for name, seconds, diff in rows:
        print(f"  {name:45s} {seconds / n:.4f} s/img  {base_s / seconds:5.2f}x  "
              f"max |diff| {diff:.2e}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
