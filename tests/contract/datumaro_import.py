"""Imports COCO files with datumaro as CVAT does, and prints what it read as JSON.

Runs in datumaro's own virtual environment (tests/test_export_datumaro.py makes it), never
in the project's:

    .venv-datumaro/bin/python tests/contract/datumaro_import.py FILE:FORMAT [FILE:FORMAT ...]

FORMAT is a datumaro format such as ``coco_instances`` (CVAT's "COCO 1.0") or
``coco_person_keypoints`` ("COCO Keypoints 1.0"). Each file is read twice: whole, and
streaming (the reader CVAT uses, which checks the top-level sections). Per file and mode:
items, annotations by type, how many carry ``is_crowd``, and every warning or error datumaro
logged. An import error ends the script with a traceback and a non-zero status.
"""

from __future__ import annotations

import json
import logging
import sys
from collections import Counter
from typing import Any


class _Collect(logging.Handler):
    """Keeps every log record of level WARNING or above."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.levelname}: {record.getMessage()}")


def _read(path: str, fmt: str, stream: bool, log: _Collect) -> dict[str, Any]:
    from datumaro.components.dataset import Dataset, StreamDataset

    log.messages.clear()
    dataset = (StreamDataset if stream else Dataset).import_from(path, fmt)
    items = list(dataset)
    anns = [a for item in items for a in item.annotations]
    return {"items": len(items), "ids": sorted(item.id for item in items),
            "annotations": dict(Counter(a.type.name for a in anns)),
            "crowd": sum(bool(a.attributes.get("is_crowd")) for a in anns),
            "warnings": list(log.messages)}


def main(argv: list[str]) -> int:
    """Reads each ``FILE:FORMAT`` of ``argv`` and prints the JSON summary."""
    import datumaro

    log = _Collect()
    logging.getLogger().addHandler(log)
    out: dict[str, Any] = {"datumaro": datumaro.__version__, "files": {}}
    for arg in argv:
        path, fmt = arg.rsplit(":", 1)
        out["files"][arg] = {mode: _read(path, fmt, mode == "stream", log)
                             for mode in ("whole", "stream")}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
