"""Ensembling of multi-transform box detections into one set per image.

Two fusions, chosen by name: ``"vote"`` (per-class NMS then box voting,
Detectron's test-time augmentation, the default) and ``"wbf"`` (weighted boxes
fusion from the ``ensemble-boxes`` library).
"""

from distill.fusion.voting import box_voting, vote_merge
from distill.fusion.wbf import CONF_TYPES, wbf_merge
from distill.options import FUSIONS, SCORINGS, Fusion, Scoring

__all__ = [
    "CONF_TYPES",
    "FUSIONS",
    "SCORINGS",
    "Fusion",
    "Scoring",
    "box_voting",
    "vote_merge",
    "wbf_merge",
]
