"""A CVAT auto-annotation function backed by a running distill service.

cvat-sdk's interface (``spec`` and ``detect(context, image)``), so that CVAT's own tools
drive it, immediately or as an agent::

    cvat-cli --server-host https://cvat.example --auth USER task auto-annotate TASK \\
        --function-module service.integrations.cvat \\
        -p url=str:http://distill:8000 -p key=str:$DISTILL_API_KEY -p teacher=str:person

Each frame goes to the service as a one-image job (``POST /annotate``) that a worker
runs with the teacher's multi-transform ensemble; the function waits for it, turns its
COCO file into CVAT shapes and deletes the job. The spec comes from the teacher's card
(``GET /teachers``): one rectangle label per box category, one skeleton per keypoint
category with its keypoint names as points. Scores travel on every shape and keypoint
(``score``); with ``context.conf_threshold`` set, it is the job's score threshold (CVAT
requires every returned shape to reach it). Thresholds it does not give come from the
teacher's last job calibrated over enough images with the same checkpoint (``POST
/annotate`` with ``calibration=teacher``): a bulk upload, a plan or a Label Studio
retrieval of at least ``DISTILL_CALIBRATE_MIN_IMAGES`` images; before any, the frame is
calibrated on its own (about the labeled set's instances per image). Keypoints under the
calibrated keypoint threshold are marked ``outside``; a keypoint's score is the sigmoid
of its heatmap logit. Ignore regions are never sent.

The conversion (:func:`label_plan`, :func:`coco_to_shapes`) is plain Python; cvat-sdk
is needed only by :func:`create` (``pip install cvat-sdk``).
"""

from __future__ import annotations

import io
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from PIL import Image

from distill.errors import DistillError
from distill.exports._common import keypoint_probability

TERMINAL = ("finished", "failed", "cancelled")


@dataclass(frozen=True)
class LabelPlan:
    """One function label: a category of the teacher, by its index in the card."""

    id: int
    category_id: int
    name: str
    keypoints: tuple[str, ...] = field(default=())  # empty: a rectangle label


def label_plan(teacher: dict[str, Any]) -> list[LabelPlan]:
    """The labels of a teacher (an entry of ``GET /teachers``)."""
    plan = []
    for i, cat in enumerate(teacher.get("categories") or []):
        points = tuple(cat.get("keypoints") or ()) if teacher.get("task") == "keypoints" else ()
        plan.append(LabelPlan(i, int(cat["id"]), str(cat["name"]), points))
    if not plan:
        raise DistillError(f"teacher {teacher.get('name')!r} has no categories (is its "
                           f"checkpoint usable? {teacher.get('error') or ''})")
    return plan


def coco_to_shapes(coco: dict[str, Any], plan: list[LabelPlan],
                   conf_threshold: float | None = None) -> list[dict[str, Any]]:
    """CVAT shapes (plain dicts with cvat-sdk's field names) of a one-image COCO file:
    no ignore regions, nothing under ``conf_threshold``."""
    by_category = {p.category_id: p for p in plan}
    shapes: list[dict[str, Any]] = []
    for ann in coco.get("annotations", []):
        label = by_category.get(int(ann["category_id"]))
        score = float(ann.get("score", 1.0))
        if label is None or ann.get("iscrowd") or (
                conf_threshold is not None and score < conf_threshold):
            continue
        x, y, w, h = (float(v) for v in ann["bbox"])
        if not label.keypoints:
            shapes.append({"type": "rectangle", "label_id": label.id, "score": score,
                           "points": [x, y, x + w, y + h]})
            continue
        flat = ann.get("keypoints") or [0.0] * 3 * len(label.keypoints)
        scores = (ann.get("distill") or {}).get("keypoint_scores") or [score] * len(
            label.keypoints)
        elements = [{"label_id": j, "points": [float(flat[3 * j]), float(flat[3 * j + 1])],
                     "outside": flat[3 * j + 2] == 0, "score": keypoint_probability(scores[j])}
                    for j in range(len(label.keypoints))]
        shapes.append({"type": "skeleton", "label_id": label.id, "score": score,
                       "elements": elements})
    return shapes


class ServiceClient:
    """One-image jobs on a running service."""

    def __init__(self, url: str, key: str = "", teacher: str = "", tta: str = "flip",
                 timeout: float = 100.0, poll_s: float = 0.2) -> None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=30.0)
        self.tta, self.timeout, self.poll_s = tta, timeout, poll_s
        self.teacher = self._teacher(teacher)

    def _teacher(self, name: str) -> dict[str, Any]:
        teachers = _json(self.http.get("/teachers"))["teachers"]
        if not name and len(teachers) == 1:
            return dict(teachers[0])
        found = [t for t in teachers if t["name"] == name]
        if not found:
            served = ", ".join(t["name"] for t in teachers) or "none"
            raise DistillError(f"the service has no teacher {name!r} (it has: {served}); "
                               "pass -p teacher=str:NAME")
        return dict(found[0])

    def annotate(self, image: Image.Image, score_threshold: float | None = None
                 ) -> dict[str, Any]:
        """The COCO pseudo-labels of one image; the job is deleted afterwards."""
        buf = io.BytesIO()
        image.convert("RGB").save(buf, format="PNG")
        form = {"teacher": self.teacher["name"], "tta": self.tta}
        if score_threshold is not None:
            form["score_threshold"] = str(score_threshold)
        # One frame says nothing about where a threshold belongs: the teacher's last job
        # calibrated over enough images does (the job's own frame when there is none).
        form["calibration"] = "teacher"
        job = _json(self.http.post("/annotate", data=form,
                                   files=[("files", ("frame.png", buf.getvalue(),
                                                     "image/png"))]))["id"]
        try:
            deadline = time.monotonic() + self.timeout
            while (status := _json(self.http.get(f"/jobs/{job}")))["status"] not in TERMINAL:
                if time.monotonic() > deadline:
                    raise DistillError(f"job {job} did not finish within {self.timeout:g} s "
                                       f"(status {status['status']}); is a worker running "
                                       f"teacher {self.teacher['name']!r}?")
                time.sleep(self.poll_s)
            if status["status"] != "finished":
                raise DistillError(f"job {job} {status['status']}: {status.get('error')}")
            return _json(self.http.get(f"/jobs/{job}/annotations"))
        finally:
            self.http.delete(f"/jobs/{job}")


def _json(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        try:
            message = response.json()["detail"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        raise DistillError(f"{response.request.method} {response.request.url.path}: "
                           f"{response.status_code} {message}")
    return response.json()


class DistillFunction:
    """cvat-sdk's ``DetectionFunction`` over a :class:`ServiceClient`."""

    def __init__(self, client: ServiceClient) -> None:
        import cvat_sdk.auto_annotation as cvataa

        self.client, self.plan, self._aa = client, label_plan(client.teacher), cvataa
        self.spec = cvataa.DetectionFunctionSpec(labels=[
            cvataa.skeleton_label_spec(p.name, p.id, [cvataa.keypoint_spec(k, j) for j, k
                                                      in enumerate(p.keypoints)])
            if p.keypoints else cvataa.label_spec(p.name, p.id, type="rectangle")
            for p in self.plan])

    def detect(self, context: Any, image: Image.Image) -> list[Any]:
        """CVAT shapes of one frame (``context.conf_threshold`` honoured)."""
        threshold = context.conf_threshold
        coco = self.client.annotate(image, threshold)
        aa = self._aa
        return [aa.rectangle(s["label_id"], s["points"], score=s["score"])
                if s["type"] == "rectangle" else
                aa.skeleton(s["label_id"], score=s["score"], elements=[
                    aa.keypoint(e["label_id"], e["points"], outside=e["outside"],
                                score=e["score"]) for e in s["elements"]])
                for s in coco_to_shapes(coco, self.plan, threshold)]


def create(url: str, key: str = "", teacher: str = "", tta: str = "flip",
           timeout: float = 100.0) -> DistillFunction:
    """What ``cvat-cli ... --function-module service.integrations.cvat -p NAME=TYPE:VALUE``
    calls: the function for ``teacher`` (default: the service's only one)."""
    return DistillFunction(ServiceClient(url, key, teacher, tta, timeout))


# ---- the Nuclio handler's side (docker/cvat-nuclio): CVAT's serverless JSON ------------

def nuclio_spec(plan: list[LabelPlan]) -> list[dict[str, Any]]:
    """The ``metadata.annotations.spec`` label list of a Nuclio detector function."""
    return [{"id": p.id, "name": p.name, "type": "skeleton" if p.keypoints else "rectangle",
             **({"sublabels": [{"id": j, "name": k, "type": "points"}
                               for j, k in enumerate(p.keypoints)]} if p.keypoints else {})}
            for p in plan]


def nuclio_results(shapes: list[dict[str, Any]], plan: list[LabelPlan]) -> list[dict[str, Any]]:
    """:func:`coco_to_shapes` output as the JSON list a CVAT Nuclio detector returns
    (labels by name, ``confidence`` as a string, skeleton elements with ``outside``)."""
    names = {p.id: p for p in plan}
    out = []
    for s in shapes:
        label = names[s["label_id"]]
        item: dict[str, Any] = {"confidence": f"{s['score']:.4f}", "label": label.name,
                                "type": s["type"]}
        if s["type"] == "rectangle":
            item["points"] = s["points"]
        else:
            item["elements"] = [{"label": label.keypoints[e["label_id"]], "type": "points",
                                 "points": e["points"], "outside": int(e["outside"]),
                                 "confidence": f"{e['score']:.4f}"} for e in s["elements"]]
        out.append(item)
    return out


if __name__ == "__main__":  # print a teacher's Nuclio spec: python -m service.integrations.cvat
    import argparse
    import json
    import os

    cli = argparse.ArgumentParser(description="print the Nuclio label spec of a teacher")
    cli.add_argument("--url", default=os.environ.get("DISTILL_URL", "http://127.0.0.1:8000"))
    cli.add_argument("--key", default=os.environ.get("DISTILL_API_KEY", ""))
    cli.add_argument("--teacher", default="")
    a = cli.parse_args()
    print(json.dumps(nuclio_spec(label_plan(ServiceClient(a.url, a.key, a.teacher).teacher))))
