"""Builders shared by the core tests: small teachers and data, made on the spot."""

from __future__ import annotations

from pathlib import Path

import torch

from distill.card import ModelCard, flip_map_from_names
from distill.checkpoint import save_checkpoint
from distill.coco import keypoint_category, labeled_statistics, load_coco
from distill.data import generate
from distill.models.zoo import build_model


def make_synth(root: Path, *, labeled: int = 6, unlabeled: int = 6, test: int = 0,
               seed: int = 0) -> dict:
    """A small synthetic data set under ``root``."""
    return generate(root, labeled=labeled, unlabeled=unlabeled, test=test, seed=seed)


def make_teacher(path: Path, labeled_json: Path, task: str = "keypoints", seed: int = 0,
                 min_size: int = 256, max_size: int = 416) -> ModelCard:
    """A random-weight ``tiny`` teacher with a real card from ``labeled_json``.

    Random weights are enough to exercise plumbing: the detector still emits
    boxes (score threshold 0.02) and keypoint heatmaps.
    """
    coco = load_coco(labeled_json)
    if task == "keypoints":
        cats = [keypoint_category(coco)]
        flip = flip_map_from_names(cats[0]["keypoints"])
        k = len(cats[0]["keypoints"])
    else:
        cats, flip, k = coco["categories"], [], 0
    card = ModelCard(arch="tiny", task=task, categories=cats, min_size=min_size,  # type: ignore[arg-type]
                     max_size=max_size, labeled_stats=labeled_statistics(coco, task),  # type: ignore[arg-type]
                     flip_map=flip, oks_sigmas=[0.07] * k if k else None,
                     provenance={"name": "test-teacher"},
                     # Fewer RoIs per image keep the tests fast; plumbing is the same.
                     arch_options={"box_detections_per_img": 20})
    torch.manual_seed(seed)
    model = build_model("tiny", task, num_classes=card.num_classes, num_keypoints=k,  # type: ignore[arg-type]
                        min_size=min_size, max_size=max_size, options=card.arch_options)
    save_checkpoint(path, card, model.state_dict())
    return card
