"""The worker serves an ONNX teacher end to end, on the real stack (real Redis, API and
worker processes): a YOLO-pose export imported with `distill teacher import`, registered
beside nothing else, annotates with flips, and the pseudo-labels come back calibrated."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from distill.card import LabeledStats
from distill.cardfile import file_sha256
from distill.checkpoint import save_checkpoint
from distill.teachers.interface import ImportRequest
from distill.teachers.onnx_import import import_onnx
from tests.conftest import ServiceStack
from tests.onnx_models import KEYPOINTS, RedBlob, export


def test_a_worker_serves_an_onnx_pose_teacher(make_stack: Callable[..., ServiceStack],
                                              tmp_path: Path) -> None:
    onnx = export(RedBlob(pose=True), tmp_path / "blob.onnx", (128, 160),
                  metadata={"names": {0: "person"}, "kpt_shape": [3, 3], "task": "pose"})
    data = tmp_path / "data.yaml"
    data.write_text(f"names: [person]\nkpt_shape: [3, 3]\nflip_idx: [0, 2, 1]\n"
                    f"kpt_names: {{0: {KEYPOINTS}}}\n")
    stats = LabeledStats(images=4, instances_per_image={"1": 1.0},
                         visible_keypoints_per_instance=3.0)
    card, tensors = import_onnx(ImportRequest("yolo-onnx", onnx, data, stats=stats,
                                              stats_source="test"))
    teacher = tmp_path / "yolo-pose.pt"
    save_checkpoint(teacher, card, tensors)
    images = []
    for i in range(3):
        pixels = np.zeros((150, 200, 3), dtype=np.uint8)
        pixels[30 + 10 * i:110, 20 + 10 * i:120, 0] = 255
        Image.fromarray(pixels).save(tmp_path / f"img{i}.png")
        images.append(tmp_path / f"img{i}.png")

    stack = make_stack(api=True, workers=0, one_teacher=False, teachers=f"yolo={teacher}")
    stack.start_worker(args=("--teacher", "yolo"))
    job = stack.submit(images, teacher="yolo", tta="flip")
    stack.wait_job(job["id"])
    with stack.client() as c:
        coco = c.get(f"/jobs/{job['id']}/annotations").json()
    assert coco["info"]["teacher"]["sha256"] == file_sha256(teacher)
    assert coco["info"]["keypoint_fusion"].startswith("confidence-weighted")
    assert coco["info"]["transforms"] == ["160", "160+flip"]
    assert coco["categories"][0]["keypoints"] == KEYPOINTS
    # Calibrated: one person per image, as the labeled statistics say, with both passes.
    assert len(coco["annotations"]) == 3
    for ann in coco["annotations"]:
        assert ann["distill"]["votes"] == 2 and ann["num_keypoints"] == 3
        x, _, w, _ = ann["bbox"]
        assert abs(ann["keypoints"][3] - (x + w)) < 2 and abs(ann["keypoints"][6] - x) < 2
