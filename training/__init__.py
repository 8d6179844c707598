"""Training, evaluation and the end-to-end distillation experiment.

Modules, one job each:

- :mod:`training.data`: COCO data sets as detector targets (contiguous labels,
  crowd and degenerate annotations filtered, negatives kept) and the collate function;
- :mod:`training.augment`: horizontal flip with the card's left/right keypoint swap,
  and the scale-jitter sizes handed to torchvision's resize;
- :mod:`training.sampler`: the seeded, resumable mixed sampler (labeled vs
  pseudo-labeled images at an expected 6:4 ratio), one independent stream per rank;
- :mod:`training.schedule`: linear warm-up, then learning rate /10 at ~70% and ~90%;
- :mod:`training.trainer`: the loop: SGD, checkpoints and ``--resume``, JSON-lines
  metrics, progress bar, optional TensorBoard, DistributedDataParallel under torchrun;
- :mod:`training.evaluate`: COCOeval (bbox, and keypoints with the card's OKS sigmas),
  with or without multi-transform inference;
- :mod:`training.pseudo_quality`: precision / recall / AP of pseudo-labels against
  annotations the teacher never saw (the synthetic unlabeled splits keep theirs);
- :mod:`training.pipeline`: one (task, seed) chain: teacher -> pseudo-labels -> students
  and the equal-budget baseline -> test scores, every step resumable;
- :mod:`training.experiment`: those pipelines over tasks and seeds, in parallel
  processes, with the report (:mod:`training.report`) written to ``docs/RESULTS.md``;
- :mod:`training.cli`: the ``distill train``, ``distill eval`` and ``distill experiment``
  subcommands.
"""
