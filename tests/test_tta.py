"""Multi-transform inference: identity reproduces the model, flips invert exactly, presets parse."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torchvision.models.detection import KeypointRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.ops import MultiScaleRoIAlign

from distill.errors import ConfigError
from distill.models.zoo import build_model
from distill.options import FusionParams
from distill.tta.boxes import BoxTTA
from distill.tta.keypoints import KeypointTTA, heatmap_peaks, keypoint_spread
from distill.tta.transforms import Transform, hflip_boxes, parse_preset

IMAGE_SIZES = [(240, 300), (200, 180), (333, 177)]


def _images(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(3, h, w, generator=g) for h, w in IMAGE_SIZES]


@pytest.fixture(scope="module")
def kp_model() -> KeypointRCNN:
    torch.manual_seed(0)
    return build_model("tiny", "keypoints", num_classes=2, num_keypoints=13,
                       min_size=256, max_size=416).eval()


@pytest.fixture(scope="module")
def box_model() -> nn.Module:
    torch.manual_seed(1)
    return build_model("tiny", "boxes", num_classes=4, min_size=256, max_size=416).eval()


def test_identity_preset_reproduces_keypoint_rcnn(kp_model: KeypointRCNN) -> None:
    images = _images()
    with torch.inference_mode():
        expected = kp_model(images)
    got = KeypointTTA(kp_model, parse_preset("identity", 256, 416), list(range(13)))(images)
    for e, g in zip(expected, got, strict=True):
        assert len(e["boxes"]) > 0
        torch.testing.assert_close(g["boxes"], e["boxes"])
        torch.testing.assert_close(g["scores"], e["scores"])
        assert torch.equal(g["labels"], e["labels"])
        # Boxes make one round trip original -> resized frame: float rounding only.
        torch.testing.assert_close(g["keypoints"], e["keypoints"], atol=1e-3, rtol=0)
        torch.testing.assert_close(g["keypoints_scores"], e["keypoints_scores"],
                                   atol=1e-4, rtol=0)


def test_identity_preset_reproduces_faster_rcnn(box_model: nn.Module) -> None:
    images = _images(1)
    with torch.inference_mode():
        expected = box_model(images)
    # One pass pooled NMS-ed is the detector's own output; raw pooling would vote its boxes.
    got = BoxTTA(box_model, parse_preset("identity", 256, 416),
                 FusionParams("vote", pooling="nms"))(images)
    for e, g in zip(expected, got, strict=True):
        assert len(e["boxes"]) > 0
        # Voting over one pass: survivors of the model's own NMS(0.5) never overlap at 0.8.
        order_e, order_g = e["scores"].argsort(stable=True), g["scores"].argsort(stable=True)
        torch.testing.assert_close(g["boxes"][order_g], e["boxes"][order_e])
        torch.testing.assert_close(g["scores"][order_g], e["scores"][order_e])
        assert torch.equal(g["labels"][order_g], e["labels"][order_e])


def test_flipped_box_pass_is_mirrored_identity_pass(box_model: nn.Module) -> None:
    """Flip-only TTA on an image equals identity TTA on its mirror, mirrored back."""
    image = _images(2)[0]
    flip_only = [Transform(256, 416, hflip=True)]
    identity = [Transform(256, 416, hflip=False)]
    got = BoxTTA(box_model, flip_only)([image])[0]
    ref = BoxTTA(box_model, identity)([image.flip(-1)])[0]
    torch.testing.assert_close(got["boxes"], hflip_boxes(ref["boxes"], image.shape[-1]))
    torch.testing.assert_close(got["scores"], ref["scores"])


# An oracle keypoint branch: backbone = the image, head = colour matching with a
# side preference. Each left/right pair shares one colour; the left channel prefers
# the RoI's right half (a person facing the viewer), the right channel its left half.
COLOURS = torch.tensor([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
KEYPOINTS = ["nose", "left_hand", "right_hand"]  # nose: red; hands: green


class _ImageBackbone(nn.Module):
    out_channels = 3

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"0": x}


class _ColourOracle(nn.Module):
    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        n, _, h, w = feats.shape
        match = [-((feats - COLOURS[i].view(1, 3, 1, 1)) ** 2).sum(1) * 4 for i in (0, 1, 1)]
        ramp = torch.linspace(-1, 1, w).view(1, 1, w).expand(n, h, w)
        logits = torch.stack([match[0], match[1] + ramp, match[2] - ramp], dim=1)
        return nn.functional.interpolate(logits, size=(56, 56), mode="bilinear",
                                         align_corners=False)


def _oracle_model() -> KeypointRCNN:
    return KeypointRCNN(
        _ImageBackbone(), num_classes=2, min_size=128, max_size=256,
        image_mean=[0.0, 0.0, 0.0], image_std=[1.0, 1.0, 1.0],
        rpn_anchor_generator=AnchorGenerator(((32,),), ((1.0,),)),
        box_roi_pool=MultiScaleRoIAlign(["0"], 7, 2),
        keypoint_roi_pool=MultiScaleRoIAlign(["0"], 14, 2),
        keypoint_head=nn.Identity(), keypoint_predictor=_ColourOracle(),
    ).eval()


def _symmetric_image() -> torch.Tensor:
    img = torch.zeros(3, 128, 160)
    # Blobs larger than a RoIAlign bin, so both hands are sampled equally well.
    img[:, 24:44, 70:90] = COLOURS[0].view(3, 1, 1)  # nose, on the axis
    img[:, 76:96, 34:54] = COLOURS[1].view(3, 1, 1)  # a hand on the left ...
    img[:, 76:96, 106:126] = COLOURS[1].view(3, 1, 1)  # ... and its mirror
    assert torch.equal(img, img.flip(-1))
    return img


@pytest.mark.parametrize("box", [[16.0, 10.0, 144.0, 120.0], [20.0, 14.0, 150.0, 118.0]])
def test_flip_pass_with_channel_swap_lands_on_identity_keypoints(box: list[float]) -> None:
    model = _oracle_model()
    image = _symmetric_image()
    boxes = [torch.tensor([box])]
    flip_perm = [0, 2, 1]
    ident = KeypointTTA(model, [Transform(128, 256)], flip_perm)
    flip = KeypointTTA(model, [Transform(128, 256, hflip=True)], flip_perm)
    k_id, _, _ = ident.keypoints_on_boxes([image], boxes)
    k_fl, _, _ = flip.keypoints_on_boxes([image], boxes)
    # The identity pass finds the person's left hand on the image's right.
    assert k_id[0][0, 1, 0] > 100 and k_id[0][0, 2, 0] < 60
    # RoIAlign (aligned=False) samples half a pixel off-centre, so a mirrored
    # pass can land one pixel away; a missing swap would miss by ~70 pixels.
    torch.testing.assert_close(k_fl[0][..., :2], k_id[0][..., :2], atol=2.0, rtol=0)
    no_swap = KeypointTTA(model, [Transform(128, 256, hflip=True)], [0, 1, 2])
    k_wrong, _, _ = no_swap.keypoints_on_boxes([image], boxes)
    assert (k_wrong[0][0, 1, 0] - k_id[0][0, 1, 0]).abs() > 50


def test_keypoint_spread_is_small_when_passes_agree_and_large_when_they_do_not() -> None:
    model, image = _oracle_model(), _symmetric_image()
    boxes = [torch.tensor([[16.0, 10.0, 144.0, 120.0]])]
    passes = [Transform(128, 256), Transform(128, 256, hflip=True)]
    _, _, agree = KeypointTTA(model, passes, [0, 2, 1]).keypoints_on_boxes([image], boxes)
    # Without the left/right swap the mirrored pass puts each hand on the other side:
    # ~0.28 box widths from the two passes' mean; the nose (on the axis) stays put.
    _, _, apart = KeypointTTA(model, passes, [0, 1, 2]).keypoints_on_boxes([image], boxes)
    assert agree[0].shape == (1, 3) and agree[0].max() < 0.05
    assert apart[0][0, 1:].min() > 0.2 and apart[0][0, 0] < 0.05
    # One pass alone has nothing to disagree with.
    _, _, alone = KeypointTTA(model, passes[:1], [0, 2, 1]).keypoints_on_boxes([image], boxes)
    assert alone[0].eq(0).all()


def test_heatmap_peaks_and_spread_by_hand() -> None:
    heatmaps = torch.zeros(1, 1, 8, 8)
    heatmaps[0, 0, 5, 3] = 1.0  # row 5, column 3
    assert heatmap_peaks(heatmaps)[0, 0].tolist() == [3.5 / 8, 5.5 / 8]
    left, right = torch.tensor([[[0.25, 0.5]]]), torch.tensor([[[0.75, 0.5]]])
    on, off = torch.tensor([True]), torch.tensor([False])
    assert keypoint_spread([left, right], [on, on]).tolist() == [[0.25]]
    assert keypoint_spread([left, right], [on, off]).tolist() == [[0.0]]


def test_heatmap_max_and_avg_agree_on_a_single_pass(kp_model: KeypointRCNN) -> None:
    images = _images(3)[:1]
    avg = KeypointTTA(kp_model, [Transform(256, 416)], list(range(13)), combine="avg")(images)
    mx = KeypointTTA(kp_model, [Transform(256, 416)], list(range(13)), combine="max")(images)
    torch.testing.assert_close(avg[0]["keypoints"], mx[0]["keypoints"])


def test_multi_transform_keypoints_keep_boxes_and_shapes(kp_model: KeypointRCNN) -> None:
    images = _images(4)
    single = KeypointTTA(kp_model, parse_preset("identity", 256, 416), list(range(13)))(images)
    multi = KeypointTTA(kp_model, parse_preset("standard", 256, 416), list(range(13)),
                        size_dependent=True)(images)
    for s, m, (h, w) in zip(single, multi, IMAGE_SIZES, strict=True):
        torch.testing.assert_close(m["boxes"], s["boxes"])  # all passes share the boxes
        assert m["keypoints"].shape == s["keypoints"].shape
        assert (m["keypoints"][..., 0] <= w + 1).all() and (m["keypoints"][..., 1] <= h + 1).all()


def test_size_dependent_selection_needs_the_base_scale(kp_model: KeypointRCNN) -> None:
    with pytest.raises(ConfigError, match="base scale"):
        KeypointTTA(kp_model, [Transform(320, 520)], list(range(13)), size_dependent=True)


def test_size_dependent_masks_follow_detectron() -> None:
    tta = KeypointTTA(_oracle_model(), [Transform(128, 256)], [0, 2, 1], size_dependent=True)
    areas = torch.tensor([10.0, tta.area_threshold + 1])
    assert tta._uses(Transform(64, 128), areas).tolist() == [False, True]  # down-scaled
    assert tta._uses(Transform(256, 512), areas).tolist() == [True, False]  # up-scaled
    assert tta._uses(Transform(128, 256, hflip=True), areas).tolist() == [True, True]


def test_presets() -> None:
    paper = parse_preset("paper", 800, 1333)
    assert len(paper) == 18
    assert sorted(t.scale for t in paper if not t.hflip) == list(range(400, 1201, 100))
    assert paper[0] == Transform(800, 1333, False)  # identity first
    rel = parse_preset("paper-relative", 256, 416)
    assert len(rel) == 18 and min(t.scale for t in rel) == 128 and max(t.scale for t in rel) == 384
    assert parse_preset("identity", 256, 416) == [Transform(256, 416)]
    assert parse_preset("flip", 256, 416) == [Transform(256, 416), Transform(256, 416, True)]
    custom = parse_preset("224,256,320+flip", 256, 416)
    assert len(custom) == 6 and custom[0] == Transform(256, 416)
    assert [t.scale for t in parse_preset("x0.5,x2", 256, 416)] == [128, 512]
    # The longer-side cap keeps the teacher's own max/min ratio.
    assert parse_preset("x2", 256, 416)[0].max_size == 832


@pytest.mark.parametrize("spec", ["bogus", "", "x1,300", "x1,abc", "5"])
def test_bad_presets_are_clear_errors(spec: str) -> None:
    with pytest.raises(ConfigError):
        parse_preset(spec, 256, 416)


def test_box_projection_round_trip() -> None:
    boxes = torch.tensor([[10.0, 20.0, 50.0, 80.0], [0.0, 0.0, 300.0, 240.0]])
    t = Transform(512, 832, hflip=True)
    projected = t.boxes_to_pass(boxes, (240, 300), (480, 600))
    torch.testing.assert_close(projected[0], torch.tensor([500.0, 40.0, 580.0, 160.0]))
    torch.testing.assert_close(hflip_boxes(hflip_boxes(boxes, 300), 300), boxes)


def test_keypoint_cap_keeps_the_best_detections_unchanged(kp_model: KeypointRCNN) -> None:
    """The cap drops the lowest-scoring detections before the keypoint ensemble; the ones
    it keeps get exactly the keypoints they get without it."""
    images = _images()
    transforms = parse_preset("flip", 256, 416)
    full = KeypointTTA(kp_model, transforms, list(range(13)))(images)
    capped = KeypointTTA(kp_model, transforms, list(range(13)), max_instances=5)(images)
    for f, c in zip(full, capped, strict=True):
        assert len(f["boxes"]) > 5 and len(c["boxes"]) == 5
        for key in ("boxes", "scores", "labels", "keypoints", "keypoints_scores"):
            torch.testing.assert_close(c[key], f[key][:5])
    with pytest.raises(ConfigError, match="max_instances"):
        KeypointTTA(kp_model, transforms, list(range(13)), max_instances=0)


def test_automatic_keypoint_cap_follows_the_labeled_instances() -> None:
    from distill.card import LabeledStats, ModelCard
    from distill.tta.predictor import keypoint_cap

    def card(mean: float | None) -> ModelCard:
        stats = None if mean is None else LabeledStats(images=10, instances_per_image={
            "1": mean}, visible_keypoints_per_instance=10.0)
        return ModelCard(arch="tiny", task="keypoints", min_size=256, max_size=416,
                         categories=[{"id": 1, "name": "person", "keypoints": ["a"]}],
                         labeled_stats=stats)

    assert keypoint_cap(card(1.5), "auto") == 10  # at least KEYPOINT_CAP_MIN
    assert keypoint_cap(card(6.0), "auto") == 24  # 4 x the labeled mean
    assert keypoint_cap(card(None), "auto") is None  # no statistics: no cap
    assert keypoint_cap(card(6.0), 0) is None and keypoint_cap(card(6.0), 7) == 7


def test_size_dependent_area_is_measured_in_original_pixels() -> None:
    """Detectron's AREA_TH (180^2) applies to boxes in the original image, whatever the
    scale the identity pass resizes it to: boxes just below and just above it."""
    tta = KeypointTTA(_oracle_model(), [Transform(128, 256), Transform(64, 128),
                                        Transform(256, 512)], [0, 2, 1], size_dependent=True)
    assert tta.area_threshold == 180 ** 2
    # A 1000 x 800 image: the identity pass (128) shrinks it 6x, so in the resized frame
    # both boxes would be tiny; in original pixels one is small, one is large.
    images = [torch.rand(3, 800, 1000)]
    small = torch.tensor([[100.0, 100.0, 279.0, 280.0]])  # 179 x 180 < 180^2
    large = torch.tensor([[100.0, 100.0, 281.0, 280.0]])  # 181 x 180 > 180^2
    used: list[list[bool]] = []
    original = tta._uses
    tta._uses = lambda t, areas: (used.append(original(t, areas).tolist()),  # type: ignore[method-assign]
                                  original(t, areas))[1]
    tta.keypoints_on_boxes(images, [torch.cat([small, large])])
    # transforms: base (all), down-scaled (large only), up-scaled (small only)
    assert used == [[True, True], [False, True], [True, False]]


def test_raw_pooling_pools_what_the_detectors_nms_would_drop(box_model: nn.Module) -> None:
    """Raw pooling (Detectron's): each transform contributes its score-filtered per-class
    boxes before NMS and top-k, so the pool is larger, every survivor is voted against all
    of it, and the result is still at most max_detections boxes per image."""
    from distill.tta.boxes import _nms

    images = _images()
    transforms = parse_preset("flip", 256, 416)
    original = [(int(i.shape[-2]), int(i.shape[-1])) for i in images]
    final = BoxTTA(box_model, transforms, FusionParams("vote", pooling="nms"))
    raw = BoxTTA(box_model, transforms, FusionParams("vote", pooling="raw", raw_pool_cap=300))
    with torch.inference_mode():
        pool_final = final._detect(transforms[0], images, original)
        pool_raw = raw._detect(transforms[0], images, original)
    for f, r in zip(pool_final, pool_raw, strict=True):
        assert len(r["boxes"]) > len(f["boxes"]) and len(r["boxes"]) <= 300
        # The detector's own NMS of the raw set gives back its usual output.
        again = _nms(box_model, r)
        torch.testing.assert_close(again["boxes"], f["boxes"])
        torch.testing.assert_close(again["scores"], f["scores"])
    assert box_model.roi_heads.nms_thresh == 0.5  # restored after the raw pass
    outputs = raw(images)
    for out in outputs:
        assert 0 < len(out["boxes"]) <= 100
        assert out["votes"].max() <= len(transforms)
    with pytest.raises(ConfigError, match="pooling"):
        FusionParams("vote", pooling="all")  # type: ignore[arg-type]


def test_default_pooling_follows_the_fusion_method() -> None:
    from dataclasses import replace

    # Voting pools raw (Detectron); weighted boxes fusion wants one box per transform.
    assert FusionParams("vote").pooled == "raw" and FusionParams("wbf").pooled == "nms"
    # A job's copy with another method gets that method's default, not the first's.
    assert replace(FusionParams("vote"), method="wbf").pooled == "nms"
    assert FusionParams("wbf", pooling="nms").pooled == "nms"
    with pytest.raises(ConfigError, match="weighted boxes fusion"):
        FusionParams("wbf", pooling="raw")


def test_keypoints_on_given_boxes_are_the_ensemble_of_those_boxes(kp_model: KeypointRCNN
                                                                  ) -> None:
    """``on_boxes`` (a box an annotator drew): the boxes come back as given, with the
    keypoints the detection path ensembles on the same boxes, inside each box, and a
    box-head score and foreground label per box."""
    images = _images(5)
    tta = KeypointTTA(kp_model, parse_preset("standard", 256, 416), list(range(13)))
    detected = tta(images)
    given = [d["boxes"] for d in detected]
    placed = tta.on_boxes(images, given)
    for d, p, g in zip(detected, placed, given, strict=True):
        assert len(g) > 0
        assert torch.equal(p["boxes"], g)
        torch.testing.assert_close(p["keypoints"], d["keypoints"])
        torch.testing.assert_close(p["keypoints_scores"], d["keypoints_scores"])
        assert (p["labels"] == 1).all() and ((p["scores"] > 0) & (p["scores"] <= 1)).all()
    # A box where nothing was detected still gets keypoints, inside it.
    drawn = [torch.tensor([[10.0, 20.0, 90.0, 180.0]])]
    (out,) = tta.on_boxes(images[:1], drawn)
    kps = out["keypoints"][0]
    assert kps.shape == (13, 3)
    assert ((kps[:, 0] >= 10 - 1) & (kps[:, 0] <= 90 + 1)).all()
    assert ((kps[:, 1] >= 20 - 1) & (kps[:, 1] <= 180 + 1)).all()
