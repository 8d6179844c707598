"""``distill client annotate s3://bucket/prefix/`` (or a file of URIs): images the service
reads where they are, through a by-reference request.

The client sends one JSON request (``POST /annotate``: the prefix, or the URIs), which
the service stores as a plan that a worker splits into batch jobs of one dataset. It
then follows the plan (``GET /plans/{id}?batches=true``: images listed, its batch jobs by
status and their images) with a progress bar, and downloads the dataset's COCO file, calibrated
over all its batches, once every batch has ended. Nothing is uploaded and nothing is
listed here: the client never needs the bucket's credentials.

A small state file next to ``--out`` keeps the plan and the dataset name, so a rerun of
the same command keeps waiting on the same plan instead of sending a second one. A plan
that failed, was cancelled, is gone, or finished with batch jobs that failed is sent
again into the same dataset by the rerun; its images are then annotated again (those of
the batches that had finished included), and the dataset's file keeps one annotation
per image name, from the oldest finished job.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

from distill.errors import DistillError
from distill.fileio import write_json_atomic
from distill.images import IMAGE_SUFFIXES
from jobs.records import JobStatus
from service.client import ClientOptions, check_response, dataset_name_for, get_json

log = logging.getLogger(__name__)
MIN_POLL_S = 2.0  # a plan's status reads each of its jobs' state: not more often than this
_OVER = {str(s) for s in JobStatus if s.is_terminal}
_LOST = (str(JobStatus.FAILED), str(JobStatus.CANCELLED))


def is_reference(spec: str) -> bool:
    """Whether ``distill client annotate``'s argument names images in place: an ``s3://``
    prefix, an ``http(s)://`` URI, or a text file listing such URIs."""
    return spec.startswith(("s3://", "http://", "https://")) or Path(spec).is_file()


def reference_body(spec: str, options: ClientOptions) -> dict[str, Any]:
    """The JSON request for ``spec`` (a prefix, one URI, or a file of URIs, one per line,
    ``#`` comments) with the options' teacher, preset, fusion and selection."""
    if spec.startswith("s3://") and spec.endswith("/"):
        body: dict[str, Any] = {"source": spec, "recursive": options.recursive}
    elif spec.startswith(("s3://", "http://", "https://")):
        body = {"images": [spec]}
    else:
        body = {"images": _listed(Path(spec))}
    asked = {"teacher": options.teacher, "tta": options.tta, "fusion": options.fusion,
             **options.selection}
    return {**body, **{k: v for k, v in asked.items() if v is not None}}


def _listed(path: Path) -> list[str]:
    """The URIs a text file lists (one per line, ``#`` comments)."""
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise DistillError(f"{path} is an image: give the folder that holds it (uploaded), "
                           "or a text file of s3:// / https:// URIs")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DistillError(f"{path} is not a text file of URIs (one per line)") from exc
    uris = [u for u in (line.split("#", 1)[0].strip() for line in lines) if u]
    if not uris:
        raise DistillError(f"{path} lists no URIs (one s3:// or https:// URI per line)")
    return uris


@dataclass
class PlanState:
    """The state file: the request, the dataset it fills and the plan that fills it."""

    url: str
    body: dict[str, Any]
    dataset: str
    plan: str | None = None

    @classmethod
    def load(cls, path: Path) -> PlanState | None:
        """The saved state, or None when there is none (or it is unreadable)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            return cls(url=data["url"], body=data["body"], dataset=data["dataset"],
                       plan=data["plan"])
        except (FileNotFoundError, json.JSONDecodeError, KeyError, TypeError):
            return None

    def save(self, path: Path) -> None:
        """Atomic write, so that an interruption never leaves half a state file."""
        write_json_atomic(path, vars(self), indent=1)


def annotate_references_remote(url: str, key: str | None, spec: str, out: Path,
                               options: ClientOptions) -> dict[str, Any]:
    """Runs the by-reference flow; returns the downloaded COCO dict (also written to
    ``out``)."""
    body = reference_body(spec, options)
    state_path = out.with_name(out.name + ".state.json")
    state = PlanState.load(state_path)
    if state is None or state.url != url or state.body != body or (
            options.dataset and state.dataset != options.dataset):
        state = PlanState(url=url, body=body, dataset=options.dataset or dataset_name_for(out))
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with httpx.Client(base_url=url, headers=headers, timeout=120.0) as http:
            _follow(http, state, state_path, options)
            coco = get_json(http, f"/datasets/{state.dataset}/annotations")
    except httpx.TransportError as exc:
        raise DistillError(f"cannot reach the service at {url} ({type(exc).__name__}: "
                           f"{exc}); is it running? The plan goes on there and is remembered "
                           f"in {state_path}: rerun the same command to keep waiting") from exc
    write_json_atomic(out, coco)
    return dict(coco)


def _follow(http: httpx.Client, state: PlanState, state_path: Path,
            options: ClientOptions) -> None:
    """Sends the plan unless the state holds one worth waiting on, then waits until it has
    made every batch and every batch has ended."""
    plan = _plan(http, state.plan) if state.plan else None
    if plan is None or _needs_resending(plan):
        resp = http.post("/annotate", json={**state.body, "dataset": state.dataset})
        check_response(resp, "the by-reference request")
        state.plan = str(resp.json()["id"])
        state.save(state_path)
        plan = _plan(http, state.plan)
    deadline = time.monotonic() + options.timeout_s
    with tqdm(total=0, unit="img", desc="annotating", disable=not options.progress) as bar:
        while True:
            if plan is None:
                raise DistillError(f"plan {state.plan} is gone from the service; run the same "
                                   "command again to send it again")
            listing, batches = plan["state"], plan["batches"] or {}
            if listing["status"] in _LOST:
                raise DistillError(f"plan {state.plan} {listing['status']}: "
                                   f"{listing.get('error')}; run the same command again to "
                                   "send it again into the same dataset")
            statuses: dict[str, int] = batches.get("statuses", {})
            images = batches.get("images", {"done": 0, "failed": 0, "total": 0})
            bar.total = max(listing["listed"] - listing.get("held", 0), images["total"])
            bar.update(images["done"] + images["failed"] - bar.n)
            running = sum(n for s, n in statuses.items() if s not in _OVER)
            bar.set_postfix(listing=listing["status"], failed=images["failed"],
                            jobs_left=running)
            if listing["status"] == "finished" and running == 0:
                _check_ended(state, listing, statuses)
                return
            if time.monotonic() > deadline:
                raise DistillError(f"timed out waiting for plan {state.plan}; run the same "
                                   "command again to keep waiting")
            # Each poll costs the service a read per batch job running: poll a large
            # plan a little less often (a second per 500 batch jobs).
            time.sleep(max(options.poll_s, MIN_POLL_S, listing["jobs"] / 500))
            plan = _plan(http, str(state.plan))


def _needs_resending(plan: dict[str, Any]) -> bool:
    """A plan that failed or was cancelled, or finished with batch jobs that failed, were
    cancelled or are gone (deleted, or removed by the service's retention)."""
    statuses = (plan.get("batches") or {}).get("statuses", {})
    listing = plan["state"]
    return listing["status"] in _LOST or (listing["status"] == "finished" and (
        any(statuses.get(s) for s in _LOST) or sum(statuses.values()) < listing["jobs"]))


def _check_ended(state: PlanState, listing: dict[str, Any], statuses: dict[str, int]) -> None:
    """Raises when the plan made nothing (and the dataset held none of its images
    annotated already), or when some of its batch jobs failed (a rerun
    sends it again); warns when the listing was cut short."""
    if listing["jobs"] == 0 and not listing.get("held"):
        raise DistillError(f"plan {state.plan} found no images to annotate "
                           f"({listing['listed']} listed, {listing['skipped']} objects "
                           "skipped without an image suffix)")
    if listing.get("error"):
        log.warning("plan %s: %s", state.plan, listing["error"])
    lost = {s: n for s, n in statuses.items() if s in _LOST}
    if lost:
        said = ", ".join(f"{n} {s}" for s, n in lost.items())
        raise DistillError(f"plan {state.plan}: {said} of its {sum(statuses.values())} batch "
                           f"jobs (GET /jobs?dataset={state.dataset}&status=failed says why); "
                           "run the same command again to send the plan again into the same "
                           "dataset")


def _plan(http: httpx.Client, plan_id: str) -> dict[str, Any] | None:
    """The plan's view, None when the service no longer has it."""
    resp = http.get(f"/plans/{plan_id}", params={"batches": "true"})
    if resp.status_code == 404:
        return None
    check_response(resp, "the plan's status")
    return dict(resp.json())
