"""The OpenAPI document shows both bodies POST /annotate takes: the multipart upload form
and the JSON references request, with both answers, and the plan routes.

Checked on the document the API serves (an in-process app, no Redis needed for
``/openapi.json``), and against the models themselves with jsonschema: a valid
references request validates, a bad one does not, and a real plan answer fits
the 202 schema.
"""

from __future__ import annotations

from typing import Any

import jsonschema
import pytest
from fastapi.testclient import TestClient

from jobs.plan_records import PlanState
from jobs.settings import Settings
from service.app import create_app
from service.routers.references import PlanLinks, PlanOut


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    # No ``with``: the lifespan (Redis, the store) is not needed to serve the document.
    resp = TestClient(create_app(Settings(api_keys=["k"]))).get("/openapi.json")
    assert resp.status_code == 200
    return dict(resp.json())


def _schema(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    """A schema of the document, resolvable on its own (the components beside it)."""
    return {**schema, "components": spec["components"]}


def test_annotate_documents_the_form_and_the_json_body(spec: dict[str, Any]) -> None:
    op = spec["paths"]["/annotate"]["post"]
    content = op["requestBody"]["content"]
    assert set(content) == {"multipart/form-data", "application/json"}
    body = _schema(spec, content["application/json"]["schema"])
    props = spec["components"]["schemas"]["ReferenceRequest"]["properties"]
    assert {"source", "recursive", "images", "teacher", "dataset", "tta"} <= set(props)
    jsonschema.validate({"source": "s3://team/images/", "recursive": True,
                         "dataset": "ds"}, body)
    jsonschema.validate({"images": ["s3://team/a.jpg", "https://host/b.jpg"]}, body)
    for bad in ({"images": []}, {"recursive": "yes"}, {"dataset": "no spaces allowed"}):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(bad, body)
    # The form is still there, untouched.
    form = spec["components"]["schemas"][
        content["multipart/form-data"]["schema"]["$ref"].rsplit("/", 1)[-1]]
    assert "files" in form["properties"]

    # Either answer fits the 202 schema; a refused reference's 403 is declared.
    accepted = _schema(spec, op["responses"]["202"]["content"]["application/json"]["schema"])
    plan = PlanOut(id="ab" * 16, dataset="ds", teacher="t", source="s3://team/images/",
                   images_requested=None, state=PlanState(status="running", listed=64),
                   links=PlanLinks(status="/plans/x", jobs="/jobs", annotations="/d"))
    jsonschema.validate(plan.model_dump(mode="json"), accepted)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"id": 3}, accepted)
    assert "403" in op["responses"] and "422" in op["responses"]


def test_the_plan_routes_are_documented(spec: dict[str, Any]) -> None:
    plan = spec["paths"]["/plans/{plan_id}"]
    assert set(plan) == {"get", "delete"}
    assert "404" in plan["delete"]["responses"] and "202" in plan["delete"]["responses"]
