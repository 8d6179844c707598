"""A small CPU-trainable backbone for tests, the demo and the benchmarks.

The backbone with its FPN holds about 0.6M parameters, the whole detector 1.5M
(boxes) to 1.65M (keypoints). At 256-416 px, batch 4, one CPU thread, it trains at
4-5 images per second for keypoints and about 6 for boxes (two such trainings side
by side on this project's 2-core machine, Run 4 in docs/RESULTS.md):
enough to learn the synthetic data set in minutes while staying clearly imperfect,
which is what data distillation needs to show a gain.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

DEFAULT_WIDTHS = (32, 48, 64, 96)
FPN_CHANNELS = 64


def _conv(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class _Residual(nn.Module):
    """Two 3x3 convs with an identity shortcut (channels and size kept)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            _conv(channels, channels, 1),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(x + self.body(x))


class TinyBackbone(nn.Module):
    """Four stages at strides 4, 8, 16, 32, each a strided conv and a residual block,
    topped by an FPN; ``out_channels`` is what torchvision's detectors expect."""

    def __init__(self, widths: tuple[int, ...] = DEFAULT_WIDTHS,
                 out_channels: int = FPN_CHANNELS) -> None:
        super().__init__()
        self.stem = nn.Sequential(_conv(3, 24, 2), _conv(24, widths[0], 2))
        stages = []
        cin = widths[0]
        for i, w in enumerate(widths):
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(_conv(cin, w, stride), _Residual(w)))
            cin = w
        self.stages = nn.ModuleList(stages)
        self.fpn = FeaturePyramidNetwork(list(widths), out_channels,
                                         extra_blocks=LastLevelMaxPool())
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        x = self.stem(x)
        feats: OrderedDict[str, torch.Tensor] = OrderedDict()
        for i, stage in enumerate(self.stages):
            x = stage(x)
            feats[str(i)] = x
        out: OrderedDict[str, torch.Tensor] = self.fpn(feats)
        return out
