"""The CVAT auto-annotation function: shapes from COCO by hand, and the real function
against the real service, checked by cvat-sdk's own spec and shape validation (cvat-sdk
in its own virtual environment; no CVAT server here, so the task's labels are the ones a
task made from the function's spec would have)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from service.integrations.cvat import LabelPlan, coco_to_shapes, label_plan
from tests.conftest import API_KEYS, REPO, ServiceStack
from tests.toolvenv import tool_python

CVAT_SDK = ["cvat-sdk==2.80.0", "httpx>=0.27"]

PLAN = [LabelPlan(0, 7, "person", ("left_eye", "right_eye")), LabelPlan(1, 9, "kite")]
COCO = {"annotations": [
    {"category_id": 7, "bbox": [10, 20, 30, 40], "score": 0.9, "iscrowd": 0,
     "keypoints": [12, 22, 2, 0, 0, 0], "distill": {"keypoint_scores": [3.0, -1.0]}},
    {"category_id": 9, "bbox": [1, 2, 3, 4], "score": 0.4, "iscrowd": 0},
    {"category_id": 9, "bbox": [5, 5, 5, 5], "score": 0.8, "iscrowd": 1},  # ignore region
]}


def test_plan_names_keypoints_only_for_keypoint_teachers() -> None:
    cats = [{"id": 1, "name": "person", "keypoints": ["nose"]}]
    assert label_plan({"task": "keypoints", "categories": cats}) == [
        LabelPlan(0, 1, "person", ("nose",))]
    assert label_plan({"task": "boxes", "categories": cats}) == [LabelPlan(0, 1, "person")]


def test_shapes_keep_scores_drop_ignore_regions_and_honour_the_threshold() -> None:
    skeleton, box = coco_to_shapes(COCO, PLAN)
    assert box == {"type": "rectangle", "label_id": 1, "score": 0.4, "points": [1, 2, 4, 6]}
    assert skeleton["score"] == 0.9 and skeleton["label_id"] == 0
    left, right = skeleton["elements"]
    assert left["points"] == [12, 22] and not left["outside"] and left["score"] > 0.9
    assert right["outside"] and right["score"] < 0.5  # sigmoid of the logits 3 and -1
    assert [s["type"] for s in coco_to_shapes(COCO, PLAN, conf_threshold=0.5)] == ["skeleton"]


VALIDATE = r"""
import json, logging, sys, types
from PIL import Image
from cvat_sdk.auto_annotation.driver import _AnnotationMapper, _DetectionFunctionContextImpl
from service.integrations.cvat import create

url, key, teacher, image, threshold = sys.argv[1:6]
threshold = None if threshold == "none" else float(threshold)
function = create(url=url, key=key, teacher=teacher)
# The task's labels, as CVAT would make them from the spec (ids the server's own).
def task_label(label, n):
    subs = [types.SimpleNamespace(name=s.name, id=1000 + 10 * n + j, type="points",
                                  attributes=[])
            for j, s in enumerate(getattr(label, "sublabels", None) or [])]
    return types.SimpleNamespace(name=label.name, id=100 + n, type=label.type, sublabels=subs,
                                 attributes=[])
labels = [task_label(l, n) for n, l in enumerate(function.spec.labels)]
mapper = _AnnotationMapper(logging.getLogger("cvat"), function.spec.labels, labels,
                           allow_unmatched_labels=False, conv_mask_to_poly=False)
shapes = function.detect(_DetectionFunctionContextImpl(frame_name="f.png",
                                                       conf_threshold=threshold),
                         Image.open(image))
mapper.validate_and_remap(shapes, 5)
print(json.dumps({"spec": [l.name for l in function.spec.labels],
                  "types": sorted({s.type.value for s in shapes}),
                  "frames": sorted({s.frame for s in shapes}), "n": len(shapes),
                  "scores": [s.score for s in shapes],
                  "elements": [len(getattr(s, "elements", []) or []) for s in shapes],
                  "sources": sorted({s.source for s in shapes})}))
"""


@pytest.fixture(scope="module")
def stack(two_teacher_service: ServiceStack) -> ServiceStack:
    return two_teacher_service


@pytest.mark.parametrize(("teacher", "threshold"), [("shapes", "none"), ("shapes", "0.05"),
                                                     ("person", "none")])
def test_the_function_passes_cvat_sdks_validation(stack: ServiceStack,
                                                  unlabeled_images: list[Path],
                                                  teacher: str, threshold: str) -> None:
    python = tool_python("cvat", CVAT_SDK)
    with stack.client() as c:
        before = len(c.get("/jobs").json()["jobs"])
    out = subprocess.run([str(python), "-c", VALIDATE, stack.url, API_KEYS[0], teacher,
                          str(unlabeled_images[0]), threshold], cwd=REPO, capture_output=True,
                         text=True, timeout=300, env={"PYTHONPATH": str(REPO)})
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["n"] > 0 and result["frames"] == [5] and result["sources"] == ["auto"]
    assert all(0.0 <= s <= 1.0 for s in result["scores"])
    if threshold != "none":
        assert min(result["scores"]) >= float(threshold)
    if teacher == "person":  # one skeleton label with every keypoint of the card
        assert result["types"] == ["skeleton"] and set(result["elements"]) == {13}
    else:
        assert result["types"] == ["rectangle"]
    with stack.client() as c:  # each frame's job was deleted
        assert len(c.get("/jobs").json()["jobs"]) == before


def test_nuclio_json_names_labels_and_keeps_confidences() -> None:
    from service.integrations.cvat import nuclio_results, nuclio_spec

    assert nuclio_spec(PLAN) == [
        {"id": 0, "name": "person", "type": "skeleton", "sublabels": [
            {"id": 0, "name": "left_eye", "type": "points"},
            {"id": 1, "name": "right_eye", "type": "points"}]},
        {"id": 1, "name": "kite", "type": "rectangle"}]
    skeleton, box = nuclio_results(coco_to_shapes(COCO, PLAN), PLAN)
    assert box == {"confidence": "0.4000", "label": "kite", "type": "rectangle",
                   "points": [1.0, 2.0, 4.0, 6.0]}
    assert [e["label"] for e in skeleton["elements"]] == ["left_eye", "right_eye"]
    assert [e["outside"] for e in skeleton["elements"]] == [0, 1]


def test_the_nuclio_handler_answers_cvats_detector_json(stack: ServiceStack,
                                                        unlabeled_images: list[Path],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """docker/cvat-nuclio/main.py run as Nuclio runs it (init_context, then handler with
    CVAT's body), against the real service; the context object stands in for Nuclio's."""
    import base64
    import importlib.util
    import types

    import yaml

    spec_file = yaml.safe_load((REPO / "docker/cvat-nuclio/function.yaml").read_text())
    assert spec_file["spec"]["handler"] == "main:handler"
    json.loads(spec_file["metadata"]["annotations"]["spec"])
    module_spec = importlib.util.spec_from_file_location(
        "nuclio_main", REPO / "docker/cvat-nuclio/main.py")
    assert module_spec is not None and module_spec.loader is not None
    main = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(main)
    monkeypatch.setenv("DISTILL_URL", stack.url)
    monkeypatch.setenv("DISTILL_API_KEY", API_KEYS[0])
    monkeypatch.setenv("DISTILL_TEACHER", "shapes")

    def response(body: str, headers: dict[str, str], content_type: str, status_code: int
                 ) -> dict[str, Any]:
        return {"body": body, "content_type": content_type, "status": status_code}

    context = types.SimpleNamespace(user_data=types.SimpleNamespace(), Response=response)
    main.init_context(context)
    body = {"image": base64.b64encode(unlabeled_images[1].read_bytes()).decode(),
            "threshold": 0.05}
    answer = main.handler(context, types.SimpleNamespace(body=body))
    assert answer["status"] == 200 and answer["content_type"] == "application/json"
    results = json.loads(answer["body"])
    assert results and {r["type"] for r in results} == {"rectangle"}
    assert all(float(r["confidence"]) >= 0.05 and len(r["points"]) == 4 for r in results)
