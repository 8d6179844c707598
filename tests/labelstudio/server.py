"""Label Studio for the backend's acceptance tests: the server, the project configs and
the calls the tests make through Label Studio's own API (as its UI does)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from tests.conftest import API_KEYS

# sentry-sdk 3 drops options Label Studio 1.23.2 passes (it then fails to start): pin
# the 2.x line it was released against.
LABEL_STUDIO = ["label-studio==1.23.2", "sentry-sdk>=2,<3"]
TOKEN = "distill-test-token-0123456789"
BOX_CONFIG = """<View>
  <Image name="image" value="$image"/>
  <RectangleLabels name="label" toName="image">
    <Label value="Person"/><Label value="Ball"/><Label value="Flyer" predicted_values="kite"/>
  </RectangleLabels>
</View>"""
KEYPOINTS = ["nose", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
             "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee", "right_knee",
             "left_ankle", "right_ankle"]
POINT_LABELS = "".join(f'<Label value="P{j}" predicted_values="person" model_index="{j}"/>'
                       for j in range(len(KEYPOINTS)))
KEYPOINT_CONFIG = f"""<View>
  <Image name="photo" value="$img"/>
  <RectangleLabels name="body" toName="photo"><Label value="person"/></RectangleLabels>
  <KeyPointLabels name="joints" toName="photo">{POINT_LABELS}</KeyPointLabels>
</View>"""
# The box project's bulk: 100 uploads + 4 local files + 1 refused URL in one /predict
# (about 15 s of a tiny teacher's flip passes on 2 busy cores, and 15 s more for Label
# Studio to store them).
BOX_UPLOADS, BOX_LOCAL, KP_UPLOADS = 100, 4, 6
# Jobs of at least this many images are remembered as calibrations; smaller /predict
# requests (the keypoint project's 8 tasks, a single task) are selected with them.
CALIBRATE_MIN = 10


@dataclass
class LabelStudioServer:
    """A running Label Studio and the folder its local storage serves."""

    url: str
    files: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=180,
                            headers={"Authorization": f"Token {TOKEN}"})


def new_project(ls: httpx.Client, title: str, config: str) -> int:
    r = ls.post("/api/projects", json={"title": title, "label_config": config})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def make_tasks(ls: LabelStudioServer, project: int, uploads: list[Path], local: list[Path],
           key: str, extra: list[dict[str, str]]) -> list[int]:
    """Tasks from uploaded files, from local storage files and from ``extra`` data."""
    with ls.client() as c:
        files = [(f"file{n}", (f"{n:03d}_{p.name}", p.read_bytes(), "image/png"))
                 for n, p in enumerate(uploads)]
        assert c.post(f"/api/projects/{project}/import", files=files).status_code == 201
        if local:
            folder = ls.files / f"p{project}"
            folder.mkdir()
            for p in local:
                shutil.copy(p, folder / p.name)
            r = c.post("/api/storages/localfiles", json={
                "project": project, "path": str(folder), "use_blob_urls": True})
            assert r.status_code == 201, r.text
        data = [{key: f"/data/local-files/?d=p{project}/{p.name}"} for p in local] + extra
        if data:
            assert c.post(f"/api/projects/{project}/import", json=data).status_code == 201
        tasks = c.get("/api/tasks", params={"project": project, "page_size": 1000}).json()
    return sorted(int(t["id"]) for t in tasks["tasks"])


def connect(ls: LabelStudioServer, project: int, url: str, *, interactive: bool = False
            ) -> int:
    """Connects the backend at ``url`` to the project; returns the backend's id."""
    with ls.client() as c:
        r = c.post("/api/ml", json={"project": project, "url": url, "title": "distill",
                                    "auth_method": "BASIC_AUTH", "basic_auth_user": "ls",
                                    "basic_auth_pass": API_KEYS[0],
                                    "is_interactive": interactive})
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def retrieve(ls: LabelStudioServer, project: int, ids: list[int]) -> None:
    """The Data Manager's "Retrieve predictions" for the selected tasks."""
    with ls.client() as c:
        r = c.post("/api/dm/actions", params={"id": "retrieve_tasks_predictions",
                                              "project": project},
                   json={"selectedItems": {"all": False, "included": ids}})
    assert r.status_code == 200, r.text


def predictions_of(ls: LabelStudioServer, ids: list[int]) -> dict[int, list[dict[str, Any]]]:
    with ls.client() as c:
        return {i: c.get("/api/predictions", params={"task": i}).json() for i in ids}


def check_scores(prediction: dict[str, Any]) -> list[dict[str, Any]]:
    regions: list[dict[str, Any]] = prediction["result"]
    assert isinstance(prediction["score"], float)
    assert all(0.0 <= r["score"] <= 1.0 for r in regions)
    return regions
