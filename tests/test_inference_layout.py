"""Channels-last CPU inference gives the standard layout's detections, to float rounding."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN

from distill.card import ModelCard
from distill.data import PERSON_CATEGORY, generate
from distill.images import load_image
from distill.models.zoo import build_model
from distill.options import InferenceOptions
from distill.teachers.rcnn import RCNNDetector
from distill.tta.predictor import build_predictor, plain_predictor


class _StandardLayout(RCNNDetector):
    """The detector as it ran before: moved to the device, layout untouched."""

    def to(self, device: torch.device) -> RCNNDetector:
        self.model.to(device)
        return self


def _model(task: str) -> tuple[GeneralizedRCNN, ModelCard]:
    torch.manual_seed(3)
    names = list(PERSON_CATEGORY["keypoints"])
    model = build_model("tiny", task, num_classes=2,  # type: ignore[arg-type]
                        num_keypoints=len(names) if task == "keypoints" else 0,
                        min_size=256, max_size=416)
    card = ModelCard(arch="tiny", task=task, categories=[PERSON_CATEGORY],  # type: ignore[arg-type]
                     min_size=256, max_size=416)
    return model, card


def _same(ours: list[dict[str, Any]], ref: list[dict[str, Any]]) -> None:
    assert sum(len(r["boxes"]) for r in ref) > 0  # something to compare
    for a, b in zip(ours, ref, strict=True):
        assert a.keys() == b.keys()
        for key in b:
            torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("task", ["keypoints", "boxes"])
def test_channels_last_inference_keeps_the_detections(task: str, tmp_path: Any) -> None:
    data = generate(tmp_path, labeled=0, unlabeled=3, test=0, seed=1)
    images = [load_image(p) for p in sorted(data["unlabeled"].images_dir.glob("*.png"))]
    model, card = _model(task)
    pristine = copy.deepcopy(model)  # never converted: the reference of both paths
    options = InferenceOptions(tta="standard")
    reference = build_predictor(_StandardLayout(copy.deepcopy(pristine)), card, options)
    ours = build_predictor(model, card, options)
    assert model.backbone.fpn.layer_blocks[0][0].weight.is_contiguous(  # converted
        memory_format=torch.channels_last)
    with torch.inference_mode():
        _same(ours(images), reference(images))
        single = copy.deepcopy(pristine)
        plain = plain_predictor(single, card)
        assert single.rpn.head.conv[0][0].weight.is_contiguous(
            memory_format=torch.channels_last)
        _same(plain(images), pristine.eval()(images))
