"""The review document and the download follow one selection rule (issue: the page and the
download disagreed when ``min_votes`` was set).

A box teacher and a keypoint teacher on the real stack; for a ``min_votes`` job, a dataset
of two batches, and each of them with a reviewer's saved selection (lowered thresholds,
a rejected and an accepted instance, an excluded image): what the review document marks
``kept`` / ``ignored`` is exactly what the downloaded COCO file holds, and its candidate
counts are the file's report.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServiceStack


@pytest.fixture(scope="module")
def stack(two_teacher_service: ServiceStack) -> ServiceStack:
    return two_teacher_service


def _in_review(doc: dict[str, Any]) -> Counter[tuple[str, int, tuple[float, ...], int]]:
    """(file, category, box, iscrowd) of every prediction the review says is in the file."""
    excluded = set(doc["rule"]["excluded"])
    out: Counter[tuple[str, int, tuple[float, ...], int]] = Counter()
    for im in doc["images"]:
        if im["error"] or im["file_name"] in excluded:
            continue
        for i, status in enumerate(im["status"]):
            if status in ("kept", "ignored"):
                x1, y1, x2, y2 = im["boxes"][i]
                out[(im["file_name"], im["category_ids"][i],
                     (round(x1, 2), round(y1, 2), round(x2 - x1, 2), round(y2 - y1, 2)),
                     int(status == "ignored"))] += 1
    return out


def _in_file(coco: dict[str, Any]) -> Counter[tuple[str, int, tuple[float, ...], int]]:
    names = {im["id"]: im["file_name"] for im in coco["images"]}
    return Counter((names[a["image_id"]], a["category_id"],
                    tuple(round(v, 2) for v in a["bbox"]), a["iscrowd"])
                   for a in coco["annotations"])


def _candidates(doc: dict[str, Any]) -> dict[str, int]:
    """Calibration candidates: predictions enough transforms agree on (reviewer decisions
    aside), on the images not excluded."""
    excluded, least = set(doc["rule"]["excluded"]), doc["rule"]["min_votes"]
    counts: Counter[str] = Counter()
    for im in doc["images"]:
        if not im["error"] and im["file_name"] not in excluded:
            counts.update(str(c) for i, c in enumerate(im["category_ids"])
                          if im["votes"] is None or im["votes"][i] >= least)
    return dict(counts)


def _agree(stack: ServiceStack, base: str) -> tuple[dict[str, Any], dict[str, Any]]:
    with stack.client() as c:
        doc = c.get(f"{base}/review").json()
        coco = c.get(f"{base}/annotations").json()
    assert _in_review(doc) == _in_file(coco)
    report = coco["info"]["categories_report"]
    assert _candidates(doc) == {k: v["candidates"] for k, v in report.items()
                                if k != "keypoints" and v["candidates"]}
    assert doc["report"] == report
    assert doc["rule"]["source"] == coco["info"]["selection_source"]
    return doc, coco


def _review_like_a_person(stack: ServiceStack, base: str, doc: dict[str, Any]
                          ) -> dict[str, Any]:
    """Lower every threshold a little, reject the first kept instance, accept the best
    candidate left out, exclude the last image, and save."""
    thresholds = {k: (None if v is None else max(0.0, v - 0.01))
                  for k, v in doc["rule"]["score"].items()}
    kept = [(im["file_name"], i) for im in doc["images"]
            for i, s in enumerate(im["status"]) if s == "kept"]
    out = sorted(((im["scores"][i], im["file_name"], i) for im in doc["images"]
                  for i, s in enumerate(im["status"]) if s in ("candidate", "filtered")),
                 reverse=True)
    assert kept and out, "the teacher gave nothing to decide on"
    body = {"score_thresholds": thresholds, "keypoint_threshold": doc["rule"]["keypoint"],
            "excluded": [doc["images"][-1]["file_name"]],
            "rejected": {kept[0][0]: [kept[0][1]]}, "accepted": {out[0][1]: [out[0][2]]}}
    with stack.client() as c:
        # The time is the store's stamp: a client's own is no part of the choice.
        saved = c.put(f"{base}/selection", json={**body, "saved_at": "1970-01-01T00:00:00Z"})
    saved.raise_for_status()
    assert saved.json()["saved_at"] > "2026", saved.json()["saved_at"]
    return body


@pytest.mark.parametrize("teacher", ["shapes", "person"])
def test_review_and_download_agree_for_a_job_and_a_dataset(
        stack: ServiceStack, unlabeled_images: list[Path], teacher: str) -> None:
    form = {"teacher": teacher, "tta": "flip", "min_votes": 2}
    job = stack.submit(unlabeled_images[:6], **form)
    stack.wait_job(job["id"])
    dataset = f"contract-{teacher}"
    for batch in (unlabeled_images[6:9], unlabeled_images[9:12]):
        stack.wait_job(stack.submit(batch, dataset=dataset, **form)["id"])
    for base in (f"/jobs/{job['id']}", f"/datasets/{dataset}"):
        doc, _ = _agree(stack, base)
        assert doc["rule"]["min_votes"] == 2 and doc["rule"]["source"] == "job"
        if teacher == "shapes":  # flip: 1 or 2 transforms agree; the rule filtered some
            statuses = Counter(s for im in doc["images"] for s in im["status"])
            assert statuses["filtered"] > 0, statuses
        body = _review_like_a_person(stack, base, doc)
        doc, coco = _agree(stack, base)
        assert doc["rule"]["source"] == "saved"
        assert coco["info"]["excluded"] == body["excluded"]
        (name, [index]), = body["rejected"].items()
        assert next(im for im in doc["images"] if im["file_name"] == name
                    )["status"][index] == "rejected"
        (name, [index]), = body["accepted"].items()
        assert next(im for im in doc["images"] if im["file_name"] == name
                    )["status"][index] == "kept"
        # The saved decisions travel in the file's info, for whoever trains on it.
        assert coco["info"]["selection"]["rejected"] == body["rejected"]


def test_old_threshold_names_still_work_and_conflicts_are_refused(
        stack: ServiceStack, unlabeled_images: list[Path]) -> None:
    job = stack.submit(unlabeled_images[:2], teacher="shapes", tta="identity",
                       score_thresh=0.05)
    stack.wait_job(job["id"])
    with stack.client() as c:
        record = c.get(f"/jobs/{job['id']}/annotations").json()["info"]["selection"]
        both = c.get(f"/jobs/{job['id']}/annotations",
                     params={"score_threshold": 0.1, "score_thresh": 0.2})
        same = c.get(f"/jobs/{job['id']}/annotations", params={"score_threshold": 0.1})
        old = c.get(f"/jobs/{job['id']}/annotations", params={"score_thresh": 0.1})
    assert record["score_threshold"] == 0.05
    assert both.status_code == 422 and "score_threshold" in both.json()["detail"]["message"]
    assert json.loads(same.content)["annotations"] == json.loads(old.content)["annotations"]
    assert same.json()["info"]["selection_source"] == "query"


def test_the_selection_body_leaves_the_saved_time_to_the_store(stack: ServiceStack) -> None:
    """The PUT body documents the reviewer's choice only: ``saved_at`` is the store's, so
    a schema-led client (schemathesis found this) may not be told it can send one."""
    with stack.client() as c:
        spec = c.get("/openapi.json").json()
    for path in ("/jobs/{job_id}/selection", "/datasets/{name}/selection"):
        ref = spec["paths"][path]["put"]["requestBody"]["content"]["application/json"]["schema"]
        body = spec["components"]["schemas"][ref["$ref"].rsplit("/", 1)[1]]
        assert "saved_at" not in body["properties"] and "excluded" in body["properties"]
        answer = spec["paths"][path]["put"]["responses"]["200"]["content"]["application/json"]
        saved = spec["components"]["schemas"][answer["schema"]["$ref"].rsplit("/", 1)[1]]
        assert "saved_at" in saved["properties"]


def test_a_selection_takes_json_numbers_only(stack: ServiceStack,
                                             unlabeled_images: list[Path]) -> None:
    """Pydantic's lax mode would read ``false`` as 0 votes and ``"0.5"`` as a threshold;
    the schema says numbers, so those are 422s (schemathesis found them), while an
    integer threshold, a whole-number count and null are numbers as JSON has them."""
    job = stack.submit(unlabeled_images[:1], teacher="shapes", tta="identity")
    stack.wait_job(job["id"])
    url = f"/jobs/{job['id']}/selection"
    with stack.client() as c:
        for bad in ({"min_votes": False}, {"keypoint_threshold": "0.5"},
                    {"score_thresholds": {"1": True}}, {"accepted": {"a.png": ["0"]}},
                    {"min_votes": 2.5}):
            answer = c.put(url, json=bad)
            assert answer.status_code == 422, (bad, answer.text)
            assert next(iter(bad)) in answer.json()["detail"]["message"]
        good = c.put(url, json={"score_thresholds": {"1": 1, "2": None}, "min_votes": 2.0,
                                "keypoint_threshold": None})
    assert good.status_code == 200, good.text
    assert good.json()["score_thresholds"] == {"1": 1.0, "2": None}
    assert good.json()["min_votes"] == 2
