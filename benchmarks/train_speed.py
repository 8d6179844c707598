"""Training iterations per second on this CPU, and whether a short run's numbers move.

Trains the tiny detector (the sweep's settings: batch 4, one torch thread, no data
workers) on a labeled COCO set for ``--warm`` + ``--iters`` iterations and reports
the iterations per second of the timed part, per task. With ``--profile`` it also
prints torch's operator profile of a few iterations (where the time goes).

``--save REF.json`` records each iteration's losses and a digest of the final weights;
``--compare REF.json`` reruns the same training and prints the largest differences,
so a speed change can show that it leaves training's numbers as they were (or how far
floating-point reordering moves them)::

    python benchmarks/train_speed.py --data out/speed-data --iters 40 --save ref.json
    # ... change the code ...
    python benchmarks/train_speed.py --data out/speed-data --iters 40 --compare ref.json

``--data`` is a folder with ``annotations/labeled_{boxes,keypoints}.json`` and
``images/labeled`` (``distill synth`` writes that layout; missing, it is generated).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from distill.checkpoint import load_checkpoint
from training.train_config import TrainConfig
from training.trainer import train


def _data(folder: Path, labeled: int) -> Path:
    if not (folder / "annotations" / "labeled_boxes.json").is_file():
        subprocess.run([sys.executable, "-m", "distill.cli", "synth", str(folder),
                        "--labeled", str(labeled), "--unlabeled", "0", "--test", "0"],
                       check=True)
    return folder


def _run(data: Path, task: str, iters: int, out: Path, seed: int,
         precision: str = "fp32") -> dict[str, Any]:
    cfg = TrainConfig(task=task,  # type: ignore[arg-type]
                      train_json=data / "annotations" / f"labeled_{task}.json",
                      images=data / "images" / "labeled", iters=iters, out=out, seed=seed,
                      log_every=1, checkpoint_every=10 ** 9, progress=False,
                      tensorboard=False, precision=precision)  # type: ignore[arg-type]
    t0, c0 = time.perf_counter(), time.process_time()
    result = train(cfg)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    _, state, _ = load_checkpoint(out)
    return {"wall": wall, "cpu": cpu, "history": result.history, "state": state}


def _timed(data: Path, task: str, warm: int, iters: int, seed: int,
           precision: str = "fp32") -> dict[str, Any]:
    """Iterations per second of CPU time over the iterations after ``warm`` (the first
    ones pay one-off costs): the difference of a ``warm + iters`` and a ``warm`` run.
    CPU time, not wall time, so that other processes on the machine do not count (the
    process has one thread); the wall-clock rate is reported beside it."""
    with tempfile.TemporaryDirectory() as tmp:
        short = _run(data, task, warm, Path(tmp) / "short.pt", seed, precision)
        run = _run(data, task, warm + iters, Path(tmp) / f"{task}.pt", seed, precision)
    hist = run["history"]
    return {"its_per_s": iters / (run["cpu"] - short["cpu"]),
            "wall_its_per_s": iters / (run["wall"] - short["wall"]),
            "losses": [h["loss"] for h in hist],
            "weights": {k: v.double().sum().item() for k, v in run["state"].items()
                        if v.is_floating_point()}}


def _profile(data: Path, task: str, iters: int, seed: int, precision: str = "fp32") -> None:
    from torch.profiler import ProfilerActivity, profile
    with tempfile.TemporaryDirectory() as tmp, \
            profile(activities=[ProfilerActivity.CPU]) as prof:
        _run(data, task, iters, Path(tmp) / f"{task}.pt", seed, precision)
    print(prof.key_averages().table(sort_by="cpu_time_total", row_limit=40))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=Path("out/speed-data"))
    ap.add_argument("--labeled", type=int, default=150, help="when generating --data")
    ap.add_argument("--tasks", nargs="+", default=["boxes", "keypoints"])
    ap.add_argument("--warm", type=int, default=5)
    ap.add_argument("--iters", type=int, default=40)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32",
                    help="the training's --precision")
    ap.add_argument("--save", type=Path)
    ap.add_argument("--compare", type=Path)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(args.threads)
    data = _data(args.data, args.labeled)
    results: dict[str, Any] = {}
    for task in args.tasks:
        if args.profile:
            _profile(data, task, args.warm, args.seed, args.precision)
        res = _timed(data, task, args.warm, args.iters, args.seed, args.precision)
        results[task] = res
        print(f"{task}: {res['its_per_s']:.3f} it/s of CPU time ({res['wall_its_per_s']:.3f} "
              f"wall) over {args.iters} iterations after {args.warm} warm-up; batch 4, "
              f"{args.threads} thread(s), {args.precision}")
    if args.save:
        args.save.write_text(json.dumps(results))
    if args.compare:
        ref = json.loads(args.compare.read_text())
        for task, res in results.items():
            old = ref[task]
            dl = max(abs(a - b) for a, b in zip(res["losses"], old["losses"], strict=True))
            rel = max(abs(res["weights"][k] - v) / max(abs(v), 1e-6)
                      for k, v in old["weights"].items())
            print(f"{task}: largest loss difference {dl:.2e}; largest relative difference "
                  f"of a weight tensor's sum {rel:.2e}; it/s {old['its_per_s']:.3f} -> "
                  f"{res['its_per_s']:.3f} ({res['its_per_s'] / old['its_per_s']:.2f}x)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
