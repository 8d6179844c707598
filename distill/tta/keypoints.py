"""Multi-transform keypoint inference on shared boxes (Detectron's keypoint TTA).

Only the keypoint branch is ensembled, so every transform scores the same
RoIs and the heatmaps can simply be averaged:

1. the full detector runs once on the identity transform; its boxes are the RoIs;
2. each transform resizes (and mirrors) the image, runs the backbone, projects
   the boxes into its frame and runs keypoint RoIAlign + head + predictor;
3. mirrored heatmaps are flipped back and their left/right channels swapped;
4. the logits are combined (mean: ``HM_AVG``; max: ``HM_MAX``), optionally
   letting small boxes ignore down-scaled passes and large ones up-scaled passes;
5. the combined heatmap becomes keypoints exactly as torchvision's
   ``heatmaps_to_keypoints`` does, in the identity pass's frame, then is
   rescaled to the original image like the model's own postprocessing.

Beside each keypoint's score, ``keypoints_spread`` says how far apart the transforms'
own heatmap peaks lie (:func:`heatmap_peaks`, :func:`keypoint_spread`, in units of the
box's longer side): a keypoint every pass puts at the same place is more trustworthy than
an average of disagreeing ones. The regressed-keypoint fusion
(:mod:`distill.fusion.keypoints`) measures its spread the same way.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import Tensor
from torchvision.models.detection import KeypointRCNN
from torchvision.models.detection.roi_heads import heatmaps_to_keypoints
from torchvision.models.detection.transform import resize_boxes, resize_keypoints

from distill.errors import ConfigError
from distill.interrupt import cancel_point
from distill.options import COMBINES, Combine, InferenceOptions, check_choice
from distill.score_floor import ScoreFloor
from distill.tta.transforms import Transform

# The keywords' defaults below are the inference options' (one home for each).
_DEFAULTS = InferenceOptions()


class KeypointTTA:
    """Wraps a Keypoint R-CNN with the model's own call signature, plus a calibrated job's
    score floor: ``tta(images, floor=None) -> [{"boxes", "labels", "scores", "keypoints",
    "keypoints_scores", "keypoints_spread"}]``."""

    def __init__(self, model: KeypointRCNN, transforms: Sequence[Transform],
                 flip_perm: Sequence[int], *, combine: Combine = _DEFAULTS.combine,
                 size_dependent: bool = _DEFAULTS.size_dependent,
                 max_instances: int | None = None,
                 area_threshold: float = _DEFAULTS.size_dependent_area) -> None:
        """``max_instances``: keep only that many best-scoring detections per image (None:
        all). The keypoint ensemble costs one keypoint head per detection and pass, while
        calibrated selection keeps about the labeled set's instances per image; detections
        far below that rank cannot become pseudo-labels."""
        if not transforms:
            raise ConfigError("keypoint TTA needs at least one transform")
        check_choice("heatmap combine", combine, COMBINES)
        self.model = model.eval()
        self.transforms = list(transforms)
        self.flip_perm = torch.as_tensor(list(flip_perm), dtype=torch.long)
        self.combine = combine
        self.size_dependent = size_dependent
        if max_instances is not None and max_instances < 1:
            raise ConfigError(f"max_instances must be >= 1 or None, got {max_instances}")
        self.max_instances = max_instances
        base = model.transform
        self.identity = Transform(int(base.min_size[-1]), int(base.max_size), False)
        self.area_threshold = float(area_threshold)  # original-image pixels, as Detectron
        if size_dependent and all(t.scale != self.identity.scale for t in self.transforms):
            # Every RoI must keep at least the base-scale passes, as in Detectron.
            raise ConfigError("size-dependent heatmap selection needs a transform at the "
                              f"base scale {self.identity.scale}")

    @torch.inference_mode()
    def __call__(self, images: list[Tensor], *, floor: ScoreFloor | None = None
                 ) -> list[dict[str, Tensor]]:
        """Detections with ensembled keypoints. ``floor`` (a calibrated job's, see
        :mod:`distill.score_floor`) sees the identity pass's scores, and detections under
        it get no keypoint ensemble and are dropped; None keeps every detection."""
        model = self.model
        original = [(int(i.shape[-2]), int(i.shape[-1])) for i in images]
        # 1. identity pass: the full detector's boxes become the shared RoIs.
        batch = self.identity.apply(images, model.transform)
        features = model.backbone(batch.tensors)
        proposals, _ = model.rpn(batch, features)
        boxes, scores, labels = _detect(model, features, proposals, batch.image_sizes)
        if self.max_instances is not None:
            # postprocess_detections returns each image's detections best first.
            cap = self.max_instances
            boxes, scores, labels = ([b[:cap] for b in boxes], [s[:cap] for s in scores],
                                     [lbl[:cap] for lbl in labels])
        if floor is not None:  # a calibrated job: skip what cannot be kept
            floor.observe(scores)
            keep = [s >= floor.value() for s in scores]
            boxes, scores, labels = ([b[k] for b, k in zip(boxes, keep, strict=True)],
                                     [s[k] for s, k in zip(scores, keep, strict=True)],
                                     [lbl[k] for lbl, k in zip(labels, keep, strict=True)])
        base_sizes = [(int(h), int(w)) for h, w in batch.image_sizes]
        rois = [resize_boxes(b, list(s), list(o))
                for b, s, o in zip(boxes, base_sizes, original, strict=True)]
        keypoints, kp_scores, spreads = self.keypoints_on_boxes(images, rois,
                                                                identity_features=features)
        return [{"boxes": r, "labels": lbl, "scores": s, "keypoints": k, "keypoints_scores": ks,
                 "keypoints_spread": sp}
                for r, lbl, s, k, ks, sp in zip(rois, labels, scores, keypoints, kp_scores,
                                                spreads, strict=True)]

    @torch.inference_mode()
    def on_boxes(self, images: list[Tensor], boxes: list[Tensor]) -> list[dict[str, Tensor]]:
        """Keypoints placed in given boxes (original coordinates, one (N, 4) tensor per
        image) instead of detected ones: a box an annotator drew (interactive
        pre-annotation). Each box is kept as given and scored and labelled by the box
        head (its best foreground class); the keypoints are ensembled as always."""
        model = self.model
        batch = self.identity.apply(images, model.transform)
        features = model.backbone(batch.tensors)
        sizes = [(int(h), int(w)) for h, w in batch.image_sizes]
        rois = [resize_boxes(b, [int(i.shape[-2]), int(i.shape[-1])], list(s))
                for b, i, s in zip(boxes, images, sizes, strict=True)]
        heads = model.roi_heads
        logits, _ = heads.box_predictor(heads.box_head(heads.box_roi_pool(features, rois,
                                                                          sizes)))
        scores, labels = torch.softmax(logits, -1)[:, 1:].max(-1)
        keypoints, kp_scores, spreads = self.keypoints_on_boxes(images, boxes,
                                                                identity_features=features)
        n = [len(b) for b in boxes]
        return [{"boxes": b, "labels": lbl + 1, "scores": s, "keypoints": k,
                 "keypoints_scores": ks, "keypoints_spread": sp}
                for b, lbl, s, k, ks, sp in zip(boxes, labels.split(n), scores.split(n),
                                                keypoints, kp_scores, spreads, strict=True)]

    @torch.inference_mode()
    def keypoints_on_boxes(self, images: list[Tensor], boxes: list[Tensor], *,
                           identity_features: OrderedDict[str, Tensor] | None = None
                           ) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
        """Ensembled keypoints (N, K, 3), their scores (N, K) and spreads across transforms
        (N, K) for given boxes (original coordinates), one entry per image; steps 2-5 of
        the module docstring.

        ``identity_features`` lets the caller reuse the identity pass's backbone output.
        """
        model = self.model
        original = [(int(i.shape[-2]), int(i.shape[-1])) for i in images]
        base_sizes = [self._resized_size(o) for o in original]
        base_boxes = [resize_boxes(b, list(o), list(s))
                      for b, o, s in zip(boxes, original, base_sizes, strict=True)]
        # Sizes in the original image, as Detectron measures them (not in a resized frame).
        areas = torch.cat([(b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) for b in boxes])
        # 2-4. keypoint logits of every transform, accumulated to keep memory flat.
        total: Tensor | None = None
        count: Tensor | None = None
        peaks: list[Tensor] = []
        uses: list[Tensor] = []
        # Peaks come as fractions of each RoI's width and height: rescaled to fractions of
        # its longer side, so that the spread is a distance, whatever the box's shape.
        all_rois = torch.cat(base_boxes)
        sides = all_rois[:, 2:] - all_rois[:, :2]
        aspect = (sides / sides.max(dim=1, keepdim=True).values.clamp(min=1e-6))[:, None, :]
        for t in self.transforms:
            cancel_point()  # a cancelled job stops here, between passes
            if t == self.identity and identity_features is not None:
                logits = _keypoint_logits(model, identity_features, base_boxes, base_sizes)
            else:
                tb = t.apply(images, model.transform)
                sizes = [(int(h), int(w)) for h, w in tb.image_sizes]
                rois = [t.boxes_to_pass(b, o, s)
                        for b, o, s in zip(boxes, original, sizes, strict=True)]
                logits = _keypoint_logits(model, model.backbone(tb.tensors), rois, sizes)
            logits = t.heatmaps_to_original(logits, self.flip_perm.to(logits.device)).float()
            uses.append(self._uses(t, areas))
            peaks.append(heatmap_peaks(logits) * aspect.to(logits.device))
            total, count = self._accumulate(total, count, logits, uses[-1])
        assert total is not None and count is not None
        combined = total / count.clamp(min=1)[:, None, None, None] \
            if self.combine == "avg" else total
        spread = keypoint_spread(peaks, uses)
        # 5. heatmaps -> keypoints in the identity frame, then to the original image.
        keypoints, scores = [], []
        for b, maps, s, o in zip(base_boxes, combined.split([len(b) for b in base_boxes]),
                                 base_sizes, original, strict=True):
            if len(b):
                kps, kp_scores = heatmaps_to_keypoints(maps, b)
            else:
                k = maps.shape[1]
                kps, kp_scores = maps.new_zeros((0, k, 3)), maps.new_zeros((0, k))
            keypoints.append(resize_keypoints(kps, list(s), list(o)))
            scores.append(kp_scores)
        return keypoints, scores, list(spread.split([len(b) for b in base_boxes]))

    def _resized_size(self, original: tuple[int, int]) -> tuple[int, int]:
        """(h, w) of an image after the identity pass's resize, as torchvision computes it."""
        h, w = original
        scale = min(self.identity.scale / min(h, w), self.identity.max_size / max(h, w))
        # interpolate(scale_factor=..., recompute_scale_factor=True) floors the product.
        return int(h * scale), int(w * scale)

    def _uses(self, t: Transform, areas: Tensor) -> Tensor:
        """Which RoIs take this transform's heatmaps (Detectron's HM_SIZE_DEP)."""
        if not self.size_dependent or t.scale == self.identity.scale:
            return torch.ones_like(areas, dtype=torch.bool)
        small = areas < self.area_threshold
        return ~small if t.scale < self.identity.scale else small

    def _accumulate(self, total: Tensor | None, count: Tensor | None, logits: Tensor,
                    use: Tensor) -> tuple[Tensor, Tensor]:
        use = use.to(logits.device)
        mask = use[:, None, None, None]
        if total is None or count is None:
            count = torch.zeros(len(logits), device=logits.device)
            total = torch.zeros_like(logits) if self.combine == "avg" \
                else torch.full_like(logits, float("-inf"))
        if self.combine == "avg":
            total = total + torch.where(mask, logits, torch.zeros_like(logits))
        else:
            total = torch.where(mask, torch.maximum(total, logits), total)
        return total, count + use.float()


def heatmap_peaks(logits: Tensor) -> Tensor:
    """(N, K, 2) position of each heatmap's maximum (the centre of its cell), as fractions
    of the RoI's width and height; ``logits`` is (N, K, H, W)."""
    n, k, h, w = logits.shape
    index = logits.reshape(n, k, h * w).argmax(dim=2)
    x = ((index % w).float() + 0.5) / w
    y = (torch.div(index, w, rounding_mode="floor").float() + 0.5) / h
    return torch.stack([x, y], dim=2)


def keypoint_spread(peaks: list[Tensor], uses: list[Tensor]) -> Tensor:
    """(N, K) spread of each keypoint's location across transforms.

    ``peaks`` holds one (N, K, 2) position per transform, all in the same (identity) RoI
    frame and unit (the keypoint ensemble passes :func:`heatmap_peaks` rescaled to
    fractions of the RoI's longer side); ``uses`` one (N,) bool per transform, False
    where a transform does not vote for an RoI (size-dependent selection). The spread
    is the mean distance of the voting transforms' peaks from their mean, in that unit;
    0 where fewer than two transforms vote.
    """
    stacked = torch.stack(peaks)  # (T, N, K, 2)
    mask = torch.stack(uses).to(stacked.device).float()[:, :, None]  # (T, N, 1)
    counts = mask.sum(dim=0).clamp(min=1)  # (N, 1)
    mean = (stacked * mask[..., None]).sum(dim=0) / counts[..., None]
    distance = (stacked - mean[None]).norm(dim=3)  # (T, N, K)
    spread = (distance * mask).sum(dim=0) / counts
    spread[mask.sum(dim=0).squeeze(1) < 2] = 0.0
    return spread

def _detect(model: KeypointRCNN, features: OrderedDict[str, Tensor], proposals: list[Tensor],
            image_sizes: list[tuple[int, int]]) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """The box branch of ``RoIHeads.forward`` in eval mode, without the keypoint branch."""
    heads = model.roi_heads
    x = heads.box_head(heads.box_roi_pool(features, proposals, image_sizes))
    class_logits, box_regression = heads.box_predictor(x)
    boxes, scores, labels = heads.postprocess_detections(class_logits, box_regression,
                                                         proposals, image_sizes)
    return boxes, scores, labels


def _keypoint_logits(model: KeypointRCNN, features: OrderedDict[str, Tensor], rois: list[Tensor],
                     image_sizes: list[tuple[int, int]]) -> Tensor:
    """Keypoint RoIAlign + head + predictor: logits (N, K, 56, 56) in each RoI's frame."""
    heads = model.roi_heads
    x = heads.keypoint_roi_pool(features, rois, image_sizes)
    return heads.keypoint_predictor(heads.keypoint_head(x))

