"""Training augmentation: horizontal flip with the left/right swap, and scale jitter.

A mirrored person is labeled with left and right swapped: after the flip, the
keypoint that was ``left_wrist`` sits where a right wrist would be, so rows are
permuted with the card's flip map as well as mirrored. Scale jitter is done by
torchvision's own resize (``GeneralizedRCNNTransform`` picks a random element of
its ``min_size`` tuple in training mode), so here we only choose the sizes.
"""

from __future__ import annotations

from torch import Tensor


def hflip(image: Tensor, target: dict[str, Tensor], flip_perm: list[int]
          ) -> tuple[Tensor, dict[str, Tensor]]:
    """Mirrors a (C, H, W) image and its target: x' = W - x for keypoints,
    x1' = W - x2 and x2' = W - x1 for boxes; keypoint rows permuted by ``flip_perm``
    (an index permutation, e.g. ``ModelCard.flip_permutation()``)."""
    width = image.shape[-1]
    out = dict(target)
    boxes = target["boxes"]
    if boxes.numel():
        flipped = boxes.clone()
        flipped[:, 0] = width - boxes[:, 2]
        flipped[:, 2] = width - boxes[:, 0]
        out["boxes"] = flipped
    if "keypoints" in target:
        kps = target["keypoints"]
        if flip_perm and len(flip_perm) != kps.shape[1]:
            raise ValueError(f"flip permutation has {len(flip_perm)} entries for "
                             f"{kps.shape[1]} keypoints")
        flipped = kps[:, flip_perm] if flip_perm else kps.clone()
        visible = flipped[..., 2] > 0
        # Unlabeled keypoints stay (0, 0, 0) rather than moving to x = W.
        flipped[..., 0] = (width - flipped[..., 0]) * visible
        out["keypoints"] = flipped
    return image.flip(-1), out


def jitter_sizes(base: int, low: float, high: float, count: int = 5) -> tuple[int, ...]:
    """Shorter-side sizes for training: ``count`` evenly spaced values from
    ``base * low`` to ``base * high`` (multiples of 8), with ``base`` itself LAST.

    torchvision's transform samples any element while training but uses
    ``min_size[-1]`` at evaluation, so the last element must be the test size.
    """
    if not 0 < low <= 1.0 <= high:
        raise ValueError(f"scale jitter range must satisfy 0 < low <= 1 <= high, "
                         f"got ({low}, {high})")
    if count < 2 or low == high:
        return (base,)
    step = (high - low) / (count - 1)
    sizes = [max(8, round(base * (low + i * step) / 8) * 8) for i in range(count)]
    others = [s for s in dict.fromkeys(sizes) if s != base]
    return (*others, base)
