"""A pseudo-label file in the export format the client asked for (``?format=``); each
response names the selection it applied. The formats, their media types, file names and
the query's allowed values and description come from
:data:`distill.exports.formats.EXPORT_FORMATS`."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Query
from fastapi.responses import Response

from distill.exports.formats import EXPORT_FORMATS, ExportOptions, formats_help

SELECTION_HEADER = "X-Distill-Selection"  # which thresholds a download used
# An enum (not a Literal) so that the allowed values follow the table; OpenAPI lists them.
ExportFormatName = StrEnum("ExportFormatName", {n: n for n in EXPORT_FORMATS})  # type: ignore[misc]
FormatQuery = Annotated[ExportFormatName, Query(description=(
    formats_help() + ". A format with a companion file sends it URL-encoded in a header ("
    + ", ".join(f"{f.companion.header}: {f.companion.description}"
                for f in EXPORT_FORMATS.values() if f.companion) + ")"))]
DEFAULT_FORMAT = ExportFormatName("coco")


def download_response_doc(what: str) -> dict[str, Any]:
    """The OpenAPI entry of a download's 200 response: ``what``, in each format's media type."""
    return {"description": f"{what}, in the format that `format` names (COCO JSON by "
                           "default)",
            "content": {t: {} for t in dict.fromkeys(
                f.media_type for f in EXPORT_FORMATS.values())}}


def download_headers(fmt: str, name: str, selection: str) -> dict[str, str]:
    """The headers of every download: the selection it holds and its file name."""
    suffix = EXPORT_FORMATS[fmt].suffix
    return {SELECTION_HEADER: selection,
            "Content-Disposition": f'attachment; filename="{name}{suffix}"'}


def export_response(coco: dict[str, Any], fmt: str, name: str) -> Response:
    """The file in format ``fmt``, with ``X-Distill-Selection`` saying which selection it
    holds and, for a format with a companion file, that file in its header."""
    spec = EXPORT_FORMATS[fmt]
    headers = download_headers(fmt, name, str(coco["info"].get("selection_source", "job")))
    if spec.companion is not None:
        headers[spec.companion.header] = quote(spec.companion.render(coco))
    return Response(spec.render(coco, ExportOptions()), media_type=spec.media_type,
                    headers=headers)
