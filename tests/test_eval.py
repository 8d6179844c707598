"""COCO evaluation: ground truth scores 1.0 against itself, nothing scores 0.0."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from distill.card import ModelCard
from distill.checkpoint import save_checkpoint
from distill.coco import load_coco, training_categories
from distill.data import generate
from distill.models.zoo import build_from_card
from training.evaluate import evaluate, evaluate_checkpoint
from training.run_files import build_card


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("evalsynth")
    return generate(root, labeled=0, unlabeled=0, test=6, seed=3)["test"]


def _card(coco: dict, task: str) -> ModelCard:
    return build_card(arch="tiny", task=task, labeled=coco,  # type: ignore[arg-type]
                      categories=training_categories(coco, task),  # type: ignore[arg-type]
                      min_size=128, max_size=224, arch_options={}, provenance={})


def _oracle(coco: dict, card: ModelCard, empty: bool = False):
    """A predictor that answers each image with its ground truth (labels contiguous)."""
    by_size: dict[tuple[int, int], list[dict]] = {}
    label = {int(c["id"]): i + 1 for i, c in enumerate(card.categories)}
    for img in coco["images"]:
        by_size.setdefault((img["height"], img["width"]), []).append(img)
    anns: dict[int, list[dict]] = {}
    for a in coco["annotations"]:
        anns.setdefault(a["image_id"], []).append(a)
    queue = list(coco["images"])

    def predict(images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        outs = []
        for image in images:
            img = queue.pop(0)  # evaluation walks the images in file order
            assert tuple(image.shape[-2:]) == (img["height"], img["width"])
            mine = [] if empty else anns.get(img["id"], [])
            boxes = torch.tensor([[x, y, x + w, y + h] for x, y, w, h in
                                  (a["bbox"] for a in mine)], dtype=torch.float32).reshape(-1, 4)
            out = {"boxes": boxes, "scores": torch.ones(len(mine)),
                   "labels": torch.tensor([label[a["category_id"]] for a in mine],
                                          dtype=torch.int64)}
            if card.task == "keypoints":
                k = len(card.keypoint_names)
                out["keypoints"] = torch.tensor([a["keypoints"] for a in mine],
                                                dtype=torch.float32).reshape(-1, k, 3)
            outs.append(out)
        return outs

    return predict


@pytest.mark.parametrize("task", ["keypoints", "boxes"])
def test_ground_truth_scores_one_and_nothing_scores_zero(data: Any, task: str) -> None:
    path = data.keypoints_json if task == "keypoints" else data.boxes_json
    coco = load_coco(path)
    assert coco["annotations"], "the fixture needs instances"
    card = _card(coco, task)
    report = evaluate(_oracle(coco, card), card, coco, data.images_dir, batch_size=4)
    assert report.scores["bbox"]["AP"] == pytest.approx(100.0)
    if task == "keypoints":
        assert report.scores["keypoints"]["AP"] == pytest.approx(100.0)
        assert "maxDets= 20" in report.tables["keypoints"]
    empty = evaluate(_oracle(coco, card, empty=True), card, coco, data.images_dir)
    assert empty.detections == 0
    assert empty.scores["bbox"]["AP"] == 0.0
    assert empty.main == 0.0


def test_category_ids_are_mapped_back(data: Any) -> None:
    """A box model whose label order differs from the ids: labels must map through the card."""
    coco = load_coco(data.boxes_json)
    coco["categories"] = list(reversed(coco["categories"]))  # label 1 is now id 4
    card = _card(coco, "boxes")
    assert card.category_id(1) == 4
    report = evaluate(_oracle(coco, card), card, coco, data.images_dir)
    assert report.scores["bbox"]["AP"] == pytest.approx(100.0)


def test_eval_command_writes_scores(data: Any, tmp_path: Path) -> None:
    from distill.cli import main

    coco = load_coco(data.keypoints_json)
    card = _card(coco, "keypoints")
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "m.pt", card, build_from_card(card).state_dict())
    # Two images are enough for the plumbing; a random model makes 100 detections each.
    ids = {img["id"] for img in coco["images"][:2]}
    small = tmp_path / "gt.json"
    small.write_text(json.dumps({**coco, "images": coco["images"][:2], "annotations": [
        a for a in coco["annotations"] if a["image_id"] in ids]}))
    out = tmp_path / "scores.json"
    code = main(["eval", "--model", str(tmp_path / "m.pt"), "--json", str(small),
                 "--images", str(data.images_dir), "--out", str(out), "--quiet"])
    assert code == 0
    scores = json.loads(out.read_text())
    assert set(scores["scores"]) == {"bbox", "keypoints"} and scores["tta"] is None
    flip = evaluate_checkpoint(tmp_path / "m.pt", small, data.images_dir, tta="flip")
    assert flip.meta["tta"] == "flip" and flip.images == 2
