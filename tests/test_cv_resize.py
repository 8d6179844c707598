"""An exported YOLO / RT-DETR model gets the pixels Ultralytics' ``LetterBox`` gives it:
``distill.teachers.cv_resize`` against the real ``cv2.resize(INTER_LINEAR)`` of
opencv-python-headless, in its own virtual environment (``tests/toolvenv.py``)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from distill.teachers.cv_resize import cv_linear
from distill.teachers.placement import letterbox
from tests.onnx_models import OPENCV
from tests.toolvenv import tool_python

# (h, w) -> (h', w'): down by odd factors, up, exactly half (OpenCV's INTER_AREA
# shortcut), one axis only, a single row, and a letterbox's typical 640 on the long side.
CASES = [((37, 53), (23, 31)), ((40, 30), (97, 61)), ((64, 48), (32, 24)),
         ((50, 70), (50, 33)), ((1, 9), (1, 4)), ((120, 90), (11, 7)),
         ((333, 250), (640, 480))]

RESIZE = """
import sys
from pathlib import Path
import cv2
import numpy as np
root = Path(sys.argv[1])
for src in sorted(root.glob("in_*.npy")):
    image = np.load(src)
    h, w = (int(v) for v in src.stem.split("_")[2:4])
    np.save(root / src.name.replace("in_", "out_"),
            cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR))
"""


def test_letterbox_resize_gives_opencvs_pixels(tmp_path: Path) -> None:
    python = tool_python("opencv", OPENCV)
    rng = np.random.default_rng(0)
    images = []
    for n, (size, target) in enumerate(CASES):
        image = rng.integers(0, 256, (*size, 3), dtype=np.uint8)  # noise: the worst case
        np.save(tmp_path / f"in_{n}_{target[0]}_{target[1]}.npy", image)
        images.append((image, target))
    done = subprocess.run([str(python), "-c", RESIZE, str(tmp_path)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    ours_off = torch_off = total = 0
    for n, (image, target) in enumerate(images):
        theirs = np.load(tmp_path / f"out_{n}_{target[0]}_{target[1]}.npy")
        if theirs.ndim == 2:
            theirs = theirs[:, :, None]
        chw = torch.from_numpy(image).permute(2, 0, 1).float() / 255
        ours = (cv_linear(chw, target) * 255).round().to(torch.int32).permute(1, 2, 0).numpy()
        bilinear = F.interpolate(chw[None], size=target, mode="bilinear",
                                 align_corners=False)[0]
        plain = (bilinear * 255).round().to(torch.int32).permute(1, 2, 0).numpy()
        diff = np.abs(ours - theirs.astype(np.int32))
        # OpenCV's scalar loop, which finishes a row its vector loop leaves, may round a
        # value differently: 1 of 255 at most (none differed here on 4.12, x86-64).
        assert diff.max() <= 1, (n, target)
        ours_off += int((diff > 0).sum())
        torch_off += int((plain != theirs).sum())
        total += diff.size
    assert ours_off <= 0.001 * total, (ours_off, total)
    assert torch_off > 10 * max(ours_off, 1)  # what the placement did before


def test_the_letterbox_pads_with_114_around_the_resized_image() -> None:
    image = torch.rand(3, 30, 40).mul(255).round().div(255)
    place = letterbox((30, 40), (64.0, 64.0), (64, 64), 32)
    out = place.apply(image)
    assert out.shape == (3, 64, 64) and place.scaled == (48, 64)
    assert torch.all(out[:, :place.top] == 114 / 255)
    assert torch.equal(out[:, place.top:place.top + 48], cv_linear(image, (48, 64)))
