"""Box voting, NMS + voting merge and the weighted-boxes-fusion adapter, on hand-computed cases."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest
import torch

from distill.fusion import FUSIONS, box_voting, vote_merge, wbf_merge


def t(rows: Sequence[Any], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.tensor(rows, dtype=dtype)


def labels_of(values: Sequence[int]) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.int64)


def test_fusions_names() -> None:
    assert FUSIONS == ("vote", "wbf")


# ---------------------------------------------------------------- box_voting


def test_voting_is_score_weighted_mean_of_overlapping_boxes() -> None:
    # IoU([0,0,10,10], [1,0,11,10]) = 90 / 110 > 0.8; weights 0.75, 0.25 are exact in binary.
    kept = t([[0, 0, 10, 10]])
    pool = t([[0, 0, 10, 10], [1, 0, 11, 10]])
    boxes, scores = box_voting(kept, t([0.75]), pool, t([0.75, 0.25]), iou_threshold=0.8)
    assert boxes.tolist() == [[0.25, 0.0, 10.25, 10.0]]
    assert scores.tolist() == [0.75]


def test_voter_at_exact_threshold_votes_and_just_below_does_not() -> None:
    kept = t([[0, 0, 4, 4]])
    # IoU([0,0,4,4], [0,0,4,2]) = 8 / 16 = 0.5 exactly in floating point.
    at = t([[0, 0, 4, 4], [0, 0, 4, 2]])
    boxes, _ = box_voting(kept, t([0.5]), at, t([0.5, 0.5]), iou_threshold=0.5)
    assert boxes.tolist() == [[0.0, 0.0, 4.0, 3.0]]
    # IoU = 7.96 / 16 < 0.5: only the kept box votes, so it is unchanged.
    below = t([[0, 0, 4, 4], [0, 0, 4, 1.99]])
    boxes, _ = box_voting(kept, t([0.5]), below, t([0.5, 0.5]), iou_threshold=0.5)
    assert boxes.tolist() == [[0.0, 0.0, 4.0, 4.0]]


def test_scoring_methods_hand_computed() -> None:
    kept = t([[0, 0, 10, 10]], torch.float64)
    pool = t([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], torch.float64)
    pool_scores = t([0.75, 0.25, 0.9], torch.float64)  # the far box never votes
    kept_score = t([0.75], torch.float64)
    iou = 90 / 110

    _, s_id = box_voting(kept, kept_score, pool, pool_scores, 0.8, "ID")
    _, s_avg = box_voting(kept, kept_score, pool, pool_scores, 0.8, "AVG")
    _, s_iou = box_voting(kept, kept_score, pool, pool_scores, 0.8, "IOU_AVG")
    assert s_id.item() == 0.75
    assert s_avg.item() == pytest.approx((0.75 + 0.25) / 2)
    assert s_iou.item() == pytest.approx((1.0 * 0.75 + iou * 0.25) / (1.0 + iou))


def test_box_voting_matches_detectron_reference_on_random_boxes() -> None:
    """Against a transcription of Detectron's box_utils.box_voting (continuous IoU)."""
    gen = torch.Generator().manual_seed(0)
    xy = torch.rand(60, 2, generator=gen, dtype=torch.float64) * 50
    wh = torch.rand(60, 2, generator=gen, dtype=torch.float64) * 30 + 20
    pool = torch.cat([xy, xy + wh], dim=1)
    pool_scores = torch.rand(60, generator=gen, dtype=torch.float64) * 0.9 + 0.05
    kept_idx = torch.tensor([0, 7, 13, 42])
    kept, kept_scores = pool[kept_idx], pool_scores[kept_idx]

    def reference(scoring: str) -> tuple[np.ndarray, np.ndarray]:
        p = pool.numpy()
        area = (p[:, 2] - p[:, 0]) * (p[:, 3] - p[:, 1])
        out_b, out_s = [], []
        for k in kept_idx.tolist():
            iw = np.clip(np.minimum(p[k, 2], p[:, 2]) - np.maximum(p[k, 0], p[:, 0]), 0, None)
            ih = np.clip(np.minimum(p[k, 3], p[:, 3]) - np.maximum(p[k, 1], p[:, 1]), 0, None)
            inter = iw * ih
            ov = inter / (area[k] + area - inter)
            inds = np.where(ov >= 0.6)[0]
            ws = pool_scores.numpy()[inds]
            out_b.append(np.average(p[inds], axis=0, weights=ws))
            if scoring == "ID":
                out_s.append(pool_scores.numpy()[k])
            elif scoring == "AVG":
                out_s.append(ws.mean())
            else:
                out_s.append(np.average(ws, weights=ov[inds]))
        return np.array(out_b), np.array(out_s)

    for scoring in ("ID", "AVG", "IOU_AVG"):
        boxes, scores = box_voting(kept, kept_scores, pool, pool_scores, 0.6, scoring)
        ref_b, ref_s = reference(scoring)
        np.testing.assert_allclose(boxes.numpy(), ref_b, rtol=1e-12)
        np.testing.assert_allclose(scores.numpy(), ref_s, rtol=1e-12)


def test_box_voting_keeps_box_without_weight_unchanged() -> None:
    # Voters that all score 0 have no weight: Detectron would divide by zero.
    boxes, scores = box_voting(t([[0, 0, 2, 2]]), t([0.0]), t([[0, 0, 2, 2], [0, 0, 2, 2.1]]),
                               t([0.0, 0.0]), 0.5, "IOU_AVG")
    assert boxes.tolist() == [[0.0, 0.0, 2.0, 2.0]]
    assert scores.tolist() == [0.0]


def test_box_voting_empty() -> None:
    boxes, scores = box_voting(torch.zeros(0, 4), torch.zeros(0), t([[0, 0, 1, 1]]), t([0.5]))
    assert boxes.shape == (0, 4) and scores.shape == (0,)
    boxes, scores = box_voting(t([[0, 0, 1, 1]]), t([0.5]), torch.zeros(0, 4), torch.zeros(0))
    assert boxes.tolist() == [[0.0, 0.0, 1.0, 1.0]] and scores.tolist() == [0.5]


@pytest.mark.parametrize("kwargs, match", [
    ({"scoring": "MAX"}, r"'MAX'.*ID, AVG, IOU_AVG"),
    ({"iou_threshold": 1.5}, r"iou_threshold.*1\.5"),
    ({"iou_threshold": -0.1}, r"iou_threshold"),
    ({"iou_threshold": math.nan}, r"iou_threshold"),
])
def test_box_voting_rejects_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        box_voting(t([[0, 0, 1, 1]]), t([0.5]), t([[0, 0, 1, 1]]), t([0.5]), **kwargs)


def test_box_voting_rejects_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="pool_scores"):
        box_voting(t([[0, 0, 1, 1]]), t([0.5]), t([[0, 0, 1, 1]]), t([0.5, 0.4]))
    with pytest.raises(ValueError, match=r"kept_boxes.*\(N, 4\)"):
        box_voting(t([[0, 0, 1]]), t([0.5]), t([[0, 0, 1, 1]]), t([0.5]))


# ---------------------------------------------------------------- vote_merge


def test_suppressed_box_still_votes_for_its_survivor() -> None:
    boxes = t([[0, 0, 10, 10], [1, 0, 11, 10]])  # IoU 0.818: NMS at 0.5 drops the second
    out_boxes, out_scores, out_labels = vote_merge(
        boxes, t([0.75, 0.25]), labels_of([1, 1]), nms_threshold=0.5, vote_threshold=0.8
    )
    assert out_boxes.tolist() == [[0.25, 0.0, 10.25, 10.0]]
    assert out_scores.tolist() == [0.75]
    assert out_labels.tolist() == [1]


def test_different_classes_never_vote_for_each_other() -> None:
    boxes = t([[0, 0, 10, 10], [1, 0, 11, 10]])
    out_boxes, out_scores, out_labels = vote_merge(
        boxes, t([0.75, 0.25]), labels_of([1, 2]), vote_threshold=0.5, scoring="AVG"
    )
    # Both survive NMS (per class) and keep their own coordinates and scores.
    assert out_boxes.tolist() == boxes.tolist()
    assert out_scores.tolist() == [0.75, 0.25]
    assert out_labels.tolist() == [1, 2]


def test_vote_merge_avg_scoring_and_sorted_output() -> None:
    # Class 1: a 0.9 box with a 0.1 voter (AVG -> 0.5); class 2: a lone 0.7 box.
    boxes = t([[0, 0, 10, 10], [0, 0, 10, 10.5], [20, 20, 30, 30]])
    out_boxes, out_scores, out_labels = vote_merge(
        boxes, t([0.9, 0.1, 0.7]), labels_of([1, 1, 2]), scoring="AVG"
    )
    assert out_labels.tolist() == [2, 1]
    assert out_scores.tolist() == pytest.approx([0.7, 0.5])
    assert out_boxes[1].tolist() == pytest.approx([0.0, 0.0, 10.0, 10.05])


def test_vote_merge_max_detections() -> None:
    n = 10
    boxes = torch.stack([t([20 * i, 0, 20 * i + 10, 10]) for i in range(n)])  # disjoint
    scores = torch.linspace(0.1, 0.9, n)
    out_boxes, out_scores, out_labels = vote_merge(
        boxes, scores, labels_of([i % 3 for i in range(n)]), max_detections=3
    )
    assert out_boxes.shape == (3, 4)
    assert out_scores.tolist() == scores.flip(0)[:3].tolist()
    assert out_labels.tolist() == [9 % 3, 8 % 3, 7 % 3]


def test_vote_merge_empty_input() -> None:
    out_boxes, out_scores, out_labels = vote_merge(
        torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64)
    )
    assert out_boxes.shape == (0, 4) and out_boxes.dtype == torch.float32
    assert out_scores.shape == (0,) and out_scores.dtype == torch.float32
    assert out_labels.shape == (0,) and out_labels.dtype == torch.int64


def test_vote_merge_keeps_dtypes() -> None:
    boxes = t([[0, 0, 10, 10]], torch.float64)
    out_boxes, out_scores, out_labels = vote_merge(
        boxes, t([0.5], torch.float64), labels_of([3])
    )
    assert out_boxes.dtype == torch.float64 and out_scores.dtype == torch.float64
    assert out_labels.dtype == torch.int64


@pytest.mark.parametrize("kwargs, match", [
    ({"scoring": "TEMP_AVG"}, r"'TEMP_AVG'.*ID, AVG, IOU_AVG"),
    ({"nms_threshold": 2.0}, r"nms_threshold.*2\.0"),
    ({"vote_threshold": -1.0}, r"vote_threshold"),
    ({"max_detections": 0}, r"max_detections.*0"),
])
def test_vote_merge_rejects_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        vote_merge(t([[0, 0, 1, 1]]), t([0.5]), labels_of([1]), **kwargs)


def test_vote_merge_rejects_float_labels() -> None:
    with pytest.raises(ValueError, match="labels"):
        vote_merge(t([[0, 0, 1, 1]]), t([0.5]), t([1.0]))


# ---------------------------------------------------------------- wbf_merge


def test_wbf_fuses_identical_boxes_and_returns_pixels() -> None:
    box = [[20.0, 10.0, 100.0, 50.0]]
    boxes, scores, labels = wbf_merge(
        [(t(box), t([0.8]), labels_of([3])), (t(box), t([0.6]), labels_of([3]))],
        image_size=(200, 100),
    )
    assert boxes.shape == (1, 4)
    assert boxes.tolist()[0] == pytest.approx(box[0], abs=1e-4)
    assert scores.tolist() == pytest.approx([0.7])  # mean of the two
    assert labels.tolist() == [3] and labels.dtype == torch.int64


def test_wbf_empty_transforms_count_and_all_empty_is_fine() -> None:
    box = [[20.0, 10.0, 100.0, 50.0]]
    empty = (torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.int64))
    boxes, scores, labels = wbf_merge([(t(box), t([0.8]), labels_of([1])), empty], (200, 100))
    assert boxes.tolist()[0] == pytest.approx(box[0], abs=1e-4)
    # ensemble-boxes scales a cluster seen by 1 of 2 transforms by 1/2.
    assert scores.tolist() == pytest.approx([0.4])

    for per_transform in ([empty, empty], []):
        boxes, scores, labels = wbf_merge(per_transform, (200, 100))
        assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.shape == (0,)
        assert labels.dtype == torch.int64 and boxes.dtype == torch.float32


def test_wbf_keeps_labels_apart_clips_and_limits() -> None:
    entry = (
        t([[0, 0, 50, 50], [0, 0, 50, 50], [-10, 60, 250, 90], [150, 0, 190, 40]]),
        t([0.9, 0.8, 0.7, 0.2]),
        labels_of([1, 2, 1, 1]),
    )
    boxes, scores, labels = wbf_merge([entry], (200, 100), max_detections=3)
    assert labels.tolist() == [1, 2, 1]
    assert scores.tolist() == pytest.approx([0.9, 0.8, 0.7])
    assert boxes[2].tolist() == pytest.approx([0.0, 60.0, 200.0, 90.0])


@pytest.mark.parametrize("kwargs, match", [
    ({"conf_type": "median"}, r"'median'.*avg"),  # the library itself would exit()
    ({"iou_threshold": 1.1}, r"iou_threshold"),
    ({"skip_box_threshold": -0.5}, r"skip_box_threshold"),
    ({"max_detections": -1}, r"max_detections"),
    ({"image_size": (0, 100)}, r"image_size"),
])
def test_wbf_rejects_bad_arguments(kwargs: dict[str, Any], match: str) -> None:
    args = {"image_size": (200, 100), **kwargs}
    with pytest.raises(ValueError, match=match):
        wbf_merge([(t([[0, 0, 1, 1]]), t([0.5]), labels_of([1]))], **args)


def test_wbf_rejects_mismatched_lengths() -> None:
    with pytest.raises(ValueError, match=r"per_transform\[0\].*scores"):
        wbf_merge([(t([[0, 0, 1, 1]]), t([0.5, 0.4]), labels_of([1]))], (10, 10))


def test_transform_agreement_counts_transforms_and_measures_spread() -> None:
    from distill.fusion.agreement import transform_agreement

    fused = torch.tensor([[0.0, 0.0, 100.0, 100.0], [200.0, 200.0, 220.0, 220.0]])
    labels = torch.tensor([1, 2])
    per_transform = [
        (torch.tensor([[0.0, 0.0, 100.0, 100.0]]), torch.tensor([1])),       # agrees exactly
        (torch.tensor([[10.0, 10.0, 110.0, 110.0]]), torch.tensor([1])),     # IoU 0.68: agrees
        (torch.tensor([[0.0, 0.0, 100.0, 100.0]]), torch.tensor([2])),       # other class
        (torch.tensor([[60.0, 60.0, 160.0, 160.0]]), torch.tensor([1])),     # IoU 0.09: no
        (torch.zeros((0, 4)), torch.zeros((0,), dtype=torch.int64)),         # found nothing
    ]
    votes, spread = transform_agreement(fused, labels, per_transform)
    assert votes.tolist() == [2, 0]
    # Corners 0 and 10 around their mean 5: 5 px deviation in a 100 px box.
    assert spread.tolist() == pytest.approx([0.05, 0.0])


def test_agreement_travels_to_the_coco_file() -> None:
    from distill.calibrate import Selection
    from distill.card import LabeledStats, ModelCard
    from distill.predictions import ImageRecord
    from distill.pseudolabel_file import to_coco

    card = ModelCard(arch="tiny", task="boxes", min_size=256, max_size=416,
                     categories=[{"id": 1, "name": "cone"}],
                     labeled_stats=LabeledStats(images=1, instances_per_image={"1": 1.0}))
    rec = ImageRecord("a.png", 100, 100, boxes=((0.0, 0.0, 10.0, 10.0),), scores=(0.9,),
                      category_ids=(1,), votes=(5,), spread=(0.02,))
    assert ImageRecord.from_json(rec.to_json()) == rec
    coco = to_coco([rec], card, Selection({1: 0.5}, None))
    assert coco["annotations"][0]["distill"] == {"votes": 5, "spread": 0.02}


def test_min_votes_drops_instances_few_transforms_agree_on() -> None:
    from distill.card import LabeledStats, ModelCard
    from distill.predictions import ImageRecord
    from distill.pseudolabels import SelectionConfig, finalize

    card = ModelCard(arch="tiny", task="boxes", min_size=256, max_size=416,
                     categories=[{"id": 1, "name": "cone"}],
                     labeled_stats=LabeledStats(images=1, instances_per_image={"1": 2.0}))
    rec = ImageRecord("a.png", 100, 100,
                      boxes=((0.0, 0.0, 9.0, 9.0), (20.0, 0.0, 29.0, 9.0), (40.0, 0.0, 49.0, 9.0)),
                      scores=(0.9, 0.8, 0.7), category_ids=(1, 1, 1), votes=(6, 1, 5),
                      spread=(0.01, 0.3, 0.02))
    every = finalize([rec], card, SelectionConfig())
    assert [a["score"] for a in every["annotations"]] == [0.9, 0.8]  # target 2, best two
    agreed = finalize([rec], card, SelectionConfig(min_votes=3))
    # The 1-vote box is no candidate: calibration takes the best two of the others.
    assert [a["score"] for a in agreed["annotations"]] == [0.9, 0.7]
    assert agreed["info"]["selection"]["min_votes"] == 3
