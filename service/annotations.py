"""COCO files for a job or a dataset, re-selected from the stored raw predictions: the
rule lives in :mod:`jobs.annotations` (workers write a finished dataset's file with it
too); the API's modules import it from here."""

from jobs.annotations import NotAvailableError, build_coco, resolve, spooled

__all__ = ["NotAvailableError", "build_coco", "resolve", "spooled"]
