"""Box TTA pooling: each transform's final detections ("nms") against Detectron's raw
per-class boxes before NMS ("raw"), scored against the unlabeled split's hidden truth.

Prints, per pooling, the COCO box AP of every ensembled prediction ("all") and of
the calibrated pseudo-label file ("kept"), precision and recall at IoU 0.5 of the
kept ones, their number, and the seconds it took::

    python benchmarks/pooling.py --teacher out/bench-throughput/teacher-boxes.pt \\
        --data out/bench-throughput/data --tta standard
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from distill.annotate import annotate_folder
from distill.checkpoint import load_checkpoint
from distill.options import FusionParams, InferenceOptions
from distill.pseudolabels import SelectionConfig
from training.pseudo_quality import pseudo_label_quality


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--teacher", type=Path, required=True, help="a box teacher")
    ap.add_argument("--data", type=Path, required=True, help="a `distill synth` folder")
    ap.add_argument("--tta", default="standard")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    card, _, _ = load_checkpoint(args.teacher)
    images = args.data / "images" / "unlabeled"
    truth = json.loads((args.data / "annotations" / "unlabeled_boxes.json").read_text())
    out = Path(tempfile.mkdtemp(prefix="pooling-"))
    print(f"{len(list(images.glob('*.png')))} unlabeled images, preset {args.tta}")
    print("pooling   AP all  AP kept  precision50  recall50  kept  seconds")
    for pooling in ("nms", "raw"):
        options = InferenceOptions(tta=args.tta, fusion=FusionParams(pooling=pooling))
        t0 = time.perf_counter()
        kept = annotate_folder(args.teacher, images, out / f"{pooling}.json", options=options,
                               progress=False)
        seconds = time.perf_counter() - t0
        kept_coco = json.loads(kept.output.read_text())
        # Same prediction log (resumed, no inference again), every prediction kept.
        everything = annotate_folder(args.teacher, images, out / f"{pooling}.json",
                                     options=options, progress=False,
                                     selection=SelectionConfig(score_threshold=0.0))
        q_kept = pseudo_label_quality(kept_coco, truth, card)["bbox"]
        q_all = pseudo_label_quality(json.loads(everything.output.read_text()), truth,
                                     card)["bbox"]
        print(f"{pooling:8s} {q_all['AP']:7.1f} {q_kept['AP']:8.1f} "
              f"{q_kept['precision50']:12.3f} {q_kept['recall50']:9.3f} "
              f"{kept.annotations:5d} {seconds:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
