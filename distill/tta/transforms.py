"""Geometric test-time transforms, each carrying its own inverse.

A transform is (scale, hflip): the image's shorter side is resized to
``scale`` pixels with its longer side capped at ``max_size``, exactly as
torchvision's ``GeneralizedRCNNTransform(min_size, max_size)`` does, then
optionally mirrored. Presets name the usual sets.

Importing this module does not import torch: the API parses and bounds
presets with :func:`parse_preset` without it. Only the methods that act on
tensors need torch, and they get it from the tensors they are given.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

from distill.errors import ConfigError
from distill.options import PRESETS, TTA_PRESETS

if TYPE_CHECKING:
    from torch import Tensor
    from torchvision.models.detection.image_list import ImageList
    from torchvision.models.detection.transform import GeneralizedRCNNTransform


@dataclass(frozen=True)
class Transform:
    """One test-time transform: shorter side ``scale``, longer side at most ``max_size``."""

    scale: int
    max_size: int
    hflip: bool = False

    def __str__(self) -> str:
        return f"{self.scale}{'+flip' if self.hflip else ''}"

    def rcnn_transform(self, base: GeneralizedRCNNTransform) -> GeneralizedRCNNTransform:
        """The detector's own resize/normalise/batch module, set to this scale."""
        t = copy.copy(base)  # shallow: shares mean/std, changes only the sizes
        t.min_size = (self.scale,)
        t.max_size = self.max_size
        return t

    def apply(self, images: list[Tensor], base: GeneralizedRCNNTransform) -> ImageList:
        """Mirrors (if asked) and resizes a batch of (3, H, W) images."""
        if self.hflip:
            images = [img.flip(-1) for img in images]
        batch, _ = self.rcnn_transform(base)(images)
        return batch

    def boxes_to_pass(self, boxes: Tensor, original: tuple[int, int],
                      resized: tuple[int, int]) -> Tensor:
        """Projects original-image boxes (xyxy) into this pass's resized, mirrored frame.

        Sizes are (height, width) as torchvision keeps them.
        """
        # torchvision's own resize (float32 ratios), so that projected boxes match the
        # detector's exactly; imported here to keep this module importable without torch.
        from torchvision.models.detection.transform import resize_boxes

        out = resize_boxes(boxes, list(original), list(resized))
        return hflip_boxes(out, resized[1]) if self.hflip else out

    def boxes_to_original(self, boxes: Tensor, original: tuple[int, int]) -> Tensor:
        """Inverse of the flip for boxes already rescaled to the original size."""
        return hflip_boxes(boxes, original[1]) if self.hflip else boxes

    def keypoints_to_original(self, keypoints: Tensor, scores: Tensor,
                              original: tuple[int, int], flip_perm: Tensor
                              ) -> tuple[Tensor, Tensor]:
        """Inverse of the flip for keypoints (N, K, 3) and their scores (N, K) already
        rescaled to the original size: x' = W - x, and each left/right pair swapped (a
        mirrored person's left side looks like a right side to the model)."""
        if not self.hflip:
            return keypoints, scores
        out = keypoints[:, flip_perm].clone()
        out[..., 0] = original[1] - out[..., 0]
        return out, scores[:, flip_perm]

    def heatmaps_to_original(self, logits: Tensor, flip_perm: Tensor) -> Tensor:
        """Keypoint logits (N, K, H, W) in a mirrored RoI frame back to the unmirrored one.

        Flipping the map along its width undoes the mirror; the channel
        permutation swaps left/right keypoints, since a mirrored person's left
        side looks like a right side to the model.
        """
        return logits.flip(-1)[:, flip_perm] if self.hflip else logits


def hflip_boxes(boxes: Tensor, width: int | float) -> Tensor:
    """Mirrors xyxy boxes in an image of the given width: x1' = W - x2, x2' = W - x1."""
    out = boxes.clone()
    out[:, 0] = width - boxes[:, 2]
    out[:, 2] = width - boxes[:, 0]
    return out


def _with_flips(scales: list[int], max_for: dict[int, int], flip: bool) -> list[Transform]:
    out = []
    for s in scales:
        out.append(Transform(s, max_for[s], False))
        if flip:
            out.append(Transform(s, max_for[s], True))
    return out


def parse_preset(spec: str, base_scale: int, base_max: int) -> list[Transform]:
    """Turns a preset name or a custom list into transforms.

    Names: the entries of :data:`distill.options.TTA_PRESETS` (``identity``,
    ``flip``, ``standard``, ``paper``, ``paper-relative``). Custom: comma-separated
    scales in pixels (``224,256,320``) or factors (``x0.75,x1,x1.5``), with ``+flip``
    appended to add mirrored passes.
    The longer-side cap keeps the teacher's own max/min ratio at every scale.
    The identity pass (base scale, no flip) is always first when present.
    """
    if base_scale <= 0 or base_max < base_scale:
        raise ConfigError(f"bad base sizes min={base_scale} max={base_max}")
    ratio = base_max / base_scale
    spec = spec.strip()
    if spec in TTA_PRESETS:
        preset = TTA_PRESETS[spec]
        values, relative, flip = list(preset.values), preset.relative, preset.flip
    else:
        body, flip = (spec[: -len("+flip")], True) if spec.endswith("+flip") else (spec, False)
        items = [v.strip() for v in body.split(",") if v.strip()]
        if not items:
            raise ConfigError(f"unknown TTA preset {spec!r}; use one of {PRESETS} or a list "
                              "like '224,256,320+flip' or 'x0.75,x1,x1.25+flip'")
        relative = all(v.startswith("x") for v in items)
        if not relative and any(v.startswith("x") for v in items):
            raise ConfigError(f"TTA list {spec!r} mixes pixel scales and x-factors")
        try:
            values = [float(v.lstrip("x")) for v in items]
        except ValueError as exc:
            raise ConfigError(f"TTA list {spec!r} has a non-number: {exc}") from exc
    scales = [round(v * base_scale) if relative else round(v) for v in values]
    if any(s < 16 or s > 4096 for s in scales):
        raise ConfigError(f"TTA scales {scales} out of range 16..4096")
    scales = list(dict.fromkeys(scales))  # de-duplicate, keep order
    max_for = {s: round(s * ratio) for s in scales}
    max_for[base_scale] = base_max  # the identity pass must match the model exactly
    transforms = _with_flips(scales, max_for, flip)
    identity = Transform(base_scale, base_max, False)
    if identity in transforms:
        transforms.remove(identity)
        transforms.insert(0, identity)
    return transforms
