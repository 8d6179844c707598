"""The COCO exports: ``coco``, the pseudo-label file as it is (the training file), and
``cvat``, the same file as CVAT's importers take it.

CVAT imports COCO through datumaro (``coco_instances`` for "COCO 1.0",
``coco_person_keypoints`` for "COCO Keypoints 1.0"; CVAT
``dataset_manager/formats/coco.py``). What that reader needs and does, read from its code
(datumaro ``plugins/data_formats/coco/base.py`` and ``rust/src/coco_page_mapper.rs``; CVAT
``dataset_manager/bindings.py``):

- CVAT reads the file in streaming mode, whose page mapper stops at a missing
  ``licenses`` or ``info`` section ("Cannot find the licenses section", CVAT issue 9406)
  and at any top-level key other than ``licenses``, ``info``, ``categories``, ``images``
  and ``annotations``;
- every annotation needs ``segmentation`` (CVAT's datumaro raises without it; upstream
  warns once per annotation); an empty list makes the annotation a plain box;
- a keypoint category needs ``keypoints`` and ``skeleton``;
- ``iscrowd: 1`` survives only as an ``is_crowd`` attribute of an ordinary box, which
  CVAT keeps only where the task's label declares such an attribute: an ignore region
  would arrive as one more object (for keypoints, as a skeleton with every point absent).

So ``cvat`` leaves ignore regions out and adds the required keys where a file lacks
them; ``coco`` keeps them as ``iscrowd: 1``, which trainers need.
"""

from __future__ import annotations

from typing import Any

from distill.coco import objects
from distill.exports._common import check_coco


def to_cvat(coco: dict[str, Any]) -> dict[str, Any]:
    """The COCO file as CVAT imports it (see the module docstring): ignore regions left out,
    ``licenses`` / ``segmentation`` / ``skeleton`` added where missing, no other top-level
    key. Annotations keep their ids, scores and ``distill`` extras."""
    check_coco(coco)
    categories = [{**c, "skeleton": c.get("skeleton") or []} if c.get("keypoints") else c
                  for c in coco["categories"]]
    return {"licenses": coco.get("licenses") or [], "info": coco.get("info") or {},
            "categories": categories, "images": coco["images"],
            "annotations": [{**a, "segmentation": a.get("segmentation", [])}
                            for a in objects(coco)]}
