"""``distill client annotate``: a folder of images -> one COCO file, through the service.

Uploads the folder in batches (one job each, grouped under one dataset when
there are several), shows progress while polling, and downloads the result:
the job's file for one batch, the dataset's file (calibrated over all
batches) for several. A small state file next to ``--out`` records the jobs
already submitted, so an interrupted run, started again with the same
arguments, submits only what is missing and never uploads a batch twice.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from distill.errors import DistillError
from distill.fileio import write_json_atomic
from distill.images import list_images

_RESUBMIT = ("failed", "cancelled")


@dataclass
class ClientOptions:
    """What to ask the service for."""

    batch_size: int = 16
    dataset: str | None = None
    teacher: str | None = None
    tta: str | None = None
    fusion: str | None = None
    # The upload's selection knobs by their form names (score_threshold,
    # keypoint_threshold, min_votes, ignore_factor); None or absent: the service's default.
    selection: dict[str, float | int | None] = field(default_factory=dict)
    recursive: bool = False  # subfolders too; names are then paths like cam1/0001.png
    poll_s: float = 1.0
    timeout_s: float = 24 * 3600.0
    progress: bool = True


@dataclass
class ClientState:
    """The state file: the request identity and the batches submitted so far."""

    url: str
    dataset: str | None
    form: dict[str, str]
    batches: list[dict[str, Any]] = field(default_factory=list)  # {"files": [...], "job": id}

    @classmethod
    def load(cls, path: Path) -> ClientState | None:
        """The saved state, or None when there is none (or it is unreadable)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(url=data["url"], dataset=data["dataset"], form=data["form"],
                       batches=list(data["batches"]))
        except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
            return None

    def save(self, path: Path) -> None:
        """Atomic write, so that an interruption never leaves half a state file."""
        write_json_atomic(path, vars(self), indent=1)


def dataset_name_for(out: Path) -> str:
    """A new dataset name from the output file's name: what DATASET_PATTERN allows of its
    stem, then a random suffix, so that two runs never share a dataset by accident."""
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", out.stem).strip("-._")[:40] or "client"
    return f"{stem}-{uuid.uuid4().hex[:8]}"


def annotate_folder_remote(url: str, key: str | None, images: Path, out: Path,
                           options: ClientOptions) -> dict[str, Any]:
    """Runs the whole client flow; returns the downloaded COCO dict (also written to ``out``)."""
    root = Path(images)
    files = list_images(root, recursive=options.recursive)
    if not files:
        raise DistillError(f"no images (png, jpg, ...) in {str(images)!r}")
    state_path = out.with_name(out.name + ".state.json")
    asked = {"teacher": options.teacher, "tta": options.tta, "fusion": options.fusion,
             **options.selection}
    form = {k: str(v) for k, v in asked.items() if v is not None}
    state = ClientState.load(state_path)
    if state is None or state.url != url or state.form != form or (
            options.dataset and state.dataset != options.dataset):
        multi = len(files) > options.batch_size
        dataset = options.dataset or (dataset_name_for(out) if multi else None)
        state = ClientState(url=url, dataset=dataset, form=form)
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        coco = _run(url, headers, root, files, state, state_path, options)
    except httpx.TransportError as exc:  # refused, DNS, timeout: words, not a traceback
        raise DistillError(f"cannot reach the service at {url} ({type(exc).__name__}: "
                           f"{exc}); is it running? The submitted batches are remembered "
                           f"in {state_path}: rerun the same command to continue") from exc
    write_json_atomic(out, coco)
    return coco


def _run(url: str, headers: dict[str, str], root: Path, files: list[Path],
         state: ClientState, state_path: Path, options: ClientOptions) -> Any:
    """Submits what is not submitted yet, waits, downloads; the state file is saved after
    every submitted batch."""
    with httpx.Client(base_url=url, headers=headers, timeout=120.0) as http:
        _drop_resubmittable(http, state)
        submitted = {name for b in state.batches for name in b["files"]}
        pending = [p for p in files if _name(root, p) not in submitted]
        if pending and state.dataset is None and state.batches:
            raise DistillError("the folder gained images since the single-batch job was "
                               f"submitted; delete {state_path} to start over")
        for i in range(0, len(pending), options.batch_size):
            batch = pending[i:i + options.batch_size]
            job = _submit(http, root, batch, state)
            state.batches.append({"files": [_name(root, p) for p in batch], "job": job})
            state.save(state_path)
        _wait(http, state, options, total=sum(len(b["files"]) for b in state.batches))
        if len(state.batches) == 1 and state.dataset is None:
            return get_json(http, f"/jobs/{state.batches[0]['job']}/annotations")
        return get_json(http, f"/datasets/{state.dataset}/annotations")


def _name(root: Path, path: Path) -> str:
    """What the service gets as the file's name: its path relative to the folder."""
    return path.relative_to(root).as_posix()


def _submit(http: httpx.Client, root: Path, batch: list[Path], state: ClientState) -> str:
    data = dict(state.form)
    if state.dataset:
        data["dataset"] = state.dataset
    with ExitStack() as stack:
        parts = [("files", (_name(root, p), stack.enter_context(open(p, "rb")),
                            "application/octet-stream")) for p in batch]
        resp = http.post("/annotate", data=data, files=parts)
    check_response(resp, "upload")
    return str(resp.json()["id"])


def _drop_resubmittable(http: httpx.Client, state: ClientState) -> None:
    """Forgets batches whose job failed, was cancelled or vanished, so they are sent again."""
    keep = []
    for batch in state.batches:
        resp = http.get(f"/jobs/{batch['job']}")
        if resp.status_code == 404 or (resp.is_success and resp.json()["status"] in _RESUBMIT):
            continue
        check_response(resp, "status")
        keep.append(batch)
    state.batches = keep


def _wait(http: httpx.Client, state: ClientState, options: ClientOptions, total: int) -> None:
    deadline = time.monotonic() + options.timeout_s
    with tqdm(total=total, unit="img", desc="annotating", disable=not options.progress) as bar:
        while True:
            seen = failed_images = 0
            unfinished = []
            for batch in state.batches:
                job = get_json(http, f"/jobs/{batch['job']}")
                seen += job["progress"]["done"] + job["progress"]["failed"]
                failed_images += job["progress"]["failed"]
                if job["status"] in _RESUBMIT:
                    raise DistillError(f"job {job['id']} {job['status']}: {job.get('error')}; "
                                       "run the same command again to resubmit its batch")
                if job["status"] != "finished":
                    unfinished.append(job["id"])
            bar.update(seen - bar.n)
            bar.set_postfix(failed=failed_images, jobs_left=len(unfinished))
            if not unfinished:
                return
            if time.monotonic() > deadline:
                raise DistillError(f"timed out waiting for jobs {unfinished}; run the same "
                                   "command again to keep waiting")
            time.sleep(options.poll_s)


def get_json(http: httpx.Client, path: str) -> Any:
    """GET ``path``'s JSON body, or a DistillError with the service's explanation."""
    resp = http.get(path)
    check_response(resp, f"GET {path}")
    return resp.json()


def check_response(resp: httpx.Response, what: str) -> None:
    """Turns an HTTP error into a DistillError carrying the service's explanation."""
    if resp.is_success:
        return
    try:
        detail = resp.json().get("detail", resp.text)
    except (json.JSONDecodeError, AttributeError):
        detail = resp.text
    raise DistillError(f"{what} failed: HTTP {resp.status_code}: {json.dumps(detail)}")
