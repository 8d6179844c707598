"""Exports of a COCO pseudo-label file (DESIGN section 4) for labeling and training tools.

:mod:`distill.exports.formats` is the table of formats that the CLI and the API read; the
other modules are the renderers (``coco`` and ``cvat``, ``yolo``, ``labelstudio``) and
what they share (``_common``). Pure Python: no torch, no HTTP.
"""
