"""Data for tests, the demo and the benchmarks: a synthetic COCO data set generator."""

from distill.data.coco_files import SplitFiles, generate
from distill.data.synth import (
    BOX_CATEGORIES,
    KEYPOINT_NAMES,
    OKS_SIGMAS,
    PERSON_CATEGORY,
    SKELETON,
)

__all__ = [
    "BOX_CATEGORIES",
    "KEYPOINT_NAMES",
    "OKS_SIGMAS",
    "PERSON_CATEGORY",
    "SKELETON",
    "SplitFiles",
    "generate",
]
