"""An ONNX teacher: pseudo-label AP of the ``standard`` preset against its single pass,
and images per second on the CPU.

The teacher is made for the purpose: the project's ``tiny`` box detector, trained on the
synthetic labeled split (or given with --teacher), wrapped to emit Ultralytics' detect
export layout ``[1, 4 + C, N]`` (its raw per-class boxes before NMS, each as cx, cy, w,
h and a one-hot row of class scores) and exported with ``torch.onnx`` with a dynamic
input size. It is imported exactly as a user imports a YOLO export
(``distill teacher import --arch yolo-onnx``), then annotates the unlabeled split with
the ``identity`` preset (one pass: the model's own output after its NMS) and with
``standard``, under calibrated selection; the pseudo-labels are scored against the
split's hidden ground truth. One torch thread and one onnxruntime thread.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/onnx_teacher.py --out out/bench-onnx``
"""

from __future__ import annotations

import argparse
import io
import json
import platform
import time
import warnings
from pathlib import Path

import onnxruntime
import torch
from torch import Tensor, nn
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.image_list import ImageList

from distill.annotate import annotate_folder
from distill.checkpoint import load_checkpoint, save_checkpoint
from distill.coco import objects
from distill.data import generate
from distill.models.zoo import build_from_card
from distill.options import InferenceOptions
from distill.teachers.interface import ImportRequest
from distill.teachers.onnx_import import import_onnx
from training.pseudo_quality import raw_and_kept_ap
from training.trainer import TrainConfig, train

CANDIDATES = 1000  # anchors of the exported layout: the R-CNN's raw boxes, zero-padded


class YoloLayout(nn.Module):
    """A torchvision R-CNN that answers like an Ultralytics detect export: the input is
    the letterboxed [0, 1] RGB batch of one image, the output ``[1, 4 + C, N]``."""

    def __init__(self, model: GeneralizedRCNN) -> None:
        super().__init__()
        self.model = model.eval()
        heads = model.roi_heads
        heads.nms_thresh, heads.detections_per_img = 1.0, CANDIDATES  # raw: no NMS
        self.classes = heads.box_predictor.cls_score.out_features - 1

    def forward(self, x: Tensor) -> Tensor:
        m, heads = self.model, self.model.roi_heads
        norm = m.transform.normalize(x[0])[None]  # the letterbox already sized the image
        batch = ImageList(norm, [(x.shape[-2], x.shape[-1])])
        features = m.backbone(norm)
        proposals, _ = m.rpn(batch, features)
        pooled = heads.box_head(heads.box_roi_pool(features, proposals, batch.image_sizes))
        logits, deltas = heads.box_predictor(pooled)
        boxes, scores, labels = (v[0] for v in heads.postprocess_detections(
            logits, deltas, proposals, batch.image_sizes))
        n = CANDIDATES
        boxes = torch.cat([boxes, boxes.new_zeros((n, 4))])[:n]
        onehot = nn.functional.one_hot(labels - 1, self.classes).to(scores.dtype)
        cls = torch.cat([onehot * scores[:, None], scores.new_zeros((n, self.classes))])[:n]
        xywh = torch.cat([(boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]], 1)
        return torch.cat([xywh, cls], 1).T[None]


def export_yolo_layout(checkpoint: Path, out: Path, imgsz: int) -> Path:
    """The teacher as a dynamic-size ONNX file in the YOLO detect layout."""
    card, state, _ = load_checkpoint(checkpoint)
    wrapped = YoloLayout(build_from_card(card, state)).eval()
    buf = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapped, (torch.rand(1, 3, imgsz, imgsz),), buf, dynamo=False,
                          input_names=["images"], output_names=["output0"], opset_version=17,
                          dynamic_axes={"images": {2: "height", 3: "width"},
                                        "output0": {2: "anchors"}})
    import onnx  # only to write the metadata an Ultralytics export carries

    proto = onnx.load_from_string(buf.getvalue())
    for key, value in {"imgsz": [imgsz, imgsz], "stride": 32, "task": "detect",
                       "names": {i: c["name"] for i, c in enumerate(card.categories)}}.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    out.write_bytes(proto.SerializeToString())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("out/bench-onnx"))
    parser.add_argument("--iters", type=int, default=600, help="teacher iterations")
    parser.add_argument("--teacher", type=Path, help="a tiny box teacher trained on the "
                        "seed-0 synthetic labeled split, instead of training one")
    parser.add_argument("--imgsz", type=int, default=320, help="the export's letterbox size")
    parser.add_argument("--images", type=int, default=100, help="unlabeled images to annotate")
    args = parser.parse_args()
    torch.set_num_threads(1)  # onnxruntime takes as many (distill.teachers.onnx_session)
    torch.manual_seed(0)
    files = generate(args.out / "data", labeled=100, unlabeled=args.images, test=0, seed=0)
    labeled, unlabeled = files["labeled"], files["unlabeled"]
    teacher = args.teacher or args.out / "teacher-boxes.pt"
    if not teacher.exists():
        print(f"training the tiny box teacher for {args.iters} iterations ...", flush=True)
        train(TrainConfig(task="boxes", train_json=labeled.boxes_json,
                          images=labeled.images_dir, out=teacher, iters=args.iters,
                          device="cpu", progress=False))
    onnx_file = export_yolo_layout(teacher, args.out / "teacher-boxes.onnx", args.imgsz)
    # The R-CNN's own score floor, NMS and detections per image, so that one pass is the
    # same model's answer under either runtime (up to the letterbox).
    own = {"score_thresh": 0.02, "nms_thresh": 0.5, "max_det": 100}
    card, tensors = import_onnx(ImportRequest("yolo-onnx", onnx_file, labeled.boxes_json,
                                              labeled_json=labeled.boxes_json,
                                              arch_options=own))
    onnx_teacher = args.out / "teacher-boxes-onnx.pt"
    save_checkpoint(onnx_teacher, card, tensors)
    print(f"machine: {platform.processor() or platform.machine()}, torch "
          f"{torch.__version__} ({torch.get_num_threads()} thread), onnxruntime "
          f"{onnxruntime.__version__} (1 thread); teacher {teacher}, {card.arch} at "
          f"{args.imgsz} px (dynamic input)")

    rows = []
    for name, ckpt, preset in (("tiny R-CNN (torch)", teacher, "identity"),
                               ("yolo-onnx", onnx_teacher, "identity"),
                               ("yolo-onnx", onnx_teacher, "standard")):
        pseudo = args.out / f"pseudo-{ckpt.stem}-{preset}.json"
        Path(str(pseudo) + ".predictions.jsonl").unlink(missing_ok=True)
        t0 = time.perf_counter()
        annotate_folder(ckpt, unlabeled.images_dir, pseudo,
                        options=InferenceOptions(tta=preset), progress=False)
        seconds = time.perf_counter() - t0
        raw, kept = raw_and_kept_ap(pseudo, unlabeled.boxes_json, load_checkpoint(ckpt)[0])
        coco = json.loads(pseudo.read_text())
        rows.append((name, preset, len(coco["info"]["transforms"]), raw["bbox"], kept["bbox"],
                     len(objects(coco)), len(coco["images"]) / seconds))
    print(f"\nbox pseudo-labels of {args.images} unlabeled images (COCO AP vs hidden truth):")
    print("| teacher | preset (passes) | raw AP | kept AP | kept | images / s |")
    print("| --- | --- | ---: | ---: | ---: | ---: |")
    for name, preset, passes, raw_ap, kept_ap, kept, rate in rows:
        print(f"| {name} | {preset} ({passes}) | {raw_ap:.1f} | {kept_ap:.1f} | {kept} | "
              f"{rate:.2f} |")


if __name__ == "__main__":
    main()
