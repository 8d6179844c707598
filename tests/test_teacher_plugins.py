"""A teacher family from another package, found through the ``distill.teachers`` entry
points: a real distribution (a dist-info folder with entry_points.txt on the path of a
fresh interpreter), imported and run by the real command line, no mock."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent

# The plug-in: a "detector" that boxes the pixels whose red channel is above a threshold
# (the threshold is its one weight). It sees the images the ensemble gives it (mirrored
# ones included) and knows nothing of transforms, as the interface promises.
PLUGIN = '''
import json
from pathlib import Path

import torch

from distill.card import ModelCard
from distill.teachers.labels import load_categories


class RedBox:
    max_scale = None

    def __init__(self, threshold):
        self.threshold = float(threshold)

    def to(self, device):
        return self

    def detect(self, images, scale, max_size, *, raw_cap):
        out = []
        for img in images:
            ys, xs = torch.nonzero(img[0] > self.threshold, as_tuple=True)
            if len(xs):
                box = torch.tensor([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]],
                                   dtype=torch.float32)
                out.append({"boxes": box, "scores": torch.tensor([0.9]),
                            "labels": torch.tensor([1])})
            else:
                out.append({"boxes": torch.zeros((0, 4)), "scores": torch.zeros(0),
                            "labels": torch.zeros(0, dtype=torch.int64)})
        return out

    def final(self, detections):
        return detections


class Family:
    name = "toy"

    def architectures(self):
        return {"red-box": "boxes"}

    def load(self, card, tensors):
        return RedBox(tensors["threshold"])

    def import_teacher(self, request):
        weights = json.loads(Path(request.weights).read_text())
        cats = load_categories(request.categories, "boxes")
        card = ModelCard(arch=request.arch, task="boxes", categories=cats.categories,
                         min_size=100, max_size=100, labeled_stats=request.stats,
                         provenance={"name": request.name})
        return card, {"threshold": torch.tensor(weights["threshold"])}


FAMILY = Family()
'''


def _plugin_site(root: Path) -> Path:
    site = root / "site"
    dist = site / "toy_teacher-0.1.dist-info"
    dist.mkdir(parents=True)
    (site / "toy_teacher.py").write_text(PLUGIN)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-teacher\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[distill.teachers]\ntoy = toy_teacher:FAMILY\n")
    return site


def _distill(args: list[str], site: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(site)]),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "distill.cli", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_plugin_family_imports_and_annotates_through_the_entry_point(tmp_path: Path) -> None:
    site = _plugin_site(tmp_path)
    images = tmp_path / "images"
    images.mkdir()
    pixels = np.zeros((60, 90, 3), dtype=np.uint8)
    pixels[10:30, 5:25, 0] = 255  # a red square off the centre: a flip must be undone
    Image.fromarray(pixels).save(images / "a.png")
    cats = tmp_path / "cats.json"
    cats.write_text(json.dumps({"images": [], "annotations": [],
                                "categories": [{"id": 7, "name": "square"}]}))
    weights = tmp_path / "w.json"
    weights.write_text(json.dumps({"threshold": 0.5}))
    teacher = tmp_path / "toy.pt"

    made = _distill(["teacher", "import", "--arch", "red-box", "--weights", str(weights),
                     "--categories", str(cats), "--out", str(teacher)], site)
    assert made.returncode == 0, made.stderr
    assert "red-box (boxes)" in made.stdout

    out = tmp_path / "pseudo.json"
    run = _distill(["annotate", "--teacher", str(teacher), "--images", str(images),
                    "--out", str(out), "--tta", "flip", "--score-thresh", "0.5"], site)
    assert run.returncode == 0, run.stderr
    coco = json.loads(out.read_text())
    [ann] = coco["annotations"]
    assert ann["category_id"] == 7 and ann["bbox"] == [5.0, 10.0, 20.0, 20.0]
    # Both passes found it at the same place once the mirrored one was mapped back.
    assert ann["distill"]["votes"] == 2 and ann["distill"]["spread"] == 0.0

    # Without the plug-in on the path the architecture is unknown, said in one line.
    alone = _distill(["teacher", "import", "--arch", "red-box", "--weights", str(weights),
                      "--categories", str(cats), "--out", str(tmp_path / "x.pt")],
                     tmp_path / "empty")
    assert alone.returncode == 2
    assert "unknown architecture 'red-box'" in alone.stderr and "tiny" in alone.stderr
    assert not (tmp_path / "x.pt").exists()


def test_a_broken_plugin_is_named_and_breaks_no_other_teacher(tmp_path: Path) -> None:
    site = _plugin_site(tmp_path)
    (site / "toy_teacher.py").write_text(textwrap.dedent("raise ImportError('no such lib')\n"))
    code = ("from distill.teachers.registry import family_for\n"
            "print(family_for('tiny').name)\n"
            "family_for('red-box')\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(site)])}
    res = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=300)
    assert res.stdout.strip() == "torchvision"
    assert "teacher plug-in 'toy' (toy_teacher:FAMILY) failed to load: no such lib" in res.stderr
