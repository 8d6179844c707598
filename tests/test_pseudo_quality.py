"""Pseudo-label quality against hidden ground truth: precision and recall at 0.5."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from distill.coco import load_coco, training_categories
from distill.data import generate
from distill.errors import DataError
from training.pseudo_quality import pseudo_label_quality
from training.run_files import build_card


@pytest.fixture(scope="module")
def truth(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    split = generate(tmp_path_factory.mktemp("pq"), labeled=0, unlabeled=8, test=0,
                     seed=4)["unlabeled"]
    return {"keypoints": load_coco(split.keypoints_json), "boxes": load_coco(split.boxes_json)}


def _as_pseudo(coco: dict[str, Any]) -> dict[str, Any]:
    """The ground truth as a pseudo-label file: images renumbered from 1 in file-name
    order (as ``to_coco`` numbers them), every annotation with a score."""
    images = sorted(coco["images"], key=lambda i: i["file_name"])
    new_id = {img["id"]: n for n, img in enumerate(reversed(images), start=1)}
    out = copy.deepcopy(coco)
    out["images"] = [{**img, "id": new_id[img["id"]]} for img in images]
    out["annotations"] = [{**a, "image_id": new_id[a["image_id"]], "score": 0.9}
                          for a in coco["annotations"]]
    return out


def _card(coco: dict[str, Any], task: str) -> Any:
    return build_card(arch="tiny", task=task, labeled=coco,  # type: ignore[arg-type]
                      categories=training_categories(coco, task),  # type: ignore[arg-type]
                      min_size=128, max_size=224, arch_options={}, provenance={})


@pytest.mark.parametrize("task", ["keypoints", "boxes"])
def test_truth_is_perfect_and_halving_it_halves_recall(truth: dict[str, Any],
                                                       task: str) -> None:
    coco = truth[task]
    card = _card(coco, task)
    perfect = pseudo_label_quality(_as_pseudo(coco), coco, card)
    assert set(perfect) == ({"bbox", "keypoints"} if task == "keypoints" else {"bbox"})
    for scores in perfect.values():
        assert scores == {"AP": 100.0, "precision50": 1.0, "recall50": 1.0}

    pseudo = _as_pseudo(coco)
    kept = pseudo["annotations"][::2]
    pseudo["annotations"] = kept
    half = pseudo_label_quality(pseudo, coco, card)["bbox"]
    assert half["precision50"] == 1.0
    assert half["recall50"] == pytest.approx(len(kept) / len(coco["annotations"]), abs=1e-3)


def test_misplaced_labels_lower_precision(truth: dict[str, Any]) -> None:
    coco = truth["boxes"]
    pseudo = _as_pseudo(coco)
    n = len(pseudo["annotations"])
    for a in pseudo["annotations"][: n // 4]:  # a quarter moved off their objects
        x, y, w, h = a["bbox"]
        a["bbox"] = [x + 2 * w + 5, y, w, h]
    scores = pseudo_label_quality(pseudo, coco, _card(coco, "boxes"))["bbox"]
    assert scores["precision50"] <= 1 - (n // 4) / n + 0.05
    assert scores["recall50"] <= 1 - (n // 4) / n + 0.05


def test_images_outside_the_ground_truth_are_an_error(truth: dict[str, Any]) -> None:
    coco = truth["boxes"]
    pseudo = _as_pseudo(coco)
    pseudo["images"][0]["file_name"] = "not_there.png"
    with pytest.raises(DataError, match="not in the ground truth"):
        pseudo_label_quality(pseudo, coco, _card(coco, "boxes"))
