"""Images referenced in place: the safety rules, hostile references, and a by-reference
dataset on a bucket (moto's server) next to the same images uploaded.

Only loopback traffic: the "internal hosts" are loopback addresses and names, and
an allow-list that names a loopback address explicitly stands for a trusted
internal server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobs.plan_records import PlanRecord
from jobs.references import ReferenceError, References, ReferencesRefusedError
from tests.conftest import API_KEYS, REPO, S3_CREDENTIALS, S3Server, ServiceStack, wait_for

ALLOW = ["s3://team-bucket/images/", "https://images.example.com/"]


@pytest.mark.parametrize("uri, reason", [
    ("file:///etc/passwd", "only s3:// and https://"),
    ("ftp://images.example.com/a.png", "only s3:// and https://"),
    ("gs://team-bucket/images/a.png", "only s3:// and https://"),
    ("s3://other-bucket/images/a.png", "not under an allowed source"),
    ("s3://team-bucket/private/a.png", "not under an allowed source"),
    ("s3://team-bucket/images/../private/a.png", "not a valid s3:// URI"),
    ("https://images.example.com.evil.test/a.png", "not under an allowed source"),
    ("https://evil.test/?u=https://images.example.com/", "not under an allowed source"),
    ("http://images.example.com/a.png", "not under an allowed source"),
    ("https://169.254.169.254/latest/meta-data/", "not under an allowed source"),
    ("https://user:pw@images.example.com/a.png", "not under an allowed source"),
])
def test_hostile_references_are_refused(uri: str, reason: str) -> None:
    with pytest.raises(ReferenceError, match=reason.replace("/", ".")):
        References(ALLOW).check(uri)


def test_no_allow_list_refuses_everything_and_allowed_ones_pass() -> None:
    with pytest.raises(ReferencesRefusedError, match="DISTILL_REFERENCE_ALLOW is empty"):
        References([]).check("s3://team-bucket/images/a.png")
    assert References(ALLOW).check("s3://team-bucket/images/sub/a.png")


def test_names_resolving_to_internal_addresses_are_refused() -> None:
    # A name on the allow-list that resolves to loopback is refused; the address itself,
    # named on the list, is an explicit choice.
    with pytest.raises(ReferenceError, match=r"internal address 127\.0\.0\.1"):
        References(["http://localhost:9/"]).check("http://localhost:9/a.png")
    assert References(["http://127.0.0.1:9/"]).check("http://127.0.0.1:9/a.png")


class _Server:
    """A loopback HTTP server: /img.png is an image, /to?u=URL redirects to URL."""

    def __init__(self, image: bytes) -> None:
        image_bytes = image

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path.startswith("/to?u="):
                    self.send_response(302)
                    self.send_header("Location", self.path[len("/to?u="):])
                    self.end_headers()
                elif self.path == "/img.png":
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(image_bytes)))
                    self.end_headers()
                    self.wfile.write(image_bytes)
                else:
                    self.send_response(404)
                    self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()


@pytest.fixture(scope="module")
def web(unlabeled_images: list[Path]) -> Iterator[_Server]:
    server = _Server(unlabeled_images[0].read_bytes())
    yield server
    server.httpd.shutdown()


def test_redirects_are_checked_at_every_hop(web: _Server, tmp_path: Path,
                                            unlabeled_images: list[Path]) -> None:
    base = f"http://127.0.0.1:{web.port}"
    refs = References([f"{base}/"], max_bytes=10_000_000)
    refs.fetch(f"{base}/to?u={base}/img.png", tmp_path / "ok")
    assert (tmp_path / "ok").read_bytes() == unlabeled_images[0].read_bytes()
    for target, reason in ((f"http://localhost:{web.port}/img.png", "not under an allowed"),
                           (f"http://127.0.0.2:{web.port}/img.png", "not under an allowed"),
                           ("file:///etc/passwd", "only s3:// and https://")):
        with pytest.raises(ReferenceError, match=reason.replace("/", ".")):
            refs.fetch(f"{base}/to?u={target}", tmp_path / "no")
    assert not (tmp_path / "no").exists()
    with pytest.raises(ReferenceError, match="more than the limit"):
        References([f"{base}/"], max_bytes=100).fetch(f"{base}/img.png", tmp_path / "big")
    with pytest.raises(ReferenceError, match="HTTP 404"):
        refs.fetch(f"{base}/missing.png", tmp_path / "gone")


# ---- a by-reference dataset on a bucket -------------------------------------------------

@pytest.fixture(scope="module")
def refs_stack(make_stack: Callable[..., ServiceStack], s3_server: S3Server, web: _Server,
               unlabeled_images: list[Path]) -> Iterator[tuple[ServiceStack, str]]:
    store, team = s3_server.bucket(), s3_server.bucket()
    client = s3_server.client()
    for n in range(30):  # 30 objects: the 12 images, some under several keys
        client.put_object(Bucket=team, Key=f"set/cam{n % 2}/img_{n:02d}.png",
                          Body=unlabeled_images[n % 12].read_bytes())
    client.put_object(Bucket=team, Key="set/notes.txt", Body=b"not an image, not listed")
    client.put_object(Bucket=team, Key="set/broken.png", Body=b"not an image after all")
    stack = make_stack(api=False, workers=0, environ=S3_CREDENTIALS, batch_size=1,
                       storage=f"s3://{store}/svc", s3_endpoint_url=s3_server.endpoint,
                       reference_allow=f"s3://{team}/set/,s3://{team}-gone/,"
                                       f"http://127.0.0.1:{web.port}/",
                       reference_batch_size=8, review_max_images=20)
    stack.start_api()
    stack.start_worker(data_dir=str(stack.root / "worker-data"))
    yield stack, team
    stack.close()


def _post(stack: ServiceStack, body: dict[str, Any]) -> Any:
    with stack.client() as c:
        return c.post("/annotate", json=body)


def test_hostile_requests_get_a_clear_4xx(refs_stack: tuple[ServiceStack, str],
                                          web: _Server) -> None:
    stack, team = refs_stack
    missing = f"s3://{team}x/set/"
    cases = [({"images": ["file:///etc/passwd"]}, 422, "only s3://"),
             ({"images": [f"s3://{team}/elsewhere/a.png"]}, 422, "not under an allowed"),
             ({"images": ["http://169.254.169.254/latest/"]}, 422, "not under an allowed"),
             ({"images": [f"http://localhost:{web.port}/img.png"]}, 422, "not under"),
             ({"source": missing}, 422, "not under an allowed"),
             ({"source": f"s3://{team}/set/", "images": ["x"]}, 422, "either source"),
             ({"source": f"s3://{team}/set/", "teacher": "nobody"}, 422, "nobody")]
    for body, code, words in cases:
        resp = _post(stack, body)
        assert resp.status_code == code, (body, resp.text)
        assert words in resp.json()["detail"]["message"], (body, resp.text)
    # An allow-listed bucket that does not exist is named as such.
    gone = _post(stack, {"source": f"s3://{team}-gone/x/"})
    assert gone.status_code == 422 and "does not exist" in gone.json()["detail"]["message"]
    with stack.client() as c:
        assert c.get("/plans/" + "0" * 32).status_code == 404


def test_a_source_prefix_becomes_one_dataset_like_the_same_uploads(
        refs_stack: tuple[ServiceStack, str], unlabeled_images: list[Path]) -> None:
    stack, team = refs_stack
    options = {"score_threshold": 0.05, "tta": "identity"}
    resp = _post(stack, {"source": f"s3://{team}/set/", "recursive": True,
                         "dataset": "by-ref", **options})
    assert resp.status_code == 202, resp.text
    plan = resp.json()
    assert resp.headers["location"] == f"/plans/{plan['id']}"
    with stack.client() as c:
        done = wait_for(lambda: (p := c.get(f"/plans/{plan['id']}").json())["state"]["status"]
                        == "finished" and p, 120, "the plan to finish")
    assert done["state"]["listed"] == 31 and done["state"]["skipped"] == 1
    assert done["state"]["jobs"] == 4  # 31 images in batches of 8

    def all_finished() -> Any:
        with stack.client() as c:
            jobs = c.get("/jobs", params={"dataset": "by-ref"}).json()["jobs"]
        return len(jobs) == 4 and all(j["status"] == "finished" for j in jobs) and jobs
    jobs = wait_for(all_finished, 180, "the batches to finish", interval=0.5)
    errors = [e for j in jobs for e in j["errors"]]
    assert [e["file_name"] for e in errors] == ["broken.png"]
    with stack.client() as c:
        # The last batch's worker writes the dataset's file just after the batch says it
        # finished: until then a download is built from the logs (another date_created).
        wait_for(lambda: c.get("/datasets/by-ref/annotations", params={"redirect": "true"}
                               ).status_code == 307, 30, "the dataset's file to be written")
        coco = c.get("/datasets/by-ref/annotations").json()
        image = c.get(f"/jobs/{jobs[0]['id']}/images/0", follow_redirects=False)
    assert len(coco["images"]) == 30
    assert image.status_code == 307 and team in image.headers["location"]
    # The dataset's file was written once when its last batch ended: served from the store
    # (or by a presigned URL); other thresholds are re-selected from the logs.
    with stack.client() as c:
        moved = c.get("/datasets/by-ref/annotations", params={"redirect": "true"})
        assert moved.status_code == 307 and "Signature" in moved.headers["location"]
        assert httpx.get(moved.headers["location"]).json() == coco
        # A job's file likewise.
        job_file = c.get(f"/jobs/{jobs[0]['id']}/annotations").json()
        moved = c.get(f"/jobs/{jobs[0]['id']}/annotations", params={"redirect": "true"})
        assert moved.status_code == 307 and "Signature" in moved.headers["location"]
        assert httpx.get(moved.headers["location"]).json() == job_file
        strict = c.get("/datasets/by-ref/annotations", params={"score_threshold": 0.9})
        # 31 images are more than this review page takes (a sample of 20 is shown, with
        # the thresholds of the whole dataset's file); one batch of 8 is not.
        sample = c.get("/datasets/by-ref/review")
        one_batch = c.get(f"/jobs/{jobs[0]['id']}/review")
    assert sample.status_code == 200, sample.text
    assert sample.json()["sample"] == {"images": 20, "of": 31, "decided_elsewhere": 0}
    assert len(sample.json()["images"]) == 20
    assert sample.json()["rule"]["score"] == coco["info"]["thresholds"]["score"]
    assert one_batch.status_code == 200 and one_batch.json()["images"]
    assert one_batch.json()["sample"] is None
    # A dataset larger than a review reads on each load: a 422 that says what to do.
    stack.stop_api()
    stack.start_api(review_max_dataset_images="30")
    with stack.client() as c:
        refused = c.get("/datasets/by-ref/review")
    stack.stop_api()
    stack.start_api()
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"]["limit"] == 30 and refused.json()["detail"]["images"] == 31
    assert "GET /datasets/by-ref/annotations" in refused.json()["detail"]["message"]
    assert strict.headers["x-distill-selection"] == "query"
    assert len(strict.json()["annotations"]) < len(coco["annotations"])

    # The same images uploaded give the same pseudo-labels.
    uploaded = stack.submit(unlabeled_images[:12], dataset="uploaded", **options)
    stack.wait_job(uploaded["id"], timeout=120)
    with stack.client() as c:
        mine = c.get(f"/jobs/{uploaded['id']}/annotations").json()

    def boxes(data: dict[str, Any], file_name: str) -> list[tuple[Any, ...]]:
        (img,) = [i for i in data["images"] if i["file_name"] == file_name]
        return sorted((tuple(a["bbox"]), a["score"]) for a in data["annotations"]
                      if a["image_id"] == img["id"])
    for n in range(30):
        assert boxes(coco, f"cam{n % 2}/img_{n:02d}.png") == \
            boxes(mine, unlabeled_images[n % 12].name), n
    # No image bytes on the API's or the worker's local disk, once the worker is done with
    # the job (its state says finished before the worker has written the dataset's file
    # and left the job's cache folder).
    wait_for(lambda: not [p for p in stack.root.rglob("*") if p.suffix in (".png", ".img")],
             30, "the worker to clear its cache")


def test_the_client_follows_a_prefix_and_a_list_and_resumes(
        refs_stack: tuple[ServiceStack, str], tmp_path: Path) -> None:
    """``distill client annotate s3://...`` (a real process): one plan, progress from
    GET /plans and GET /datasets/{name}, the dataset's file; a rerun sends no second plan."""
    stack, team = refs_stack
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DISTILL_", "AWS_"))}

    def client(spec: str, out: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "distill.cli", "client", "annotate", spec, "--url",
             stack.url, "--key", API_KEYS[0], "--out", str(out), "--tta", "identity",
             "--score-threshold", "0.05", "--quiet", "--poll", "0.2"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)

    out = tmp_path / "cam0.json"
    first = client(f"s3://{team}/set/cam0/", out)
    assert first.returncode == 0, first.stderr[-3000:]
    coco = json.loads(out.read_text())
    assert sorted(i["file_name"] for i in coco["images"]) == [
        f"img_{n:02d}.png" for n in range(0, 30, 2)]
    state = json.loads(out.with_name("cam0.json.state.json").read_text())
    with stack.client() as c:
        summary = c.get(f"/datasets/{state['dataset']}").json()
        plan = c.get(f"/plans/{state['plan']}", params={"batches": "true"}).json()
        assert c.get(f"/plans/{state['plan']}").json()["batches"] is None  # only when asked
        assert c.get("/datasets/no-such-set").status_code == 404
    assert plan["batches"] == {"statuses": {"finished": 2},
                               "images": {"done": 15, "failed": 0, "total": 15}}
    assert summary["jobs"] == 2 == len(coco["info"]["jobs"])  # 15 images, batches of 8
    assert summary["statuses"] == {"finished": 2}
    assert summary["images"] == {"done": 15, "failed": 0, "total": 15}
    again = client(f"s3://{team}/set/cam0/", out)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(out.with_name("cam0.json.state.json").read_text()) == state
    assert json.loads(out.read_text()) == coco
    with stack.client() as c:
        assert c.get(f"/datasets/{state['dataset']}").json()["jobs"] == 2
    # A batch job of the plan lost (deleted here): a rerun sends the plan again, into the
    # same dataset, and it annotates that batch's images only: the images the dataset
    # holds, annotated by a finished job of the same checkpoint, are left out (jobs.held).
    state_file = out.with_name("cam0.json.state.json")
    lost = coco["info"]["jobs"][0]
    with stack.client() as c:
        lost_images = c.get(f"/jobs/{lost}").json()["progress"]["total"]
        assert c.delete(f"/jobs/{lost}").status_code == 200
    redone = client(f"s3://{team}/set/cam0/", out)
    assert redone.returncode == 0, redone.stderr[-3000:]
    redone_plan = json.loads(state_file.read_text())["plan"]
    assert redone_plan != state["plan"]
    with stack.client() as c:
        listing = c.get(f"/plans/{redone_plan}", params={"batches": "true"}).json()
    assert (listing["state"]["held"], listing["state"]["jobs"]) == (15 - lost_images, 1)
    assert listing["batches"]["images"]["done"] == lost_images
    merged = json.loads(out.read_text())
    assert len(merged["info"]["jobs"]) == 2 and lost not in merged["info"]["jobs"]
    assert merged["categories"] == coco["categories"]
    assert _by_name(merged) == _by_name(coco)  # the same pseudo-labels, redone or kept
    # A plan the service no longer has is sent again too; here every image is held, so
    # it makes no job, and the dataset's file stays as it was.
    state_file.write_text(json.dumps({**state, "plan": "0" * 32}))
    resent = client(f"s3://{team}/set/cam0/", out)
    assert resent.returncode == 0, resent.stderr[-3000:]
    resent_plan = json.loads(state_file.read_text())["plan"]
    assert resent_plan not in (state["plan"], redone_plan, "0" * 32)
    with stack.client() as c:
        listing = c.get(f"/plans/{resent_plan}").json()["state"]
    assert (listing["listed"], listing["held"], listing["jobs"]) == (15, 15, 0)
    assert json.loads(out.read_text()) == merged

    listed = tmp_path / "uris.txt"
    listed.write_text(f"# two of them\ns3://{team}/set/cam1/img_01.png\n\n"
                      f"s3://{team}/set/cam1/img_03.png  # and a comment\n")
    two = client(str(listed), tmp_path / "two.json")
    assert two.returncode == 0, two.stderr[-3000:]
    names = [i["file_name"] for i in json.loads((tmp_path / "two.json").read_text())["images"]]
    assert sorted(names) == ["set/cam1/img_01.png", "set/cam1/img_03.png"]  # their keys
    refused = client(f"s3://{team}/elsewhere/", tmp_path / "no.json")
    assert refused.returncode != 0 and "not under an allowed" in refused.stderr


def _by_name(coco: dict[str, Any]) -> dict[str, list[tuple[Any, ...]]]:
    """Each image's annotations (box, score, category), whatever the ids."""
    names = {i["id"]: i["file_name"] for i in coco["images"]}
    found: dict[str, list[tuple[Any, ...]]] = {n: [] for n in names.values()}
    for a in coco["annotations"]:
        found[names[a["image_id"]]].append((tuple(a["bbox"]), a["score"], a["category_id"]))
    return {n: sorted(v) for n, v in found.items()}


def test_a_restarted_plan_makes_no_batch_twice(s3_server: S3Server, redis_server: Any,
                                               tmp_path: Path) -> None:
    from redis import Redis

    from jobs.plan_records import PlanState, load_plan, plan_key, save_plan
    from jobs.plans import run_plan
    from jobs.records import JobRequest, utcnow
    from jobs.store import JobStore

    team = s3_server.bucket()
    for n in range(10):
        s3_server.client().put_object(Bucket=team, Key=f"p/{n}.png", Body=b"x")
    refs = References([f"s3://{team}/"])
    refs._client = s3_server.client()
    store = JobStore(tmp_path / "store")
    plan_id = "ab" * 16
    save_plan(store, PlanRecord(
        id=plan_id, owner="o", dataset="d", created_at=utcnow(), teacher="t",
        request=JobRequest(tta="identity", fusion="vote"), source=f"s3://{team}/p/",
        batch_size=3, max_images=100, job_timeout_s=60, retries=0))
    redis = Redis.from_url(redis_server.url)
    assert run_plan(store, redis, "plans-test", plan_id, refs).jobs == 4
    made = {r.id for r in store.list_jobs()}
    # As if the worker died after storing its state at the first batch.
    store.storage.put(plan_key(plan_id, "state.json"), PlanState(
        status="running", batches=1, jobs=1, listed=3, cursor="p/2.png"
    ).model_dump_json().encode())
    again = run_plan(store, redis, "plans-test", plan_id, refs)
    assert (again.jobs, again.listed, again.status) == (4, 10, "finished")
    assert {r.id for r in store.list_jobs()} == made
    assert len(store.index_ids("o", "d")) == 4  # no second index entry either
    assert load_plan(store, plan_id) is not None
