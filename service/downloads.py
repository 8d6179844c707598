"""A pseudo-label file as the client asked for it: COCO JSON, a YOLO zip, or Label Studio
tasks; each response names the selection it applied."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import Query
from fastapi.responses import JSONResponse, Response

from distill.export import labelstudio_config, to_labelstudio, to_yolo

SELECTION_HEADER = "X-Distill-Selection"  # which thresholds a download used
Format = Literal["coco", "yolo", "labelstudio"]
FormatQuery = Annotated[Format, Query(
    description="coco (JSON), yolo (a zip of label files and data.yaml) or labelstudio "
                "(pre-annotation tasks with scores; the labeling config XML is in the "
                "X-Labelstudio-Config header, URL-encoded)")]


def export_response(coco: dict[str, Any], fmt: Format, name: str) -> Response:
    """The file in ``fmt``, with ``X-Distill-Selection`` saying which selection it holds."""
    headers = {SELECTION_HEADER: str(coco["info"].get("selection_source", "job"))}
    if fmt == "yolo":
        headers["Content-Disposition"] = f'attachment; filename="{name}.yolo.zip"'
        return Response(to_yolo(coco), media_type="application/zip", headers=headers)
    if fmt == "labelstudio":
        from urllib.parse import quote

        headers["X-Labelstudio-Config"] = quote(labelstudio_config(coco))
        return JSONResponse(to_labelstudio(coco), headers=headers)
    return JSONResponse(coco, headers=headers)
