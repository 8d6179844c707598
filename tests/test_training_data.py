"""COCO -> detector targets, and the flip augmentation's left/right swap."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from distill.card import flip_map_from_names
from distill.coco import oks_sigmas_for, training_categories
from distill.errors import DataError
from training.augment import hflip, jitter_sizes
from training.data import (
    DetectionDataset,
    check_compatible,
    prepare_records,
)

NAMES = ["nose", "left_wrist", "right_wrist"]
PERSON = {"id": 7, "name": "person", "keypoints": NAMES, "skeleton": [[1, 2], [1, 3]]}


def _coco(tmp_path: Path) -> dict:
    """Three 40x30 images: crowd, degenerate, out-of-frame and keypoint-less annotations."""
    for name in ("a.png", "b.png", "c.png"):
        arr = np.zeros((30, 40, 3), dtype=np.uint8)
        arr[:, :20] = 255  # left half white: mirroring is visible
        Image.fromarray(arr).save(tmp_path / name)
    kp = [20, 5, 2, 10, 15, 2, 30, 15, 1]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 7, "bbox": [5, 2, 30, 25], "keypoints": kp},
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [0, 0, 40, 30], "iscrowd": 1,
         "keypoints": kp},
        {"id": 3, "image_id": 1, "category_id": 7, "bbox": [38, 2, 10, 10],  # clipped to 2 px
         "keypoints": [0, 0, 0, 39, 5, 2, 0, 0, 0]},
        {"id": 4, "image_id": 2, "category_id": 7, "bbox": [45, 2, 10, 10],  # outside: empty
         "keypoints": kp},
        {"id": 5, "image_id": 2, "category_id": 7, "bbox": [1, 1, 10, 10],
         "keypoints": [0, 0, 0] * 3},  # no visible keypoint
        {"id": 6, "image_id": 2, "category_id": 3, "bbox": [1, 1, 10, 10]},  # a ball
    ]
    images = [{"id": i, "file_name": n, "width": 40, "height": 30}
              for i, n in enumerate(("a.png", "b.png", "c.png"), start=1)]
    return {"images": images, "annotations": anns,
            "categories": [PERSON, {"id": 3, "name": "ball"}]}


def test_filters_are_applied_and_counted(tmp_path: Path) -> None:
    coco = _coco(tmp_path)
    cats = training_categories(coco, "keypoints")
    assert [c["id"] for c in cats] == [7]
    records, counts = prepare_records(coco, tmp_path, "keypoints", cats, crowd="drop")
    assert (counts.crowd, counts.degenerate, counts.no_visible_keypoints,
            counts.other_category) == (1, 1, 1, 1)
    assert counts.instances == 2 and counts.negatives == 2  # b.png and c.png
    a = records[0]
    np.testing.assert_allclose(a.boxes, [[5, 2, 35, 27], [38, 2, 40, 12]])
    assert a.labels.tolist() == [1, 1]
    assert a.keypoints is not None and a.keypoints.shape == (2, 3, 3)
    assert a.keypoints[1, 0].tolist() == [0, 0, 0]  # unlabeled keypoint stays zero
    assert "3 images (2 without annotations" in counts.describe("x")


def test_box_task_maps_category_ids_to_contiguous_labels(tmp_path: Path) -> None:
    coco = _coco(tmp_path)
    cats = training_categories(coco, "boxes")
    assert [c["id"] for c in cats] == [7, 3]
    records, counts = prepare_records(coco, tmp_path, "boxes", cats)
    assert records[1].labels.tolist() == [1, 2]  # person (id 7) -> 1, ball (id 3) -> 2
    assert records[1].keypoints is None
    assert counts.no_visible_keypoints == 0  # box task: persons need no keypoints


def test_negatives_load_as_empty_targets(tmp_path: Path) -> None:
    coco = _coco(tmp_path)
    records, _ = prepare_records(coco, tmp_path, "keypoints", training_categories(
        coco, "keypoints"))
    image, target = DetectionDataset(records, "keypoints").load(2, flip=False)
    assert image.shape == (3, 30, 40)
    assert target["boxes"].shape == (0, 4) and target["keypoints"].shape == (0, 3, 3)


def test_missing_images_and_foreign_categories_are_named(tmp_path: Path) -> None:
    coco = _coco(tmp_path)
    cats = training_categories(coco, "boxes")
    (tmp_path / "c.png").unlink()
    with pytest.raises(DataError, match=r"c\.png"):
        prepare_records(coco, tmp_path, "boxes", cats)
    pseudo = {**coco, "categories": [{"id": 7, "name": "person"}, {"id": 9, "name": "kite"}],
              "annotations": [{"id": 1, "image_id": 1, "category_id": 9, "bbox": [1, 1, 5, 5]}]}
    with pytest.raises(DataError, match=r"\[9\]"):
        check_compatible(cats, pseudo, "boxes", "pseudo.json")


def test_flip_swaps_left_and_right_and_mirrors(tmp_path: Path) -> None:
    coco = _coco(tmp_path)
    cats = training_categories(coco, "keypoints")
    perm = [0, 2, 1]
    assert flip_map_from_names(NAMES) == [[1, 2]]
    records, _ = prepare_records(coco, tmp_path, "keypoints", cats)
    ds = DetectionDataset(records, "keypoints", perm)
    image, target = ds.load(0, flip=False)
    fimage, ftarget = ds.load(0, flip=True)
    width = 40
    assert torch.equal(fimage, image.flip(-1))
    assert fimage[:, 0, -1].tolist() == [1.0, 1.0, 1.0]  # the white half moved right
    kp, fkp = target["keypoints"][0], ftarget["keypoints"][0]
    # The keypoint labeled left_wrist (index 1) is now where a right wrist would be.
    assert fkp[2].tolist() == [width - kp[1, 0].item(), kp[1, 1].item(), kp[1, 2].item()]
    assert fkp[1].tolist() == [width - kp[2, 0].item(), kp[2, 1].item(), kp[2, 2].item()]
    assert fkp[0, 0].item() == width - kp[0, 0].item()
    assert ftarget["keypoints"][1, 0].tolist() == [0, 0, 0]  # unlabeled stays unlabeled
    box, fbox = target["boxes"][0], ftarget["boxes"][0]
    assert fbox.tolist() == [width - box[2].item(), box[1].item(), width - box[0].item(),
                             box[3].item()]
    # Flipping twice is the identity.
    _, back = hflip(fimage, ftarget, perm)
    assert torch.equal(back["keypoints"], target["keypoints"])
    assert torch.equal(back["boxes"], target["boxes"])


def test_jitter_keeps_the_test_size_last() -> None:
    sizes = jitter_sizes(256, 0.75, 1.25)
    assert sizes[-1] == 256 and min(sizes) == 192 and max(sizes) == 320
    assert len(set(sizes)) == len(sizes)
    assert jitter_sizes(800, 1.0, 1.0) == (800,)
    with pytest.raises(ValueError, match="scale jitter"):
        jitter_sizes(256, 1.2, 1.5)


def test_oks_sigmas_from_field_names_or_uniform() -> None:
    assert oks_sigmas_for({"keypoints": ["a", "b"], "sigmas": [0.1, 0.2]}) == [0.1, 0.2]
    assert oks_sigmas_for({"keypoints": NAMES}) == [0.026, 0.062, 0.062]
    assert oks_sigmas_for({"keypoints": ["p", "q", "r"]}) == [0.07] * 3
    assert len(oks_sigmas_for({"keypoints": [f"k{i}" for i in range(17)]})) == 17
