"""The model zoo: one function builds any supported detector from explicit arguments.

``tiny`` is our small CPU-trainable architecture (keypoint and box variants);
the others are torchvision's standard detectors, built without downloading
anything. Pretrained backbone weights come from a local file when the user
supplies one.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import detection as tvd
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.generalized_rcnn import GeneralizedRCNN
from torchvision.models.detection.keypoint_rcnn import KeypointRCNNHeads, KeypointRCNNPredictor
from torchvision.ops.misc import FrozenBatchNorm2d

from distill.card import ModelCard, Task
from distill.errors import CardError, ConfigError
from distill.models.roi_align import SparseMultiScaleRoIAlign
from distill.models.tiny import TinyBackbone
from distill.options import ARCH_TASKS, ARCHITECTURES

# Settings that make the tiny model fast on a CPU; every one can be overridden
# through the card's arch_options.
TINY_DEFAULTS: dict[str, Any] = {
    "rpn_pre_nms_top_n_train": 1000,
    "rpn_post_nms_top_n_train": 500,
    "rpn_pre_nms_top_n_test": 500,
    "rpn_post_nms_top_n_test": 200,
    "rpn_batch_size_per_image": 128,
    "box_batch_size_per_image": 128,
    "box_score_thresh": 0.02,
}

# torchvision's builders, by the names (and tasks) of distill.options.ARCH_TASKS.
_TORCHVISION: dict[str, Callable[..., GeneralizedRCNN]] = {
    name: getattr(tvd, name) for name, task in ARCH_TASKS.items() if task is not None}
DEFAULT_SIZES: dict[str, tuple[int, int]] = {"tiny": (256, 416)}
# An arch option of ours, not torchvision's: the epsilon of every batch-norm layer.
# torchvision's published COCO weights of keypointrcnn_resnet50_fpn and
# fasterrcnn_resnet50_fpn were trained and are run with eps 0 (its builders call
# overwrite_eps(model, 0.0) when loading them); a model built with weights=None has 1e-5.
BATCHNORM_EPS = "batchnorm_eps"


def default_sizes(arch: str) -> tuple[int, int]:
    """(min_size, max_size) an architecture is trained and tested at by default."""
    return DEFAULT_SIZES.get(arch, (800, 1333))


def build_model(arch: str, task: Task, *, num_classes: int, num_keypoints: int = 0,
                min_size: int, max_size: int, options: dict[str, Any] | None = None,
                backbone_weights: Path | None = None) -> GeneralizedRCNN:
    """Builds an untrained detector (random init, or a local backbone weights file).

    ``num_classes`` counts the background. ``options`` are passed to the
    torchvision detector's constructor (thresholds, RPN sizes and the like).
    """
    opts = dict(options or {})
    eps = opts.pop(BATCHNORM_EPS, None)
    if arch == "tiny":
        model = _build_tiny(task, num_classes, num_keypoints, min_size, max_size, opts)
    elif arch in _TORCHVISION:
        builder, arch_task = _TORCHVISION[arch], ARCH_TASKS[arch]
        if arch_task != task:
            raise ConfigError(f"architecture {arch!r} does {arch_task}, not {task}")
        if task == "keypoints":
            opts["num_keypoints"] = num_keypoints
        model = builder(weights=None, weights_backbone=None, num_classes=num_classes,
                        min_size=min_size, max_size=max_size, **opts)
    else:
        raise ConfigError(f"unknown architecture {arch!r}; choose one of {ARCHITECTURES}")
    if eps is not None:
        set_batchnorm_eps(model, float(eps))
    if backbone_weights is not None:
        load_backbone_weights(model, backbone_weights)
    return model


def set_batchnorm_eps(model: nn.Module, eps: float) -> None:
    """Sets the epsilon of every batch-norm layer (plain or frozen)."""
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d | FrozenBatchNorm2d):
            module.eps = eps


def build_from_card(card: ModelCard, state_dict: dict[str, torch.Tensor] | None = None
                    ) -> GeneralizedRCNN:
    """Rebuilds the detector a card describes and loads ``state_dict`` into it."""
    model = build_model(card.arch, card.task, num_classes=card.num_classes,
                        num_keypoints=len(card.keypoint_names), min_size=card.min_size,
                        max_size=card.max_size, options=card.arch_options)
    if state_dict is not None:
        try:
            model.load_state_dict(state_dict)
        except RuntimeError as exc:
            raise CardError(f"weights do not fit architecture {card.arch!r}: {exc}") from exc
    return model


def _build_tiny(task: Task, num_classes: int, num_keypoints: int, min_size: int,
                max_size: int, opts: dict[str, Any]) -> GeneralizedRCNN:
    backbone = TinyBackbone()
    c = backbone.out_channels
    # Smaller anchors than torchvision's (32..512): objects here are 15-250 px.
    anchors = AnchorGenerator(sizes=((16,), (32,), (64,), (128,), (256,)),
                              aspect_ratios=((0.5, 1.0, 2.0),) * 5)
    # torchvision's poolers, faster in CPU training (same values; distill/models/roi_align.py)
    box_pool = SparseMultiScaleRoIAlign(["0", "1", "2", "3"], output_size=7,
                                        sampling_ratio=2)
    kwargs: dict[str, Any] = {
        **TINY_DEFAULTS,
        "rpn_anchor_generator": anchors,
        "box_roi_pool": box_pool,
        "box_head": TwoMLPHead(c * 7 * 7, 256),
        "box_predictor": FastRCNNPredictor(256, num_classes),
        "min_size": min_size,
        "max_size": max_size,
        **opts,
    }
    if task == "boxes":
        return tvd.FasterRCNN(backbone, num_classes=None, **kwargs)
    if num_keypoints < 1:
        raise ConfigError(f"a keypoint model needs num_keypoints >= 1, got {num_keypoints}")
    return tvd.KeypointRCNN(
        backbone, num_classes=None,
        keypoint_roi_pool=SparseMultiScaleRoIAlign(["0", "1", "2", "3"], output_size=14,
                                                    sampling_ratio=2),
        keypoint_head=KeypointRCNNHeads(c, [64] * 4),
        keypoint_predictor=KeypointRCNNPredictor(64, num_keypoints),
        **kwargs,
    )


def load_backbone_weights(model: GeneralizedRCNN, path: Path) -> None:
    """Loads a local classification checkpoint (e.g. ResNet-50 ImageNet weights)
    into the detector's backbone body; the classifier's own keys are ignored."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    body: nn.Module = getattr(model.backbone, "body", model.backbone)
    own = body.state_dict()
    # MobileNet checkpoints prefix their layers with "features."; the detector's body does not.
    renamed = {k.removeprefix("features."): v for k, v in state.items()}
    matched = {k: v for k, v in renamed.items() if k in own and own[k].shape == v.shape}
    if not matched:
        raise CardError(f"no tensor of {str(path)!r} fits the backbone of this architecture")
    body.load_state_dict(matched, strict=False)
