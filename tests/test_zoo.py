"""The model zoo builds every architecture without downloading anything."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from distill.card import LabeledStats, ModelCard
from distill.errors import ConfigError
from distill.models.zoo import ARCHITECTURES, build_model, load_backbone_weights
from distill.options import InferenceOptions
from distill.tta.predictor import build_predictor


def test_tiny_is_small() -> None:
    model = build_model("tiny", "keypoints", num_classes=2, num_keypoints=13,
                        min_size=256, max_size=416)
    assert 1_000_000 < sum(p.numel() for p in model.parameters()) < 2_500_000


@pytest.mark.parametrize("arch", ["keypointrcnn_resnet50_fpn", "fasterrcnn_mobilenet_v3_large_fpn"])
def test_torchvision_architecture_runs_one_image_on_cpu(arch: str) -> None:
    task = "keypoints" if arch.startswith("keypoint") else "boxes"
    cats = [{"id": 1, "name": "person", "keypoints": ["nose", "left_eye", "right_eye"]}]
    card = ModelCard(arch=arch, task=task, categories=cats, min_size=160, max_size=256,
                     labeled_stats=LabeledStats(1, {"1": 1.0}), flip_map=[[1, 2]])
    torch.manual_seed(0)
    model = build_model(arch, task, num_classes=2, num_keypoints=3, min_size=160, max_size=256)
    out = build_predictor(model, card, InferenceOptions(tta="flip"))([torch.rand(3, 150, 200)])[0]
    assert out["boxes"].shape[1] == 4
    if task == "keypoints":
        assert out["keypoints"].shape[1:] == (3, 3)


def test_all_architectures_are_listed() -> None:
    assert set(ARCHITECTURES) == {"tiny", "keypointrcnn_resnet50_fpn", "fasterrcnn_resnet50_fpn",
                                  "fasterrcnn_resnet50_fpn_v2",
                                  "fasterrcnn_mobilenet_v3_large_fpn"}
    with pytest.raises(ConfigError, match="unknown architecture"):
        build_model("yolo", "boxes", num_classes=2, min_size=1, max_size=2)
    with pytest.raises(ConfigError, match="does boxes"):
        build_model("fasterrcnn_resnet50_fpn", "keypoints", num_classes=2, num_keypoints=3,
                    min_size=800, max_size=1333)


def test_local_backbone_weights_are_loaded(tmp_path: Path) -> None:
    resnet = torchvision.models.resnet50(weights=None)
    torch.nn.init.constant_(resnet.conv1.weight, 0.125)
    torch.save(resnet.state_dict(), tmp_path / "r50.pth")
    model = build_model("fasterrcnn_resnet50_fpn", "boxes", num_classes=3, min_size=160,
                        max_size=256, backbone_weights=tmp_path / "r50.pth")
    assert torch.all(model.backbone.body.conv1.weight == 0.125)
    torch.save({"unrelated": torch.zeros(3)}, tmp_path / "bad.pth")
    with pytest.raises(Exception, match="fits the backbone"):
        load_backbone_weights(model, tmp_path / "bad.pth")


def test_batchnorm_eps_option_reaches_every_norm_layer(tmp_path: Path) -> None:
    """torchvision runs its published COCO V1 weights with batch-norm eps 0; the arch option
    reproduces that, and the import sets it for those files (recognised by name)."""
    from torch import nn

    from distill.teachers.rcnn_import import _published_defaults

    model = build_model("fasterrcnn_mobilenet_v3_large_fpn", "boxes", num_classes=3,
                        min_size=128, max_size=160, options={"batchnorm_eps": 0.0})
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert norms and all(m.eps == 0.0 for m in norms)
    assert _published_defaults("keypointrcnn_resnet50_fpn",
                               Path("keypointrcnn_resnet50_fpn_coco-fc266e95.pth")) == {
        "batchnorm_eps": 0.0}
    assert _published_defaults("fasterrcnn_resnet50_fpn_v2",
                               Path("fasterrcnn_resnet50_fpn_v2_coco-dd69338a.pth")) == {}
    assert _published_defaults("fasterrcnn_resnet50_fpn", Path("model_25.pth")) == {}
