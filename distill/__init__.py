"""Data distillation for omni-supervised learning: the pure method.

Multi-transform inference, ensembling, calibrated selection and COCO I/O for
Keypoint R-CNN and Faster R-CNN teachers (Radosavovic et al., CVPR 2018).
Nothing in this package speaks HTTP or Redis; ``service``, ``worker`` and
``training`` build on it.
"""

__version__ = "0.1.0"
