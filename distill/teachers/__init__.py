"""Teachers: the model families behind one interface, and bringing teachers in.

- :mod:`distill.teachers.interface`: the :class:`Detector` protocol (a batch of images
  at one test-time size in, raw or final detections out) and the family protocol;
- :mod:`distill.teachers.registry`: families by architecture, built-in and the
  ``distill.teachers`` entry-point plug-ins;
- :mod:`distill.teachers.rcnn`: torchvision's R-CNNs and ``tiny``;
  :mod:`distill.teachers.rcnn_import` imports their weights;
- ONNX exports run by onnxruntime (``yolo-onnx``, ``rtdetr-onnx``):
  :mod:`.onnx_family` (the family; the model's bytes live in the checkpoint),
  :mod:`.onnx_detector` (the detector), :mod:`.placement` (letterbox / stretch and
  back), :mod:`.onnx_layouts` (output layouts, decoding), :mod:`.onnx_session`
  (sessions, signatures, metadata), :mod:`.onnx_import` and :mod:`.onnx_categories`
  (``distill teacher import`` for them);
- :mod:`distill.teachers.labels`: categories and labeled statistics of an import;
- :mod:`distill.teachers.cli`: ``distill teacher import`` and ``distill teacher stats``.

This file imports nothing, so that registering the command line stays torch-free.
"""
