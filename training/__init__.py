"""Training, evaluation and the end-to-end distillation experiment.

Modules, one job each:

- :mod:`training.data`: COCO data sets as detector targets (contiguous labels,
  crowd and degenerate annotations filtered, negatives kept) and the collate function;
- :mod:`training.ignore`: ignore regions (uncertain pseudo-labels, crowd boxes) as
  neither object nor background in the RPN's and the box head's matching;
- :mod:`training.augment`: horizontal flip with the card's left/right keypoint swap,
  and the scale-jitter sizes handed to torchvision's resize;
- :mod:`training.sampler`: the seeded, resumable mixed sampler (labeled vs
  pseudo-labeled images at an expected 6:4 ratio), one independent stream per rank;
- :mod:`training.schedule`: linear warm-up, then learning rate /10 at ~70% and ~90%;
- :mod:`training.train_config`: a run's settings (``TrainConfig``), each field its
  ``distill train`` flag; :mod:`training.config_flags` turns such fields into flags and
  back, and spells the recorded command line; :mod:`training.defaults` holds the
  defaults, torch-free so that the command line shows them without torch;
- :mod:`training.trainer`: a run's set-up (model, data, SGD, ``--resume``) and
  :mod:`training.train_loop` its iterations (checkpoints, JSON-lines metrics, progress
  bar, optional TensorBoard; :mod:`training.precision`: fp32 or bf16 autocast),
  DistributedDataParallel under torchrun
  (:mod:`training.distributed`: the process group); :mod:`training.run_files`: what a
  run writes beside its model, the card it carries, and the RNG state it resumes;
- :mod:`training.evaluate`: COCOeval (bbox, and keypoints with the card's OKS sigmas),
  with or without multi-transform inference;
- :mod:`training.pseudo_quality`: precision / recall / AP of pseudo-labels against
  annotations the teacher never saw (the synthetic unlabeled splits keep theirs);
- :mod:`training.pipeline`: one (task, seed) chain: teacher -> pseudo-labels -> students
  and the equal-budget baseline -> test scores, every step resumable; its models are the
  table :mod:`training.variants` (one entry per student variant and report row);
- :mod:`training.experiment`: those pipelines over tasks and seeds, in parallel
  processes, with the report (:mod:`training.report`) written to ``docs/RESULTS.md``;
  the settings and their flags are :mod:`training.experiment_config`'s fields;
- :mod:`training.loop`: ``distill loop``, the same steps (the pipeline's) on a user's COCO
  set and unlabeled folder: teacher or an imported one, pseudo-labels locally or through a
  service, students over rounds, the baseline, a held-out report
  (:mod:`training.loop_report`; settings and flags: :mod:`training.loop_config`);
  ``make demo`` (:mod:`training.demo`) runs it on generated data through the real stack;
- :mod:`training.sweep`: ``distill sweep`` (its flags: :mod:`training.sweep_cli`),
  baselines, students and oracles over labeled sizes and budgets, one committed file per
  point (:mod:`training.sweep_points`) and ``SWEEP.md`` generated from them
  (:mod:`training.sweep_report`);
- :mod:`training.cli`: the ``distill train``, ``distill eval``, ``distill loop``,
  ``distill experiment`` and ``distill sweep`` subcommands.
"""
