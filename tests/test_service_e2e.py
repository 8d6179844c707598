"""End to end through the real service: upload over HTTP, poll, download, and compare
with what ``distill annotate`` (``annotate_folder``) writes locally for the same images."""

from __future__ import annotations

import hashlib
import json
import shutil
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from pycocotools.coco import COCO

from distill.annotate import annotate_folder
from distill.checkpoint import load_checkpoint
from distill.options import InferenceOptions
from distill.pseudolabels import SelectionConfig
from tests.conftest import API_KEYS, ServiceStack

BATCH = 2  # the live service's worker batch size; the local run must batch alike


def _local(teacher: Path, images: list[Path], tmp: Path, tta: str,
           selection: SelectionConfig | None = None) -> dict[str, Any]:
    folder = tmp / "local-images"
    folder.mkdir(exist_ok=True)
    for p in images:
        shutil.copy(p, folder / p.name)
    out = tmp / "local.json"
    annotate_folder(teacher, folder, out, options=InferenceOptions(tta=tta, batch_size=BATCH),
                    selection=selection, progress=False)
    data: dict[str, Any] = json.loads(out.read_text())
    return data


def _assert_same_labels(served: dict[str, Any], local: dict[str, Any]) -> None:
    for key in ("images", "annotations", "categories"):
        assert served[key] == local[key], key
    for key in ("thresholds", "transforms", "tta", "selection", "errors", "teacher"):
        assert served["info"][key] == local["info"][key], key
    # Box fusion never runs on the keypoint path, so neither file claims one.
    assert "fusion" not in served["info"] and "fusion" not in local["info"]


def _pycocotools(coco: dict[str, Any], tmp: Path) -> COCO:
    path = tmp / f"served-{uuid.uuid4().hex[:6]}.json"
    path.write_text(json.dumps(coco))
    api = COCO(str(path))
    assert sorted(api.getImgIds()) == list(range(1, len(coco["images"]) + 1))
    for ann in api.loadAnns(api.getAnnIds()):
        assert len(ann["keypoints"]) == 3 * len(coco["categories"][0]["keypoints"])
        assert ann["iscrowd"] == 0 and "score" in ann
    return api


def test_health_readiness_teachers_and_openapi(live_service: ServiceStack,
                                               teacher_checkpoint: Path) -> None:
    with live_service.client(key=None) as anon:
        assert anon.get("/healthz").json() == {"status": "ok"}
        ready = anon.get("/readyz")
        assert ready.status_code == 200 and ready.json()["workers"] == 1
        spec = anon.get("/openapi.json").json()
    for path in ("/annotate", "/jobs", "/jobs/{job_id}", "/jobs/{job_id}/annotations",
                 "/datasets/{name}/annotations", "/teachers", "/healthz", "/readyz"):
        assert path in spec["paths"], path
    assert any(s.get("scheme") == "bearer" for s in spec["components"]["securitySchemes"].values())
    with live_service.client() as c:
        teachers = c.get("/teachers").json()["teachers"]
    assert len(teachers) == 1
    card, _, _ = load_checkpoint(teacher_checkpoint)
    served = teachers[0]["card"]
    digest = hashlib.sha256(teacher_checkpoint.read_bytes()).hexdigest()
    assert teachers[0]["sha256"] == served["provenance"]["sha256"] == digest
    # Registered under its file stem (the one-teacher setting), with its worker beside it.
    assert teachers[0]["name"] == "teacher" and teachers[0]["task"] == "keypoints"
    assert [w["sha256"] for w in teachers[0]["workers"]] == [digest]
    assert {k: v for k, v in served.items() if k != "provenance"} == \
        {k: v for k, v in card.to_dict().items() if k != "provenance"}


def test_job_output_equals_local_annotate(live_service: ServiceStack, teacher_checkpoint: Path,
                                          unlabeled_images: list[Path], tmp_path: Path) -> None:
    images = unlabeled_images[:4]
    accepted = live_service.submit(images, tta="flip")
    assert accepted["status"] == "queued" and accepted["images"] == 4
    assert [f["name"] for f in accepted["files"]] == [p.name for p in images]
    job = live_service.wait_job(accepted["id"])
    assert job["progress"] == {"done": 4, "failed": 0, "total": 4}
    assert job["attempts"] == 1 and job["errors"] == [] and job["finished_at"]
    with live_service.client() as c:
        served = c.get(accepted["links"]["annotations"]).json()
        reselected = c.get(accepted["links"]["annotations"],
                           params={"score_thresh": 0.3, "keypoint_thresh": 0.5}).json()
        listed = c.get("/jobs").json()["jobs"]
        # A local store has no presigned URLs: redirect=true serves the file itself.
        local_store = c.get(accepted["links"]["annotations"], params={"redirect": "true"})
    assert accepted["id"] in [j["id"] for j in listed]
    assert local_store.status_code == 200 and local_store.json() == served
    _pycocotools(served, tmp_path)
    local = _local(teacher_checkpoint, images, tmp_path, "flip")
    _assert_same_labels(served, local)
    assert served["info"]["tta"] == "flip" and len(served["info"]["transforms"]) == 2

    # New thresholds come from the stored raw predictions, exactly as a local re-selection.
    relocal = _local(teacher_checkpoint, images, tmp_path, "flip",
                     SelectionConfig(score_threshold=0.3, keypoint_threshold=0.5))
    _assert_same_labels(reselected, relocal)
    assert reselected["info"]["thresholds"] == {"score": {"1": 0.3}, "keypoint": 0.5,
                                                "ignore": {}}
    # The job's status carries the selection record of its calibrated file.
    assert job["categories_report"] == served["info"]["categories_report"]
    assert job["categories_report"]["1"]["kept"] == job["annotations"]


def test_ignore_regions_on_request(live_service: ServiceStack, teacher_checkpoint: Path,
                                   unlabeled_images: list[Path], tmp_path: Path) -> None:
    images = unlabeled_images[:4]
    accepted = live_service.submit(images, tta="flip", ignore_factor=3)
    job = live_service.wait_job(accepted["id"])
    with live_service.client() as c:
        served = c.get(accepted["links"]["annotations"]).json()
        refused = c.post("/annotate", data={"ignore_factor": "0.5"},
                         files=[("files", (images[0].name, images[0].read_bytes(),
                                           "image/png"))])
    assert refused.status_code == 422
    assert "ignore_factor" in refused.json()["detail"]["message"]
    local = _local(teacher_checkpoint, images, tmp_path, "flip",
                   SelectionConfig(ignore_factor=3.0))
    crowd = [a for a in served["annotations"] if a["iscrowd"]]
    assert crowd and len(crowd) == sum(a["iscrowd"] for a in local["annotations"])
    assert job["annotations"] == len(served["annotations"]) - len(crowd)
    assert job["categories_report"]["1"]["ignored"] == len(crowd)


def test_dataset_is_calibrated_over_all_its_batches(live_service: ServiceStack,
                                                    teacher_checkpoint: Path,
                                                    unlabeled_images: list[Path],
                                                    tmp_path: Path) -> None:
    images = unlabeled_images[4:10]
    dataset = f"ds-{uuid.uuid4().hex[:8]}"
    first = live_service.submit(images[:2], dataset=dataset)
    second = live_service.submit(images[2:], dataset=dataset)
    for job in (first, second):
        live_service.wait_job(job["id"])
    with live_service.client() as c:
        served = c.get(f"/datasets/{dataset}/annotations").json()
        in_dataset = c.get("/jobs", params={"dataset": dataset}).json()["jobs"]
    with live_service.client(API_KEYS[1]) as other:
        assert other.get(f"/datasets/{dataset}/annotations").status_code == 404
    assert {j["id"] for j in in_dataset} == {first["id"], second["id"]}
    _pycocotools(served, tmp_path)
    # One calibration over all six images: the same file as annotating them in one go.
    _assert_same_labels(served, _local(teacher_checkpoint, images, tmp_path, "identity"))
    assert sorted(served["info"]["jobs"]) == sorted([first["id"], second["id"]])


def test_corrupt_image_is_a_per_image_error(live_service: ServiceStack,
                                            unlabeled_images: list[Path], tmp_path: Path) -> None:
    # Its header is intact, so upload validation (header + pixel count) accepts it; the
    # worker's full decode fails, and only this image is lost.
    data = unlabeled_images[0].read_bytes()
    broken = tmp_path / "broken.png"
    broken.write_bytes(data[: len(data) // 2])
    accepted = live_service.submit([unlabeled_images[0], broken, unlabeled_images[1]])
    job = live_service.wait_job(accepted["id"])
    assert job["progress"] == {"done": 2, "failed": 1, "total": 3}
    assert [e["file_name"] for e in job["errors"]] == ["broken.png"]
    assert "truncated" in job["errors"][0]["error"] or "corrupt" in job["errors"][0]["error"]
    with live_service.client() as c:
        coco = c.get(accepted["links"]["annotations"]).json()
    assert [i["file_name"] for i in coco["images"]] == sorted(
        [unlabeled_images[0].name, unlabeled_images[1].name])
    assert [e["file_name"] for e in coco["info"]["errors"]] == ["broken.png"]


def test_downloads_in_every_export_format(live_service: ServiceStack,
                                          unlabeled_images: list[Path]) -> None:
    import io
    import zipfile

    from distill.exports.coco import to_cvat
    from distill.exports.formats import EXPORT_FORMATS
    from distill.exports.yolo import read_yolo

    job = live_service.submit(unlabeled_images[:2], dataset="exports")
    live_service.wait_job(job["id"])
    with live_service.client() as c:
        plain = c.get(f"/jobs/{job['id']}/annotations")
        got = {fmt: c.get(f"/jobs/{job['id']}/annotations", params={"format": fmt})
               for fmt in EXPORT_FORMATS}
        studio = c.get("/datasets/exports/annotations", params={"format": "labelstudio"})
        bad = c.get(f"/jobs/{job['id']}/annotations", params={"format": "voc"})
        spec = c.get("/openapi.json").json()
    coco = plain.json()
    assert plain.content == got["coco"].content  # coco is the default
    for fmt, resp in got.items():  # media type and file name from the format table
        assert resp.status_code == 200, fmt
        assert resp.headers["content-type"].startswith(EXPORT_FORMATS[fmt].media_type), fmt
        assert resp.headers["content-disposition"] == (
            f'attachment; filename="{job["id"]}{EXPORT_FORMATS[fmt].suffix}"'), fmt
        assert resp.headers["x-distill-selection"] == "job", fmt
    assert got["cvat"].json() == to_cvat(coco)
    yolo = got["yolo"]
    names = zipfile.ZipFile(io.BytesIO(yolo.content)).namelist()
    assert "data.yaml" in names and len([n for n in names if n.startswith("labels/")]) == 2
    back = read_yolo(yolo.content, coco)
    assert len(back) == len(coco["annotations"])
    for got_ann, want in zip(sorted(back, key=lambda a: a["bbox"]),
                             sorted(coco["annotations"], key=lambda a: a["bbox"]), strict=True):
        assert max(abs(g - w) for g, w in zip(got_ann["bbox"], want["bbox"], strict=True)) < 0.01
    tasks = studio.json()
    assert studio.status_code == 200 and len(tasks) == 2
    assert "<View>" in unquote(studio.headers["x-labelstudio-config"])
    assert bad.status_code == 422 and "format" in bad.json()["detail"]["message"]
    # The API's allowed values and description come from the same table.
    for path in ("/jobs/{job_id}/annotations", "/datasets/{name}/annotations"):
        param = next(p for p in spec["paths"][path]["get"]["parameters"]
                     if p["name"] == "format")
        schema = param["schema"]
        if "$ref" in schema:
            schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
        assert schema["enum"] == list(EXPORT_FORMATS), path
        assert all(f"{name}:" in param["description"] for name in EXPORT_FORMATS), path
