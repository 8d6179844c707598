"""What ``--precision bf16`` costs in AP and saves in time: fp32 and bf16 trainings side by side.

The sweep's x1 baseline (``distill sweep``'s settings: the tiny detector, 150 labeled
``figures`` images, 1,000 iterations, batch 4, lr 0.02, one thread), trained in both
precisions for each ``--seeds`` and evaluated on the 150 test images, single pass and
with the ``standard`` preset. Each step is a ``distill`` command (printed), run as a
child process whose CPU time is what the table's "train CPU s" reports, so other load
on the machine does not count. Resumable: finished steps are skipped::

    python benchmarks/precision_ap.py --out out/precision --seeds 1 2

The data are those of the sweep's seed ``--data-seed`` (``distill synth``; the labeled
and test images do not depend on the unlabeled count).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

DISTILL = [sys.executable, "-m", "distill.cli"]
PRECISIONS = ("fp32", "bf16")


def _child_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _run(args: list[str], log: Path) -> float:
    """Runs one ``distill`` command (output to ``log``); returns its CPU seconds."""
    print("+ distill " + " ".join(args), flush=True)
    before = _child_cpu()
    with log.open("a", encoding="utf-8") as fh:
        subprocess.run([*DISTILL, *args], check=True, stdout=fh, stderr=subprocess.STDOUT)
    return _child_cpu() - before


def _ap(path: Path, task: str) -> float:
    scores = json.loads(path.read_text(encoding="utf-8"))["scores"]
    return float(scores["keypoints" if task == "keypoints" else "bbox"]["AP"])


def one(data: Path, out: Path, task: str, seed: int, precision: str, iters: int
        ) -> dict[str, Any]:
    """Trains and evaluates one model unless its results exist; returns its row."""
    stem = out / f"{task}-{precision}-s{seed}"
    row_file = stem.with_suffix(".row.json")
    if row_file.is_file():
        row: dict[str, Any] = json.loads(row_file.read_text(encoding="utf-8"))
        return row
    log = stem.with_suffix(".log")
    ann, img = data / "annotations", data / "images"
    cpu = _run(["train", "--task", task, "--train-json", str(ann / f"labeled_{task}.json"),
                "--images", str(img / "labeled"), "--arch", "tiny", "--iters", str(iters),
                "--batch-size", "4", "--lr", "0.02", "--out", f"{stem}.pt", "--resume",
                "--seed", str(seed), "--checkpoint-every", "250", "--device", "cpu",
                "--no-tensorboard", "--quiet", "--threads", "1", "--precision", precision],
               log)
    evals = {"single": [], "tta": ["--tta", "standard", "--box-pooling", "nms"]}
    row = {"task": task, "seed": seed, "precision": precision, "train_cpu_s": round(cpu, 1)}
    for name, extra in evals.items():
        result = Path(f"{stem}.{name}.json")
        _run(["eval", "--model", f"{stem}.pt", "--json", str(ann / f"test_{task}.json"),
              "--images", str(img / "test"), "--out", str(result), *extra], log)
        row[f"ap_{name}"] = _ap(result, task)
    row_file.write_text(json.dumps(row), encoding="utf-8")
    return row


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as Markdown, then per task the mean bf16 - fp32 differences (paired by seed)
    and the training's speed-up."""
    lines = ["| task | seed | precision | train CPU s | AP | AP (TTA) |",
             "| --- | ---: | --- | ---: | ---: | ---: |"]
    lines += [f"| {r['task']} | {r['seed']} | {r['precision']} | {r['train_cpu_s']:.0f} | "
              f"{r['ap_single']:.1f} | {r['ap_tta']:.1f} |" for r in rows]
    lines.append("")
    for task in dict.fromkeys(r["task"] for r in rows):
        by = {(r["seed"], r["precision"]): r for r in rows if r["task"] == task}
        seeds = sorted({s for s, p in by if (s, "fp32") in by and (s, "bf16") in by})
        if not seeds:
            continue
        pairs = [(by[s, "fp32"], by[s, "bf16"]) for s in seeds]
        d1 = [b["ap_single"] - a["ap_single"] for a, b in pairs]
        d2 = [b["ap_tta"] - a["ap_tta"] for a, b in pairs]
        speed = [a["train_cpu_s"] / b["train_cpu_s"] for a, b in pairs]
        lines.append(f"{task}: bf16 - fp32 AP {statistics.mean(d1):+.1f} single, "
                     f"{statistics.mean(d2):+.1f} with TTA (seeds {seeds}: "
                     f"{', '.join(f'{d:+.1f}' for d in d1)}); training "
                     f"{statistics.mean(speed):.2f}x faster in CPU time")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("out/precision"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--tasks", nargs="+", default=["boxes", "keypoints"])
    ap.add_argument("--data-seed", type=int, default=1)
    ap.add_argument("--iters", type=int, default=1000)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / f"data-seed{args.data_seed}"
    if not (data / "annotations" / "test_boxes.json").is_file():
        _run(["synth", str(data), "--labeled", "150", "--unlabeled", "0", "--test", "150",
              "--seed", str(args.data_seed)], args.out / "synth.log")
    rows = [one(data, args.out, task, seed, precision, args.iters)
            for seed in args.seeds for task in args.tasks for precision in PRECISIONS]
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
