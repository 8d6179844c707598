"""The HTTP API of the pseudo-label service (FastAPI).

It accepts image batches, validates and stores them, queues one RQ job per
batch, reports progress and serves COCO pseudo-labels. It never runs a
model: workers (:mod:`worker`) do. Build the app with
:func:`service.app.create_app`.
"""
