"""The OpenAPI document, adjusted where FastAPI's generated one misleads clients.

A multipart form cannot carry ``null``: an optional form field is either
sent or absent. FastAPI still types ``Form() = None`` fields as ``anyOf [T,
null]``, which invites generated clients (and schemathesis) to send the text
``"null"``. Here the ``null`` alternative is dropped from every multipart
body schema; the fields stay optional.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi


def multipart_without_nulls(app: FastAPI) -> dict[str, Any]:
    """``app.openapi()`` with ``null`` removed from multipart request-body properties."""
    if app.openapi_schema is not None:
        return app.openapi_schema
    schema = get_openapi(title=app.title, version=app.version, description=app.description,
                         routes=app.routes)
    components = schema.get("components", {}).get("schemas", {})
    for path in schema.get("paths", {}).values():
        for op in path.values():
            content = op.get("requestBody", {}).get("content", {})
            ref = content.get("multipart/form-data", {}).get("schema", {}).get("$ref")
            if ref:
                body = components[ref.rsplit("/", 1)[-1]]
                for prop in body.get("properties", {}).values():
                    _drop_null(prop)
    app.openapi_schema = schema
    return schema


def _drop_null(prop: dict[str, Any]) -> None:
    options = prop.get("anyOf")
    if not options:
        return
    kept = [o for o in options if o.get("type") != "null"]
    if prop.get("default", "") is None:
        prop.pop("default")  # absent is the default
    if len(kept) == 1:
        prop.pop("anyOf")
        prop.update(kept[0])
    else:
        prop["anyOf"] = kept
