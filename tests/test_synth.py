"""The synthetic data set: deterministic, valid COCO, annotated as documented."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools.coco import COCO

from distill.data import (
    BOX_CATEGORIES,
    KEYPOINT_NAMES,
    OKS_SIGMAS,
    PERSON_CATEGORY,
    SKELETON,
    SplitFiles,
    generate,
)
from distill.data.synth import FAMILIES
from distill.options import DEFAULT_SYNTH_FAMILY, SYNTH_FAMILIES

K = len(KEYPOINT_NAMES)


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _pixels(files: SplitFiles, file_name: str) -> np.ndarray:
    with Image.open(files.images_dir / file_name) as im:
        return np.asarray(im.convert("RGB"))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SplitFiles]:
    out = tmp_path_factory.mktemp("synth")
    return generate(out, labeled=100, unlabeled=24, test=8, shifted=24, seed=7)


def test_constants_are_consistent() -> None:
    assert 13 <= K <= 17
    assert len(OKS_SIGMAS) == K
    assert all(1 <= i <= K for pair in SKELETON for i in pair)
    assert PERSON_CATEGORY["keypoints"] == list(KEYPOINT_NAMES)
    assert PERSON_CATEGORY["id"] == 1 and BOX_CATEGORIES[0]["name"] == "person"
    assert len(BOX_CATEGORIES) >= 4
    assert [c["id"] for c in BOX_CATEGORIES] == list(range(1, len(BOX_CATEGORIES) + 1))


def test_every_family_name_has_a_look() -> None:
    """The command lines offer distill.options' names; synth draws each of them."""
    assert tuple(FAMILIES) == SYNTH_FAMILIES and DEFAULT_SYNTH_FAMILY in FAMILIES


def test_layout_and_counts(data: dict[str, SplitFiles]) -> None:
    assert set(data) == {"labeled", "unlabeled", "test", "shifted"}
    counts = {"labeled": 100, "unlabeled": 24, "test": 8, "shifted": 24}
    for split, files in data.items():
        assert files.images_dir == files.keypoints_json.parent.parent / "images" / split
        assert files.keypoints_json.name == f"{split}_keypoints.json"
        assert files == SplitFiles.under(files.images_dir.parent.parent, split)
        assert files.json_for("keypoints") == files.keypoints_json
        assert files.json_for("boxes") == files.boxes_json
        kp, box = _load(files.keypoints_json), _load(files.boxes_json)
        assert kp["images"] == box["images"]
        assert len(kp["images"]) == counts[split]
        assert sorted(p.name for p in files.images_dir.iterdir()) == sorted(
            im["file_name"] for im in kp["images"])
        # Temp files of the atomic writes are gone.
        assert not [p for p in files.keypoints_json.parent.iterdir() if p.suffix == ".tmp"]


def test_shifted_split_is_optional(tmp_path: Path) -> None:
    out = generate(tmp_path, labeled=1, unlabeled=0, test=0, seed=0)
    assert set(out) == {"labeled", "unlabeled", "test"}
    assert _load(out["unlabeled"].keypoints_json)["images"] == []


def test_deterministic(tmp_path: Path) -> None:
    a = generate(tmp_path / "a", labeled=4, unlabeled=3, test=2, shifted=3, seed=11)
    b = generate(tmp_path / "b", labeled=4, unlabeled=3, test=2, shifted=3, seed=11)
    for split in a:
        assert a[split].keypoints_json.read_bytes() == b[split].keypoints_json.read_bytes()
        assert a[split].boxes_json.read_bytes() == b[split].boxes_json.read_bytes()
        for im in _load(a[split].keypoints_json)["images"]:
            assert np.array_equal(_pixels(a[split], im["file_name"]),
                                  _pixels(b[split], im["file_name"]))
    c = generate(tmp_path / "c", labeled=4, unlabeled=0, test=0, seed=12)
    assert c["labeled"].boxes_json.read_bytes() != a["labeled"].boxes_json.read_bytes()


def test_prefix_stable_and_splits_independent(tmp_path: Path) -> None:
    small = generate(tmp_path / "s", labeled=3, unlabeled=2, test=1, seed=5)
    big = generate(tmp_path / "b", labeled=6, unlabeled=2, test=4, seed=5)
    for split, n in (("labeled", 3), ("unlabeled", 2), ("test", 1)):
        s, b = _load(small[split].keypoints_json), _load(big[split].keypoints_json)
        assert s["images"] == b["images"][:n]
        ids = {im["id"] for im in s["images"]}
        assert s["annotations"] == [a for a in b["annotations"] if a["image_id"] in ids]
        for im in s["images"]:
            assert np.array_equal(_pixels(small[split], im["file_name"]),
                                  _pixels(big[split], im["file_name"]))


def test_rerun_with_fewer_images_removes_stale_files(tmp_path: Path) -> None:
    generate(tmp_path, labeled=5, unlabeled=0, test=0, seed=1)
    out = generate(tmp_path, labeled=2, unlabeled=0, test=0, seed=1)
    assert len(list(out["labeled"].images_dir.iterdir())) == 2


def test_pycocotools_loads_every_file(data: dict[str, SplitFiles]) -> None:
    for files in data.values():
        kp = COCO(str(files.keypoints_json))
        assert kp.getCatIds() == [1]
        assert kp.loadCats(1)[0]["keypoints"] == list(KEYPOINT_NAMES)
        box = COCO(str(files.boxes_json))
        assert box.getCatIds() == [c["id"] for c in BOX_CATEGORIES]
        assert len(box.getImgIds()) == len(kp.getImgIds())


def test_keypoint_annotations(data: dict[str, SplitFiles]) -> None:
    for files in data.values():
        doc = _load(files.keypoints_json)
        sizes = {im["id"]: (im["width"], im["height"]) for im in doc["images"]}
        ids = [a["id"] for a in doc["annotations"]]
        assert len(ids) == len(set(ids))
        for ann in doc["annotations"]:
            w, h = sizes[ann["image_id"]]
            x, y, bw, bh = ann["bbox"]
            assert ann["category_id"] == 1 and ann["iscrowd"] == 0
            assert 0 <= x < x + bw <= w and 0 <= y < y + bh <= h
            assert ann["area"] == pytest.approx(bw * bh)
            kps = ann["keypoints"]
            assert len(kps) == 3 * K
            visible = 0
            for px, py, v in zip(kps[0::3], kps[1::3], kps[2::3], strict=True):
                assert v in (0, 2)
                if v == 0:
                    assert px == 0 and py == 0
                    continue
                visible += 1
                assert 0 <= px < w and 0 <= py < h
                assert x - 1 <= px <= x + bw + 1 and y - 1 <= py <= y + bh + 1
            assert ann["num_keypoints"] == visible >= 3


def test_boxes_file_matches_keypoints_file(data: dict[str, SplitFiles]) -> None:
    for files in data.values():
        kp, box = _load(files.keypoints_json), _load(files.boxes_json)
        assert box["categories"] == BOX_CATEGORIES
        assert kp["categories"] == [PERSON_CATEGORY]
        stripped = [{k: v for k, v in a.items() if k not in ("keypoints", "num_keypoints")}
                    for a in kp["annotations"]]
        assert [a for a in box["annotations"] if a["category_id"] == 1] == stripped
        for ann in box["annotations"]:
            assert "keypoints" not in ann


def test_figure_left_is_on_image_right(data: dict[str, SplitFiles]) -> None:
    ls, rs = KEYPOINT_NAMES.index("left_shoulder"), KEYPOINT_NAMES.index("right_shoulder")
    lh, rh = KEYPOINT_NAMES.index("left_hip"), KEYPOINT_NAMES.index("right_hip")
    votes = []
    for ann in _load(data["labeled"].keypoints_json)["annotations"]:
        kps = ann["keypoints"]
        for left, right in ((ls, rs), (lh, rh)):
            if kps[3 * left + 2] and kps[3 * right + 2]:
                votes.append(kps[3 * left] > kps[3 * right])
    assert len(votes) > 50
    assert np.mean(votes) > 0.9


def test_category_frequencies_are_skewed(data: dict[str, SplitFiles]) -> None:
    doc = _load(data["labeled"].boxes_json)
    counts = Counter(a["category_id"] for a in doc["annotations"])
    names = {c["name"]: c["id"] for c in BOX_CATEGORIES}
    assert counts[names["ball"]] > 3 * counts[names["kite"]] > 0
    assert counts[names["ball"]] > counts[names["cone"]] > counts[names["kite"]]
    assert counts[names["person"]] > 100
    # Some images have no annotation at all, and are still listed.
    assert len(doc["images"]) == 100


def test_shifted_split_looks_different(data: dict[str, SplitFiles]) -> None:
    def brightness(files: SplitFiles) -> float:
        return float(np.mean([_pixels(files, im["file_name"]).mean()
                              for im in _load(files.keypoints_json)["images"]]))

    # The shifted split is a dim street-like look: clearly darker on average (about 105
    # against 135-145), yet not dark enough to hide the figures from the teacher.
    assert brightness(data["unlabeled"]) - brightness(data["shifted"]) > 20
    assert brightness(data["shifted"]) > 80


def test_no_two_splits_share_a_file(data: dict[str, SplitFiles]) -> None:
    names: list[str] = []
    ids: list[int] = []
    digests: list[str] = []
    for files in data.values():
        for im in _load(files.keypoints_json)["images"]:
            names.append(im["file_name"])
            ids.append(im["id"])
            digests.append(hashlib.sha1(_pixels(files, im["file_name"]).tobytes()).hexdigest())
    assert len(set(names)) == len(names)
    assert len(set(ids)) == len(ids)
    assert len(set(digests)) == len(digests)


def test_image_sizes_vary_within_bounds(tmp_path: Path) -> None:
    out = generate(tmp_path, labeled=10, unlabeled=0, test=0, seed=2, min_side=64, max_side=96)
    sizes = [(im["width"], im["height"]) for im in _load(out["labeled"].boxes_json)["images"]]
    assert all(64 <= s <= 96 for wh in sizes for s in wh)
    assert len(set(sizes)) > 5


@pytest.mark.parametrize("kwargs", [{"labeled": -1}, {"seed": -1}, {"min_side": 400}])
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict) -> None:
    args = {"labeled": 1, "unlabeled": 0, "test": 0, "seed": 0, **kwargs}
    with pytest.raises(ValueError):
        generate(tmp_path, **args)


@pytest.fixture(scope="module")
def blocks(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SplitFiles]:
    out = tmp_path_factory.mktemp("blocks")
    return generate(out, labeled=60, unlabeled=0, test=0, shifted=6, seed=7, family="blocks")


def test_blocks_family_is_another_look_with_the_same_keypoints(
        blocks: dict[str, SplitFiles], data: dict[str, SplitFiles]) -> None:
    kp, box = _load(blocks["labeled"].keypoints_json), _load(blocks["labeled"].boxes_json)
    assert kp["categories"] == [PERSON_CATEGORY] and kp["info"]["family"] == "blocks"
    assert [c["name"] for c in box["categories"]] == ["person", "ring", "star", "crate"]
    assert COCO(str(blocks["labeled"].boxes_json)).getCatIds() == [1, 2, 3, 4]
    counts = Counter(a["category_id"] for a in box["annotations"])
    assert counts[2] > counts[3] > counts[4] > 0 and counts[1] > 60
    # Its own sizes (224-384), and other pixels than the figures with the same seed.
    assert all(224 <= s <= 384 for im in kp["images"] for s in (im["width"], im["height"]))
    first = kp["images"][0]["file_name"]
    assert _pixels(blocks["labeled"], first).shape != _pixels(data["labeled"], first).shape \
        or not np.array_equal(_pixels(blocks["labeled"], first), _pixels(data["labeled"], first))
    # Persons keep the figures' conventions: left on the image's right, keypoints inside.
    ls, rs = KEYPOINT_NAMES.index("left_shoulder"), KEYPOINT_NAMES.index("right_shoulder")
    votes = [a["keypoints"][3 * ls] > a["keypoints"][3 * rs] for a in kp["annotations"]
             if a["keypoints"][3 * ls + 2] and a["keypoints"][3 * rs + 2]]
    assert len(votes) > 20 and np.mean(votes) > 0.9
    for ann in kp["annotations"]:
        x, y, bw, bh = ann["bbox"]
        for px, py, v in zip(ann["keypoints"][0::3], ann["keypoints"][1::3],
                             ann["keypoints"][2::3], strict=True):
            assert v == 0 or (x - 1 <= px <= x + bw + 1 and y - 1 <= py <= y + bh + 1)


def test_unknown_family_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="family"):
        generate(tmp_path, labeled=1, unlabeled=0, test=0, seed=0, family="cats")
