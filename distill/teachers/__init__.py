"""Teachers: the model families behind one interface, and bringing teachers in.

- :mod:`distill.teachers.interface`: the :class:`Detector` protocol (a batch of images
  at one test-time size in, raw or final detections out) and the family protocol;
- :mod:`distill.teachers.registry`: families by architecture, built-in and the
  ``distill.teachers`` entry-point plug-ins;
- :mod:`distill.teachers.rcnn`: torchvision's R-CNNs and ``tiny``;
  :mod:`distill.teachers.rcnn_import` imports their weights;
- :mod:`distill.teachers.labels`: categories and labeled statistics of an import;
- :mod:`distill.teachers.cli`: ``distill teacher import`` and ``distill teacher stats``.

This file imports nothing, so that registering the command line stays torch-free.
"""
