"""The checkpoint contract: one weights_only file with a validated card."""

from __future__ import annotations

import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch

from distill.card import ModelCard, flip_map_from_names
from distill.cardfile import read_card
from distill.checkpoint import load_checkpoint, save_checkpoint
from distill.errors import CardError
from distill.models.zoo import build_from_card
from tests.helpers import make_synth, make_teacher


def test_checkpoint_round_trip_rebuilds_the_model(tmp_path: Path) -> None:
    splits = make_synth(tmp_path / "data", labeled=4, unlabeled=0)
    card = make_teacher(tmp_path / "t.pt", splits["labeled"].keypoints_json)
    loaded, state, extra = load_checkpoint(tmp_path / "t.pt")
    assert loaded == card and extra == {}
    model = build_from_card(loaded, state)
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k])
    # Labeled statistics travel inside the card, with JSON-style keys.
    assert set(loaded.labeled_stats.instances_per_image) == {"1"}
    assert loaded.labeled_stats.visible_keypoints_per_instance > 0
    # The file is loadable with weights_only=True by anyone.
    raw = torch.load(tmp_path / "t.pt", weights_only=True)
    assert raw["card"]["task"] == "keypoints"


class _Evil:
    def __reduce__(self) -> tuple:
        return (print, ("arbitrary code ran",))


def test_arbitrary_pickles_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"format": "distill-checkpoint", "payload": _Evil()}, fh)
    with pytest.raises(CardError, match="not a readable checkpoint"):
        load_checkpoint(path)


def test_plain_state_dicts_and_missing_files_are_clear_errors(tmp_path: Path) -> None:
    torch.save({"weight": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(CardError, match="not a distill checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(CardError, match="does not exist"):
        load_checkpoint(tmp_path / "missing.pt")


def _card_dict() -> dict:
    return {"arch": "tiny", "task": "keypoints", "min_size": 256, "max_size": 416,
            "categories": [{"id": 7, "name": "person", "keypoints": ["nose", "left_eye",
                                                                   "right_eye"]}],
            "labeled_stats": {"images": 3, "instances_per_image": {"7": 1.5},
                              "visible_keypoints_per_instance": 2.0},
            "flip_map": [[1, 2]]}


def test_card_validation_names_the_problem() -> None:
    card = ModelCard.from_dict(_card_dict())
    assert card.flip_permutation() == [0, 2, 1]
    assert card.category_id(1) == 7
    bad = _card_dict() | {"task": "masks"}
    with pytest.raises(CardError, match="task"):
        ModelCard.from_dict(bad)
    bad = _card_dict() | {"flip_map": [[1, 5]]}
    with pytest.raises(CardError, match="flip_map"):
        ModelCard.from_dict(bad)
    bad = _card_dict() | {"labeled_stats": {"images": 3}}
    with pytest.raises(CardError, match="labeled_stats"):
        ModelCard.from_dict(bad)
    # An imported teacher may come without statistics: only explicit thresholds work then.
    bare = {k: v for k, v in _card_dict().items() if k != "labeled_stats"}
    assert ModelCard.from_dict(bare).labeled_stats is None
    bad = _card_dict() | {"label_ids": [None, 7, 99]}
    with pytest.raises(CardError, match="label_ids"):
        ModelCard.from_dict(bad)


def test_label_ids_map_sparse_outputs_and_skip_unused_slots() -> None:
    card = ModelCard.from_dict(_card_dict() | {"label_ids": [None, None, 7]})
    assert card.num_classes == 3
    assert card.category_id(2) == 7 and card.category_id(1) is None
    assert card.category_id(3) is None  # beyond the model's outputs


def test_read_card_needs_no_torch_and_matches_load(tmp_path: Path) -> None:
    card = ModelCard.from_dict(_card_dict())
    save_checkpoint(tmp_path / "c.pt", card, {"w": torch.ones(2)}, extra={"iteration": 5})
    assert read_card(tmp_path / "c.pt") == load_checkpoint(tmp_path / "c.pt")[0]
    # In a process that cannot import torch at all, the card still reads.
    code = ("import sys; sys.modules['torch'] = None; "
            "from distill.cardfile import read_card; "
            f"print(read_card({str(tmp_path / 'c.pt')!r}).categories[0]['id'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "7"


def test_read_card_refuses_foreign_globals_and_non_checkpoints(tmp_path: Path) -> None:
    # A torch-style zip whose pickle names a global outside the allow-list.
    with zipfile.ZipFile(tmp_path / "evil.pt", "w") as archive:
        archive.writestr("evil/data.pkl", pickle.dumps({"card": _Evil()}))
    with pytest.raises(CardError, match="not allowed"):
        read_card(tmp_path / "evil.pt")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    with pytest.raises(CardError, match="not a readable checkpoint"):
        read_card(tmp_path / "text.pt")
    torch.save({"weight": torch.zeros(1)}, tmp_path / "plain.pt")
    with pytest.raises(CardError, match="teacher import"):
        read_card(tmp_path / "plain.pt")
    with pytest.raises(CardError, match="does not exist"):
        read_card(tmp_path / "missing.pt")


def test_save_is_atomic_and_keeps_extra_entries(tmp_path: Path) -> None:
    card = ModelCard.from_dict(_card_dict())
    save_checkpoint(tmp_path / "c.pt", card, {"w": torch.ones(2)}, extra={"iteration": 5})
    _, state, extra = load_checkpoint(tmp_path / "c.pt")
    assert extra == {"iteration": 5} and torch.equal(state["w"], torch.ones(2))
    assert [p.name for p in tmp_path.iterdir()] == ["c.pt"]  # no temp file left behind


def test_flip_map_from_names() -> None:
    coco17 = ["nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder",
              "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
              "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle"]
    assert flip_map_from_names(coco17) == [[i, i + 1] for i in range(1, 17, 2)]
    assert flip_map_from_names(["head", "hand_left", "hand_right"]) == [[1, 2]]
    assert flip_map_from_names(["a", "b"], explicit=[["a", "b"]]) == [[0, 1]]
    with pytest.raises(CardError, match="'c'"):
        flip_map_from_names(["a", "b"], explicit=[["a", "c"]])
