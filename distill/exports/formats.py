"""The export formats: one table that the CLI (``distill export``), :func:`write_export`
and the API downloads (``?format=``) all read.

A format is a name, a renderer (COCO dict -> bytes), a media type, a file suffix, a help
line, the :class:`ExportOptions` fields it reads, and optionally a companion file (Label
Studio's labeling config). Adding a format is one entry in :data:`EXPORT_FORMATS` plus its
renderer, tests and the README's exports section: the API's allowed values and OpenAPI
description, the CLI's choices and help come from here. Pure Python: no torch, no HTTP.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from distill.errors import ConfigError
from distill.exports._common import check_coco
from distill.exports.coco import to_cvat
from distill.exports.labelstudio import LS_LOCAL_FILES, labelstudio_config, to_labelstudio
from distill.exports.yolo import to_yolo
from distill.fileio import atomic_writer

CocoDict = dict[str, Any]


@dataclass(frozen=True)
class ExportOptions:
    """What a caller may choose beyond the format; each format reads only its own
    (:attr:`ExportFormat.options`). The API always uses the defaults."""

    image_url_prefix: str = LS_LOCAL_FILES  # labelstudio: prefix of each image's URL
    images_dir: Path | None = None  # yolo: copy the images (relative to it) into the zip


@dataclass(frozen=True)
class Companion:
    """A second file a format comes with: written beside the main one by the CLI (``<out
    stem><suffix>``), sent URL-encoded in the ``header`` of an API response."""

    suffix: str
    header: str
    description: str
    render: Callable[[CocoDict], str]

    def path_beside(self, out: Path) -> Path:
        """Where :func:`write_export` puts the companion of the file ``out``."""
        return out.with_name(out.stem + self.suffix)


@dataclass(frozen=True)
class ExportFormat:
    """One export format (see the module docstring)."""

    name: str
    render: Callable[[CocoDict, ExportOptions], bytes]
    media_type: str
    suffix: str  # of the file the API names in Content-Disposition: <job or dataset><suffix>
    help: str
    options: frozenset[str] = field(default_factory=frozenset)  # ExportOptions fields read
    companion: Companion | None = None

    def __post_init__(self) -> None:
        unknown = self.options - {f.name for f in fields(ExportOptions)}
        if unknown:
            raise ValueError(f"export format {self.name!r} names unknown options {unknown}")


def _json(data: Any) -> bytes:
    # One serialisation for every JSON export, the one the worker's COCO file is written
    # with (distill.fileio.write_json_atomic): the same document gives the same bytes.
    return json.dumps(data, allow_nan=False).encode("utf-8")


EXPORT_FORMATS: dict[str, ExportFormat] = {f.name: f for f in (
    ExportFormat(
        "coco", lambda coco, _: _json(coco), "application/json", ".json",
        "the COCO pseudo-label file as it is, the training file (ignore regions as "
        "iscrowd: 1)"),
    ExportFormat(
        "cvat", lambda coco, _: _json(to_cvat(coco)), "application/json", ".cvat.json",
        "COCO for CVAT's 'COCO 1.0' / 'COCO Keypoints 1.0' import: ignore regions left "
        "out, the keys CVAT's datumaro requires present"),
    ExportFormat(
        "yolo", lambda coco, opt: to_yolo(coco, images_dir=opt.images_dir),
        "application/zip", ".yolo.zip",
        "an Ultralytics YOLO zip (labels/, data.yaml, classes.txt)",
        options=frozenset({"images_dir"})),
    ExportFormat(
        "labelstudio",
        lambda coco, opt: _json(to_labelstudio(coco, image_url_prefix=opt.image_url_prefix)),
        "application/json", ".labelstudio.json",
        "Label Studio tasks with the pseudo-labels as scored predictions",
        options=frozenset({"image_url_prefix"}),
        companion=Companion(".labelstudio.xml", "X-Labelstudio-Config",
                            "the labeling config for those tasks", labelstudio_config)),
)}


def export_format(name: str) -> ExportFormat:
    """The format called ``name``; a :class:`ConfigError` listing the known ones otherwise."""
    try:
        return EXPORT_FORMATS[name]
    except KeyError:
        raise ConfigError(f"unknown export format {name!r}; choose one of "
                          f"{tuple(EXPORT_FORMATS)}") from None


def formats_help() -> str:
    """One line per format, ``name: help``, joined with '; ' (CLI and OpenAPI)."""
    return "; ".join(f"{f.name}: {f.help}" for f in EXPORT_FORMATS.values())


def formats_taking(option: str) -> list[str]:
    """The names of the formats that read ExportOptions field ``option``."""
    return [f.name for f in EXPORT_FORMATS.values() if option in f.options]


def write_export(coco: CocoDict, fmt: str, out: Path,
                 options: ExportOptions | None = None) -> Path:
    """Writes ``coco`` as format ``fmt`` to ``out`` (and its companion beside it),
    atomically, and returns ``out``. Nothing is written when the file is malformed."""
    spec, out = export_format(fmt), Path(out)
    check_coco(coco)
    data = spec.render(coco, options or ExportOptions())
    if spec.companion is not None:
        text = spec.companion.render(coco)
        with atomic_writer(spec.companion.path_beside(out)) as fh:
            fh.write(text.encode("utf-8"))
    with atomic_writer(out) as fh:
        fh.write(data)
    return out
