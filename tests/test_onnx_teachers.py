"""ONNX teachers (YOLO detect and pose, RT-DETR) on small models exported here with the
exact Ultralytics layouts: the identity pass is the model's own decoded output, passes
map back (boxes, left/right keypoints), imports refuse what does not fit."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from distill.checkpoint import load_checkpoint, save_checkpoint
from distill.options import FusionParams
from distill.teachers.interface import ImportRequest
from distill.teachers.onnx_import import import_onnx
from distill.teachers.registry import load_detector
from distill.tta.boxes import BoxTTA
from distill.tta.transforms import Transform, hflip_boxes, parse_preset
from tests.onnx_models import (
    KEYPOINTS,
    RedBlob,
    TinyDetr,
    TinyYolo,
    export,
    opencv_resize,
    reference_letterbox,
    reference_yolo,
)

SIZES = [(150, 200), (120, 90)]
# The model's own thresholds, as the fusion's: one pass fused equals the model's output.
OWN = FusionParams("vote", pooling="nms", nms_threshold=0.7, max_detections=300)


def _images(seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # Decoded 8-bit images, as the service's are (LetterBox resizes 8-bit values).
    return [torch.rand(3, h, w, generator=g).mul(255).round().div(255) for h, w in SIZES]


def _yaml(path: Path, names: list[str], pose: bool = False) -> Path:
    text = f"names: {names}\n"
    if pose:
        text += "kpt_shape: [3, 3]\nflip_idx: [0, 2, 1]\nkpt_names: {0: " + str(KEYPOINTS) + "}\n"
    path.write_text(text)
    return path


def _teacher(root: Path, name: str, model: torch.nn.Module, arch: str, names: list[str], *,
             size: tuple[int, int] = (160, 160), dynamic: bool = False, pose: bool = False,
             options: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None
             ) -> Path:
    onnx = export(model, root / f"{name}.onnx", size, dynamic=dynamic, metadata=metadata)
    card, tensors = import_onnx(ImportRequest(arch, onnx, _yaml(root / f"{name}.yaml", names, pose),
                                              arch_options=options))
    save_checkpoint(root / f"{name}.pt", card, tensors)
    return root / f"{name}.pt"


@pytest.fixture(scope="module")
def teachers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("onnx")
    low = {"score_thresh": 0.25}
    return {
        "detect": _teacher(root, "detect", TinyYolo(2), "yolo-onnx", ["a", "b"], options=low),
        # A dynamic input: the size comes from the exporter's metadata.
        "dynamic": _teacher(root, "dynamic", TinyYolo(2, seed=1), "yolo-onnx", ["a", "b"],
                            dynamic=True, options=low,
                            metadata={"imgsz": [160, 160], "stride": 32, "task": "detect"}),
        "pose": _teacher(root, "pose", TinyYolo(1, k=3, seed=2), "yolo-onnx", ["person"],
                         pose=True, options=low),
        "detr": _teacher(root, "detr", TinyDetr(3), "rtdetr-onnx", ["a", "b", "c"], options=low),
        "blob": _teacher(root, "blob", RedBlob(pose=True), "yolo-onnx", ["person"],
                         size=(128, 160), pose=True),
    }


def _detector(path: Path) -> tuple[Any, Any]:
    card, tensors, _ = load_checkpoint(path)
    return card, load_detector(card, tensors)


def _canonical(det: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detections by score, ties (grey letterbox padding gives equal scores) by position."""
    order = torch.arange(len(det["scores"]))
    for key in (det["boxes"][:, 1], det["boxes"][:, 0], -det["scores"]):
        order = order[key[order].argsort(stable=True)]
    return {k: v[order] for k, v in det.items() if v.ndim and len(v) == len(order)}


def _run_session(detector: Any, batch: torch.Tensor) -> torch.Tensor:
    out = detector.session.run(None, {"images": batch[None].numpy()})[0][0]
    return torch.from_numpy(out)


@pytest.mark.parametrize(("name", "auto"), [("detect", False), ("dynamic", True), ("pose", False)])
def test_identity_preset_is_the_models_own_decoded_output(teachers: dict[str, Path], name: str,
                                                          auto: bool) -> None:
    card, detector = _detector(teachers[name])
    images = _images()
    got = BoxTTA(detector, parse_preset("identity", card.min_size, card.max_size), OWN,
                 flip_perm=card.flip_permutation() if card.task == "keypoints" else None)(images)
    k = len(card.keypoint_names)
    for image, g in zip(images, got, strict=True):
        canvas_in = reference_letterbox(image, (160, 160), auto=auto)
        ref = reference_yolo(_run_session(detector, canvas_in), tuple(canvas_in.shape[-2:]),
                             tuple(image.shape[-2:]), conf=0.25, iou=0.7,
                             nc=card.arch_options["num_classes"], k=k)
        g, ref = _canonical(g), _canonical(ref)
        assert len(ref["boxes"]) > 3
        torch.testing.assert_close(g["boxes"], ref["boxes"], atol=1e-3, rtol=0)
        torch.testing.assert_close(g["scores"], ref["scores"])
        assert torch.equal(g["labels"], ref["labels"])
        if k:
            torch.testing.assert_close(g["keypoints"][..., :2], ref["keypoints"][..., :2],
                                       atol=1e-3, rtol=0)
            torch.testing.assert_close(g["keypoints_scores"], ref["keypoints"][..., 2])
            assert torch.all(g["votes"] == 1) and torch.all(g["keypoints_spread"] == 0)


def test_rtdetr_identity_is_its_own_decoded_output(teachers: dict[str, Path]) -> None:
    _card, detector = _detector(teachers["detr"])
    image = _images(1)[0]
    # No NMS in RT-DETR: the fusion's suppresses nothing either, and votes only duplicates.
    own = FusionParams("vote", pooling="nms", nms_threshold=1.0, vote_threshold=1.0)
    got = BoxTTA(detector, parse_preset("identity", 160, 160), own)([image])[0]
    # RTDETRPredictor: stretch to the input, best class per query > conf, boxes x (w, h).
    canvas_in = opencv_resize(image, (160, 160))  # LetterBox(scaleFill=True): cv2.resize
    out = _run_session(detector, canvas_in)
    score, cls = out[:, 4:].max(1)
    keep = score > 0.25
    xywh = out[keep, :4] * torch.tensor([200, 150, 200, 150])
    boxes = torch.cat([xywh[:, :2] - xywh[:, 2:] / 2, xywh[:, :2] + xywh[:, 2:] / 2], 1)
    order = score[keep].argsort(descending=True)
    assert len(order) > 3
    torch.testing.assert_close(got["scores"], score[keep][order])
    torch.testing.assert_close(got["boxes"], boxes[order], atol=1e-3, rtol=0)
    assert torch.equal(got["labels"], cls[keep][order] + 1)


@pytest.mark.parametrize("name", ["pose", "detr"])
def test_a_flipped_pass_is_the_mirrored_identity_pass(teachers: dict[str, Path],
                                                      name: str) -> None:
    """Flip-only on an image equals identity on its mirror, mirrored back: boxes, and
    for pose the keypoints with left and right swapped."""
    card, detector = _detector(teachers[name])
    image = _images(2)[0]
    perm = card.flip_permutation() if card.task == "keypoints" else None
    flip = BoxTTA(detector, [Transform(160, 160, hflip=True)], OWN, flip_perm=perm)([image])[0]
    ref = BoxTTA(detector, [Transform(160, 160)], OWN, flip_perm=perm)([image.flip(-1)])[0]
    assert len(ref["boxes"]) > 0
    torch.testing.assert_close(flip["boxes"], hflip_boxes(ref["boxes"], image.shape[-1]))
    torch.testing.assert_close(flip["scores"], ref["scores"])
    if perm is not None:
        assert perm == [0, 2, 1]
        mirrored = ref["keypoints"][:, perm].clone()
        mirrored[..., 0] = image.shape[-1] - mirrored[..., 0]
        torch.testing.assert_close(flip["keypoints"], mirrored)
        torch.testing.assert_close(flip["keypoints_scores"], ref["keypoints_scores"][:, perm])


def _blob_image() -> torch.Tensor:
    image = torch.zeros(3, 150, 200)
    image[0, 40:100, 30:90] = 1.0  # red, off-centre: x 30..90, y 40..100
    return image


def test_scaled_and_flipped_passes_agree_on_the_oracle(teachers: dict[str, Path]) -> None:
    """The red-blob oracle under a fixed 128 x 160 input: every pass of ``standard`` that
    fits (x0.75 and x1, each mirrored) finds the blob where it is, and the fused
    keypoints keep left on the right edge only because mirrored passes are swapped."""
    card, detector = _detector(teachers["blob"])
    transforms = [t for t in parse_preset("standard", card.min_size, card.max_size)
                  if t.scale <= card.max_size]
    assert sorted(str(t) for t in transforms) == ["120", "120+flip", "160", "160+flip"]
    out = BoxTTA(detector, transforms, flip_perm=card.flip_permutation())([_blob_image()])[0]
    assert len(out["boxes"]) == 1 and int(out["votes"][0]) == 4
    # Bilinear resizing blurs the blob's edge by up to a pixel of the smallest pass.
    torch.testing.assert_close(out["boxes"][0], torch.tensor([30.0, 40.0, 90.0, 100.0]),
                               atol=2.0, rtol=0)
    nose, left, right = out["keypoints"][0, :, :2]
    torch.testing.assert_close(nose, torch.tensor([60.0, 70.0]), atol=2.0, rtol=0)
    assert abs(left[0] - 90) < 2 and abs(right[0] - 30) < 2  # swapped back, not averaged
    assert out["keypoints_spread"].max() < 0.03
    # The oracle's confidences belong to its channels (left 0.8, right 0.7): a mirrored
    # pass's left channel is the right hand, so each hand averages 0.8 and 0.7.
    torch.testing.assert_close(out["keypoints_scores"][0], torch.tensor([0.9, 0.75, 0.75]))


def test_weighted_boxes_fusion_fuses_regressed_keypoints_too(teachers: dict[str, Path]) -> None:
    card, detector = _detector(teachers["blob"])
    passes = [Transform(160, 160), Transform(160, 160, hflip=True), Transform(120, 160)]
    out = BoxTTA(detector, passes, FusionParams("wbf"),
                 flip_perm=card.flip_permutation())([_blob_image()])[0]
    assert len(out["boxes"]) == 1 and int(out["votes"][0]) == 3
    torch.testing.assert_close(out["boxes"][0], torch.tensor([30.0, 40.0, 90.0, 100.0]),
                               atol=2.0, rtol=0)
    left, right = out["keypoints"][0, 1:, 0]
    assert abs(left - 90) < 2 and abs(right - 30) < 2


def test_the_single_pass_baseline_is_the_identity_preset(teachers: dict[str, Path]) -> None:
    """`distill eval` without TTA (``plain_predictor``) gives the identity pass's output."""
    from distill.tta.predictor import plain_predictor

    card, detector = _detector(teachers["detect"])
    images = _images(3)
    plain = plain_predictor(detector, card)(images)
    fused = BoxTTA(detector, parse_preset("identity", 160, 160), OWN)(images)
    for p, f in zip(plain, fused, strict=True):
        p, f = _canonical(p), _canonical(f)
        assert len(p["boxes"]) > 3 and p["boxes"].min() >= 0
        torch.testing.assert_close(p["boxes"], f["boxes"])
        torch.testing.assert_close(p["scores"], f["scores"])


def test_a_fixed_batch_runs_any_number_of_images(tmp_path: Path) -> None:
    """An export with a fixed batch of 2 takes 3 images: the last chunk is padded."""
    onnx = export(TinyYolo(2), tmp_path / "b2.onnx", (160, 160), batch=2)
    card, tensors = import_onnx(ImportRequest("yolo-onnx", onnx,
                                              _yaml(tmp_path / "n.yaml", ["a", "b"])))
    assert card.arch_options["batch"] == 2
    detector = load_detector(card, tensors)
    images = [*_images(), _images(1)[0]]
    together = detector.detect(images, 160, 160, raw_cap=None)
    for image, t in zip(images, together, strict=True):
        alone = detector.detect([image], 160, 160, raw_cap=None)[0]
        assert len(alone["boxes"]) > 0
        torch.testing.assert_close(t["boxes"], alone["boxes"])
        torch.testing.assert_close(t["scores"], alone["scores"])
