"""The OpenAPI document, adjusted where FastAPI's generated one misleads clients.

A multipart form cannot carry ``null``: an optional form field is either
sent or absent. FastAPI still types ``Form() = None`` fields as ``anyOf [T,
null]``, which invites generated clients (and schemathesis) to send the text
``"null"``. Here the ``null`` alternative is dropped from every multipart
body schema; the fields stay optional.

A path that takes a JSON body beside its multipart form (``POST /annotate``:
references or uploads) is served by two routes, and an OpenAPI path has one
operation per method; the JSON route is left out of the generated document and
its body and answer are added to the form's operation here.

Every operation that reads a JSON body answers 400 when the body is not JSON at all
(FastAPI's parser, before validation's 422); that answer is documented here, once.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

REF = "#/components/schemas/{model}"
# path -> (the JSON body of its POST, the 202 answer to it, error codes only it answers
# with and what they mean)
JsonBody = tuple[type[BaseModel], type[BaseModel], dict[str, str]]
JsonBodies = dict[str, JsonBody]


def multipart_without_nulls(app: FastAPI, json_bodies: JsonBodies | None = None
                            ) -> dict[str, Any]:
    """``app.openapi()`` with ``null`` removed from multipart request-body properties, and
    with the JSON bodies ``json_bodies`` names beside the forms of their paths."""
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
    for path, extra in (json_bodies or {}).items():
        _add_json_body(schema, path, *extra)
    for path in schema.get("paths", {}).values():
        for op in path.values():
            if "application/json" in op.get("requestBody", {}).get("content", {}):
                op["responses"].setdefault("400", {
                    "description": "the body is not JSON",
                    "content": {"application/json": {
                        "schema": {"$ref": REF.format(model="ErrorBody")}}}})
    app.openapi_schema = schema
    return schema


def _add_json_body(schema: dict[str, Any], path: str, body: type[BaseModel],
                   answer: type[BaseModel], errors: dict[str, str]) -> None:
    """Adds ``body`` as the ``application/json`` request body of ``POST path``, ``answer``
    as another form its 202 answer can take (the form's models are kept) and ``errors``
    (with the error body every other error has)."""
    operation = schema["paths"][path]["post"]
    _, top = models_json_schema([(body, "validation"), (answer, "serialization")],
                                ref_template=REF)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for name, definition in top.get("$defs", {}).items():
        components.setdefault(name, definition)  # a model both routes use is the same one
    operation["requestBody"]["content"]["application/json"] = {
        "schema": {"$ref": REF.format(model=body.__name__)}}
    accepted = operation["responses"]["202"]["content"]["application/json"]
    accepted["schema"] = {"anyOf": [accepted["schema"],
                                    {"$ref": REF.format(model=answer.__name__)}]}
    error = {"application/json": {"schema": {"$ref": REF.format(model="ErrorBody")}}}
    for code, text in errors.items():
        operation["responses"].setdefault(code, {"description": text, "content": error})


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
