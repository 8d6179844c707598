"""Real pseudo-label files, built by the project's own selection and COCO writer
(``distill.pseudolabels.finalize``) from hand-made ensembled predictions; no torch.

Three images and a failed one; per image three candidates of which calibration keeps the
best (the labeled set has one instance per image), ignore regions (``ignore_factor`` 2)
take the second and the third is dropped. Keypoint files carry the synthetic person
category (13 keypoints, a skeleton) and per-keypoint scores; box files the synthetic box
categories.
"""

from __future__ import annotations

from typing import Any

from distill.card import LabeledStats, ModelCard
from distill.data.synth import BOX_CATEGORIES, PERSON_CATEGORY
from distill.predictions import ImageRecord
from distill.pseudolabels import SelectionConfig, finalize

FILE_NAMES = ("cam1/0001.png", "cam1/0002.png", "cam2/0001.jpg")
SIZE = (320, 240)
SCORES = (0.9, 0.5, 0.2)  # kept, ignore region, dropped (per image)
K = len(PERSON_CATEGORY["keypoints"])


def _box(i: int, n: int) -> tuple[float, float, float, float]:
    x, y = 20.0 + 90.0 * n + i, 30.0 + 10.0 * i
    return (x, y, x + 60.0, y + 150.0)


def _records(keypoints: bool) -> list[ImageRecord]:
    records = [ImageRecord.failed("broken.png", "cannot identify image file")]
    for i, name in enumerate(FILE_NAMES):
        boxes = tuple(_box(i, n) for n in range(len(SCORES)))
        cats = (tuple(int(PERSON_CATEGORY["id"]) for _ in SCORES) if keypoints else
                tuple(int(BOX_CATEGORIES[(i + n) % 2]["id"]) for n in range(len(SCORES))))
        kps = kp_scores = None
        if keypoints:
            kps = tuple(tuple((b[0] + 4.0 * j, b[1] + 10.0 * j) for j in range(K))
                        for b in boxes)
            # Each keypoint its own score: 0.95 down to 0.35, every fourth one low.
            kp_scores = tuple(tuple(round(0.95 - 0.05 * j - (0.3 if j % 4 == 3 else 0.0), 2)
                                    for j in range(K)) for _ in boxes)
        records.append(ImageRecord(file_name=name, width=SIZE[0], height=SIZE[1],
                                   boxes=boxes, scores=SCORES, category_ids=cats,
                                   keypoints=kps, keypoint_scores=kp_scores))
    return records


def pseudo_labels(task: str) -> dict[str, Any]:
    """The pseudo-label COCO dict of ``task`` (``keypoints`` or ``boxes``), ignore regions on."""
    keypoints = task == "keypoints"
    cats = [PERSON_CATEGORY] if keypoints else BOX_CATEGORIES[:2]
    stats = LabeledStats(images=10, instances_per_image={
        str(c["id"]): 1.0 / len(cats) for c in cats},
        visible_keypoints_per_instance=9.0 if keypoints else None)
    card = ModelCard(arch="tiny", task="keypoints" if keypoints else "boxes",
                     categories=cats, min_size=240, max_size=320, labeled_stats=stats,
                     provenance={"name": f"{task}-teacher"})
    return finalize(_records(keypoints), card, SelectionConfig(ignore_factor=2.0))
