"""Two torch processes on one machine, with the default thread budgets (no --threads given).

Prints
1. the throughput of one worker and of two workers on the same images (two jobs, so
   that two workers can share them): the scaling factor;
2. a training alone, a worker alone, and both at once: how much each slows the other.

Everything runs locally (redis-server, ``distill serve``, ``distill worker``,
``distill train``), each process choosing its own threads as a user's would::

    python benchmarks/colocation.py --teacher out/bench-throughput/teacher-keypoints.pt
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from service_bench import REPO, Stack, _teacher, _wait


def _job_throughput(stack: Stack, files: list[tuple[str, bytes]], tta: str) -> float:
    """Images per second for two jobs (half the files each), submitted together."""
    half = len(files) // 2
    t0 = time.perf_counter()
    jobs = [stack.post(files[:half], tta=tta)["id"], stack.post(files[half:], tta=tta)["id"]]
    for job in jobs:
        assert stack.finish(job, poll=0.2)["status"] == "finished"
    return len(files) / (time.perf_counter() - t0)


def _train_cmd(data: Path, out: Path, iters: int) -> list[str]:
    return [sys.executable, "-m", "distill.cli", "train", "--task", "keypoints",
            "--train-json", str(data / "annotations" / "labeled_keypoints.json"),
            "--images", str(data / "images" / "labeled"), "--iters", str(iters),
            "--out", str(out), "--quiet"]


def _train_seconds_per_it(data: Path, out: Path, iters: int) -> float:
    """Seconds per iteration of a `distill train` run, from its metrics timestamps."""
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS",
                                                            "DISTILL_TORCH_THREADS")}
    subprocess.run(_train_cmd(data, out, iters), cwd=REPO, env=env, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    rows = [json.loads(line) for line in out.with_name(f"{out.stem}.metrics.jsonl")
            .read_text().splitlines() if line.strip()]
    # "elapsed_s" is cumulative: the steady rate is measured after the first logged row
    # (model build and the first iterations are start-up).
    first, last = rows[0], rows[-1]
    return (last["elapsed_s"] - first["elapsed_s"]) / (last["iter"] - first["iter"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", type=Path, help="keypoint teacher (default: random tiny)")
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--tta", default="standard")
    ap.add_argument("--train-iters", type=int, default=40)
    args = ap.parse_args()
    from distill.data import generate

    root = Path(tempfile.mkdtemp(prefix="colocation-"))
    splits = generate(root / "synth", labeled=16, unlabeled=args.images, test=0, seed=0)
    data = root / "synth"
    teacher = args.teacher or _teacher(root, splits["labeled"].keypoints_json)
    files = [(p.name, p.read_bytes())
             for p in sorted(splits["unlabeled"].images_dir.glob("*.png"))]
    report: dict[str, Any] = {"cores": len(os.sched_getaffinity(0))}
    # No thread settings anywhere: each process takes its default budget.
    os.environ.pop("DISTILL_TORCH_THREADS", None)
    os.environ.pop("OMP_NUM_THREADS", None)
    stack = Stack(root, teacher, {"batch_size": "4"})
    try:
        stack.start_api()
        stack.start_worker()
        stack.finish(stack.post(files[:1], tta=args.tta)["id"])  # warm-up
        report["one_worker"] = _job_throughput(stack, files, args.tta)
        second = stack.start_worker()
        _wait(lambda: stack.http.get("/readyz").json()["workers"] >= 2, 180, "a second worker")
        report["two_workers"] = _job_throughput(stack, files, args.tta)
        second.terminate()  # back to one worker for part 2
        second.wait(timeout=60)
        stack.procs.remove(second)
        # 2. training alone, worker alone, both at once.
        report["train_alone"] = _train_seconds_per_it(data, root / "alone.pt", args.train_iters)
        report["worker_alone"] = _job_throughput(stack, files, args.tta)
        result: dict[str, float] = {}
        trainer = threading.Thread(target=lambda: result.setdefault(
            "s_it", _train_seconds_per_it(data, root / "beside.pt", args.train_iters)))
        trainer.start()
        time.sleep(5)  # the training is past its start-up
        report["worker_beside_training"] = _job_throughput(stack, files, args.tta)
        trainer.join()
        report["train_beside_worker"] = result["s_it"]
    finally:
        stack.close()
    print(f"\ncolocation on {report['cores']} cores, default thread budgets, preset {args.tta}")
    scaling = report["two_workers"] / report["one_worker"]
    print(f"  one worker  {report['one_worker']:.2f} img/s; two workers "
          f"{report['two_workers']:.2f} img/s = {scaling:.2f}x")
    print(f"  training alone {report['train_alone']:.3f} s/it, beside a busy worker "
          f"{report['train_beside_worker']:.3f} s/it = "
          f"{report['train_beside_worker'] / report['train_alone']:.2f}x slower")
    print(f"  worker alone {report['worker_alone']:.2f} img/s, beside a training "
          f"{report['worker_beside_training']:.2f} img/s = "
          f"{report['worker_alone'] / report['worker_beside_training']:.2f}x slower")
    return 0


if __name__ == "__main__":
    sys.exit(main())
