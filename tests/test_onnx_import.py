"""`distill teacher import --arch yolo-onnx | rtdetr-onnx`: what fits is imported into a
safe checkpoint, what does not is refused in one line before anything is written, and
the imported teacher annotates through the same pipeline as any other."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import nn

from distill.annotate import Teacher, annotate_folder
from distill.cardfile import read_card
from distill.checkpoint import load_checkpoint, save_checkpoint
from distill.cli import main
from distill.errors import CardError
from distill.options import InferenceOptions
from distill.pseudolabels import SelectionConfig
from tests.onnx_models import KEYPOINTS, RedBlob, TinyDetr, TinyYolo, export


def _yaml(path: Path, names: list[str], pose: bool = False) -> Path:
    text = f"names: {names}\n"
    if pose:
        text += f"kpt_shape: [3, 3]\nflip_idx: [0, 2, 1]\nkpt_names: {{0: {KEYPOINTS}}}\n"
    path.write_text(text)
    return path


def _import(tmp: Path, onnx: Path, categories: Path | str, *extra: str,
            arch: str = "yolo-onnx") -> tuple[int, Path]:
    out = tmp / "t.pt"
    code = main(["teacher", "import", "--arch", arch, "--weights", str(onnx), "--categories",
                 str(categories), "--out", str(out), *extra])
    return code, out


def _refused(capsys: pytest.CaptureFixture[str], tmp: Path, onnx: Path,
             categories: Path | str, *extra: str, arch: str = "yolo-onnx") -> str:
    capsys.readouterr()
    code, out = _import(tmp, onnx, categories, *extra, arch=arch)
    err = capsys.readouterr().err
    assert code == 2 and not out.exists(), err
    assert err.count("\n") == 1 and "Traceback" not in err
    return err


class TwoOutputs(nn.Module):  # a segmentation export has a second output (the protos)
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x.mean(1).flatten(1)[:, None, :6].repeat(1, 6, 1), x[:, :1]


def test_mismatches_are_refused_in_one_line(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    detect = export(TinyYolo(2), tmp_path / "d.onnx", (160, 160))
    pose = export(TinyYolo(1, k=3), tmp_path / "p.onnx", (160, 160))
    detr = export(TinyDetr(3), tmp_path / "r.onnx", (160, 160))
    two = _yaml(tmp_path / "two.yaml", ["a", "b"])

    err = _refused(capsys, tmp_path, detect, _yaml(tmp_path / "three.yaml", ["a", "b", "c"]))
    assert "output 'output0' is [1, 6, 500]" in err and "needs [B, 7, N] (4 + 3 classes)" in err
    err = _refused(capsys, tmp_path, pose, _yaml(tmp_path / "one.yaml", ["person"]))
    assert "needs [B, 5, N]" in err and "or a pose model" in err
    err = _refused(capsys, tmp_path, detr, _yaml(tmp_path / "abc.yaml", ["a", "b", "c"]))
    assert "is [1, 20, 7]" in err and "needs [B, 7, N]" in err  # RT-DETR's layout as YOLO
    err = _refused(capsys, tmp_path, detect, two, arch="rtdetr-onnx")
    assert "needs [B, Q, 6]" in err
    err = _refused(capsys, tmp_path, export(TwoOutputs(), tmp_path / "s.onnx", (64, 64)), two)
    assert "has 2 outputs" in err
    named = export(TinyYolo(2), tmp_path / "n.onnx", (160, 160),
                   metadata={"names": {0: "cat", 1: "dog"}})
    err = _refused(capsys, tmp_path, named, two)
    assert "class names differ" in err and "'cat' vs 'a'" in err
    err = _refused(capsys, tmp_path, detect, two, "--min-size", "320")
    assert "fixed input of [160, 160]" in err
    err = _refused(capsys, tmp_path, detect, two, "--arch-option", "iou=0.5")
    assert "no option 'iou'" in err and "nms_thresh" in err
    assert "--labels is for torchvision" in _refused(capsys, tmp_path, detect, two, "--labels",
                                                      "category-id")
    (tmp_path / "junk.onnx").write_bytes(b"not a model")
    assert "onnxruntime cannot load" in _refused(capsys, tmp_path, tmp_path / "junk.onnx", two)
    bad = tmp_path / "bad.yaml"
    bad.write_text("names: [person]\nkpt_shape: [3, 3]\nflip_idx: [1, 2, 0]\n")
    assert "does not pair keypoints" in _refused(capsys, tmp_path, pose, bad)


def test_a_model_cannot_read_files_of_the_machine(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """An ONNX file may point a weight at an external data file, which onnxruntime would
    read relative to the working directory; distill's sessions find no such file."""
    import numpy as np
    import onnxruntime
    from onnx import TensorProto, helper

    from distill.teachers.onnx_session import open_session

    (tmp_path / "secret.txt").write_bytes(b"abc")
    weight = TensorProto(name="w", data_type=TensorProto.UINT8, dims=[3],
                         data_location=TensorProto.EXTERNAL)
    for key, value in (("location", "secret.txt"), ("offset", "0"), ("length", "3")):
        entry = weight.external_data.add()
        entry.key, entry.value = key, value
    io = [helper.make_tensor_value_info(n, TensorProto.UINT8, [3]) for n in ("x", "y")]
    graph = helper.make_graph([helper.make_node("Add", ["x", "w"], ["y"])], "g", io[:1],
                              io[1:], [weight])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    data = model.SerializeToString()
    monkeypatch.chdir(tmp_path)
    # What onnxruntime alone does: the weight is the file's bytes.
    plain = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    assert plain.run(None, {"x": np.zeros(3, np.uint8)})[0].tobytes() == b"abc"
    with pytest.raises(CardError, match="external data"):
        open_session(data)


def test_the_checkpoint_holds_the_model_and_reads_safely(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    onnx = export(TinyYolo(1, k=3), tmp_path / "p.onnx", (160, 160),
                  metadata={"names": {0: "person"}, "kpt_shape": [3, 3], "task": "pose"})
    code, out = _import(tmp_path, onnx, _yaml(tmp_path / "p.yaml", ["person"], pose=True))
    assert code == 0, capsys.readouterr().err
    payload = torch.load(out, weights_only=True)  # nothing but tensors and plain values
    assert payload["state_dict"]["onnx"].dtype == torch.uint8
    assert payload["state_dict"]["onnx"].numpy().tobytes() == onnx.read_bytes()
    card = read_card(out)  # the API's torch-free reader
    assert (card.arch, card.task, card.keypoint_names) == ("yolo-onnx", "keypoints", KEYPOINTS)
    assert card.flip_map == [[1, 2]] and card.min_size == card.max_size == 160
    assert card.arch_options["layout"] == "yolo-pose"
    assert card.arch_options["kpt_shape"] == [3, 3]
    assert card.arch_options["input_size"] == [160, 160]

    # A checkpoint whose model bytes were swapped after import is refused.
    card_, tensors, _ = load_checkpoint(out)
    tensors["onnx"] = torch.frombuffer(bytearray(export(TinyYolo(1, k=3, seed=5),
                                                        tmp_path / "o.onnx", (160, 160))
                                                 .read_bytes()), dtype=torch.uint8)
    save_checkpoint(tmp_path / "swapped.pt", card_, tensors)
    with pytest.raises(CardError, match="does not match the checksum"):
        Teacher.load(tmp_path / "swapped.pt", InferenceOptions())


def test_an_onnx_pose_teacher_annotates_with_the_standard_preset(tmp_path: Path) -> None:
    onnx = export(RedBlob(pose=True), tmp_path / "blob.onnx", (128, 160))
    code, out = _import(tmp_path, onnx, _yaml(tmp_path / "p.yaml", ["person"], pose=True))
    assert code == 0
    images = tmp_path / "images"
    images.mkdir()
    from PIL import Image

    for i in range(3):
        pixels = torch.zeros(150, 200, 3, dtype=torch.uint8)
        pixels[40 + 10 * i:100, 30:90 + 20 * i, 0] = 255
        Image.fromarray(pixels.numpy()).save(images / f"{i}.png")
    result = tmp_path / "pseudo.json"
    annotate_folder(out, images, result, options=InferenceOptions(tta="standard"),
                    selection=SelectionConfig(score_threshold=0.5, keypoint_threshold=0.5),
                    progress=False)
    coco = json.loads(result.read_text())
    info = coco["info"]
    # A fixed 128 x 160 input: x1.25 does not fit; the rest ran, and say so.
    assert sorted(info["transforms"]) == ["120", "120+flip", "160", "160+flip"]
    assert info["keypoint_fusion"].startswith("confidence-weighted")
    assert info["fusion"]["method"] == "vote" and "heatmap_combine" not in info
    assert len(coco["annotations"]) == 3
    for ann in coco["annotations"]:
        assert ann["distill"]["votes"] == 4 and len(ann["distill"]["keypoint_spread"]) == 3
        assert ann["num_keypoints"] == 3
        x, _, w, _ = ann["bbox"]
        left_x, right_x = ann["keypoints"][3], ann["keypoints"][6]
        assert abs(left_x - (x + w)) < 2 and abs(right_x - x) < 2
