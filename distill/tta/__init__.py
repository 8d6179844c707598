"""Multi-transform inference (test-time augmentation) for keypoint and box detectors.

- :mod:`distill.tta.transforms`: one transform (scale, flip) with its inverse, and the
  presets; importable without torch, so the API can check a preset.
- :mod:`distill.tta.keypoints`: shared boxes, keypoint heatmaps ensembled over transforms.
- :mod:`distill.tta.boxes`: the whole detector per transform, then fusion.
- :mod:`distill.tta.predictor`: ``build_predictor(model, card, options)``, the entry point
  of multi-transform inference, which picks the path from the card's task and handles the
  device; ``plain_predictor`` beside it, the model alone behind the same interface
  (evaluation's single-pass baseline).

This file imports nothing, so that ``distill.tta.transforms`` stays torch-free.
"""
