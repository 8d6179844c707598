"""Service benchmark: what the HTTP service and RQ workers cost on top of the core engine.

Prints
1. end-to-end job time through the service (POST -> poll -> download) against
   ``annotate_folder`` on the same images, transforms and batch size (target:
   the service adds < 10 %), both with the teacher loaded and without;
2. POST /annotate latency for a 16-image batch (median and p90);
3. a worker's resident memory sampled over a long job (it must stay flat);
4. the API process's resident memory after start-up and after a POST plus a
   re-selection, and whether torch's libraries are mapped into it (they must
   not be: the API never imports torch). ``--api-memory-only`` runs just this.

Everything runs locally: a private redis-server, ``distill serve`` and
``distill worker`` subprocesses. Without ``--teacher`` a random-weight
``tiny`` keypoint teacher is built (timings of the plumbing, not of a real
model). Example::

    python benchmarks/service_bench.py --images 24 --tta flip --long-images 120
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

from distill.processes import free_port, stop_process

REPO = Path(__file__).resolve().parent.parent
KEY = "bench-key"


def _wait(pred: Any, timeout: float, what: str) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if out := pred():
                return out
        except (httpx.HTTPError, OSError):
            pass
        time.sleep(0.1)
    raise SystemExit(f"timed out waiting for {what}")


def _teacher(root: Path, labeled_json: Path) -> Path:
    import torch

    from distill.card import ModelCard, flip_map_from_names
    from distill.checkpoint import save_checkpoint
    from distill.coco import labeled_statistics, load_coco
    from distill.data import PERSON_CATEGORY
    from distill.models.zoo import build_model, default_sizes

    stats = labeled_statistics(load_coco(labeled_json), "keypoints")
    lo, hi = default_sizes("tiny")
    names = list(PERSON_CATEGORY["keypoints"])
    torch.manual_seed(0)
    model = build_model("tiny", "keypoints", num_classes=2, num_keypoints=len(names),
                        min_size=lo, max_size=hi)
    card = ModelCard(arch="tiny", task="keypoints", categories=[PERSON_CATEGORY], min_size=lo,
                     max_size=hi, labeled_stats=stats, flip_map=flip_map_from_names(names),
                     provenance={"name": "bench-random"})
    path = root / "teacher.pt"
    save_checkpoint(path, card, model.state_dict())
    return path


class Stack:
    """redis-server + distill serve + distill worker, all ours, stopped by pid at the end."""

    def __init__(self, root: Path, teacher: Path, settings: dict[str, str]) -> None:
        self.root, self.port = root, free_port()
        self.procs: list[subprocess.Popen[bytes]] = []
        redis_port = free_port()
        self.redis = self._spawn([shutil.which("redis-server") or "redis-server", "--port",
                                  str(redis_port), "--save", "", "--appendonly", "no"], "redis")
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("DISTILL_")}
        self.env.update({"REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
                         "DISTILL_DATA_DIR": str(root / "data"), "DISTILL_API_KEYS": KEY,
                         "DISTILL_TEACHER": str(teacher),
                         **{f"DISTILL_{k.upper()}": v for k, v in settings.items()}})
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=300,
                                 headers={"Authorization": f"Bearer {KEY}"})

    def _spawn(self, cmd: list[str], log: str, env: dict[str, str] | None = None
               ) -> subprocess.Popen[bytes]:
        out = open(self.root / f"{log}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append(proc)
        return proc

    def start_api(self) -> None:
        self._spawn([sys.executable, "-m", "distill.cli", "serve", "--port", str(self.port)],
                    "api", self.env)
        _wait(lambda: self.http.get("/healthz").is_success, 120, "the API")

    def start_worker(self) -> subprocess.Popen[bytes]:
        proc = self._spawn([sys.executable, "-m", "distill.cli", "worker"], "worker", self.env)
        _wait(lambda: self.http.get("/readyz").json()["workers"] >= 1, 180, "a worker")
        return proc

    def post(self, files: list[tuple[str, bytes]], **form: str) -> dict[str, Any]:
        resp = self.http.post("/annotate", data=form,
                              files=[("files", (n, b, "image/png")) for n, b in files])
        resp.raise_for_status()
        body: dict[str, Any] = resp.json()
        return body

    def finish(self, job_id: str, poll: float = 0.05) -> dict[str, Any]:
        while True:
            job: dict[str, Any] = self.http.get(f"/jobs/{job_id}").json()
            if job["status"] in ("finished", "failed", "cancelled"):
                return job
            time.sleep(poll)

    def close(self) -> None:
        self.http.close()
        for proc in reversed(self.procs):
            stop_process(proc)


def local_runner(teacher: Path, folder: Path, tta: str, batch: int) -> tuple[float, Any]:
    """Loads the teacher as ``annotate_folder`` does (timed), and returns a function that
    runs ``annotate_folder``'s steps on the folder with that loaded teacher."""
    from distill.annotate import Teacher, infer_to_log
    from distill.fileio import write_json_atomic
    from distill.images import list_images
    from distill.options import InferenceOptions
    from distill.predictions import PredictionLog
    from distill.pseudolabels import SelectionConfig, finalize

    t0 = time.perf_counter()
    model = Teacher.load(teacher, InferenceOptions(tta=tta, batch_size=batch))
    load_s = time.perf_counter() - t0

    def run(out: Path) -> float:
        t0 = time.perf_counter()
        log = PredictionLog(out.with_suffix(".jsonl"))
        infer_to_log(model, [(p.name, p) for p in list_images(folder)], log)
        write_json_atomic(out, finalize(log.read().values(), model.card, SelectionConfig(),
                                        model.info()))
        return time.perf_counter() - t0

    return load_s, run


def sample_rss(pid: int, stop: threading.Event, samples: list[tuple[float, float]]) -> None:
    proc, t0 = psutil.Process(pid), time.monotonic()
    while not stop.is_set():
        samples.append((time.monotonic() - t0, proc.memory_info().rss / 2**20))
        stop.wait(0.5)


def api_memory(stack: Stack, pid: int, files: list[tuple[str, bytes]]) -> dict[str, Any]:
    """Part 4: the API's RSS before and after it has served a job and a re-selection
    (the worker must already run), and whether any torch library is mapped into it."""
    out: dict[str, Any] = {"api_rss_start_mb": psutil.Process(pid).memory_info().rss / 2**20}
    job = stack.post(files, dataset="api-memory")
    stack.finish(job["id"])
    stack.http.get(f"/jobs/{job['id']}/annotations",
                   params={"score_thresh": 0.3}).raise_for_status()
    stack.http.get("/datasets/api-memory/annotations").raise_for_status()
    out["api_rss_after_mb"] = psutil.Process(pid).memory_info().rss / 2**20
    maps = Path(f"/proc/{pid}/maps")
    out["api_torch_mapped"] = ("torch" in maps.read_text()) if maps.exists() else None
    return out


def print_api_memory(report: dict[str, Any]) -> None:
    """Prints part 4."""
    mapped = {True: "yes", False: "no", None: "unknown (no /proc)"}[report["api_torch_mapped"]]
    print(f"  API process RSS: {report['api_rss_start_mb']:.0f} MB after start-up, "
          f"{report['api_rss_after_mb']:.0f} MB after a POST + re-selection + dataset "
          f"download; torch libraries mapped: {mapped}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=24, help="images of the end-to-end job")
    ap.add_argument("--tta", default="flip")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--post-batch", type=int, default=16)
    ap.add_argument("--post-repeats", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2,
                    help="alternating service/local runs; the fastest of each is reported")
    ap.add_argument("--long-images", type=int, default=120, help="images of the memory run")
    ap.add_argument("--teacher", type=Path, help="a real checkpoint (default: random tiny)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--api-memory-only", action="store_true",
                    help="only part 4: the API process's memory (about a minute)")
    args = ap.parse_args()

    from distill.data import generate

    root = Path(tempfile.mkdtemp(prefix="service-bench-"))
    n_synth = max(args.images, args.post_batch)
    splits = generate(root / "synth", labeled=16, unlabeled=n_synth, test=0, seed=0)
    images = sorted(splits["unlabeled"].images_dir.glob("*.png"))
    teacher = args.teacher or _teacher(root, splits["labeled"].keypoints_json)
    folder = root / "e2e"
    folder.mkdir()
    for p in images[: args.images]:
        shutil.copy(p, folder / p.name)
    settings = {"tta": args.tta, "batch_size": str(args.batch_size),
                "max_files": str(max(64, args.long_images, args.post_batch)),
                "max_request_bytes": str(2**31)}
    stack = Stack(root, teacher, settings)
    report: dict[str, Any] = {"images": args.images, "tta": args.tta, "batch": args.batch_size}
    if args.api_memory_only:
        try:
            stack.start_api()
            api_pid = stack.procs[-1].pid
            stack.start_worker()
            report.update(api_memory(stack, api_pid, [(p.name, p.read_bytes())
                                                      for p in images[:4]]))
        finally:
            stack.close()
            if not args.keep:
                shutil.rmtree(root, ignore_errors=True)
        print("\nservice benchmark, part 4 only (cpu)")
        print_api_memory(report)
        return 0
    try:
        stack.start_api()
        api_pid = stack.procs[-1].pid
        # 2. POST latency, with no worker running so that nothing competes for the CPU.
        batch = [(p.name, p.read_bytes()) for p in images[: args.post_batch]]
        stack.post(batch[:1])  # warm-up: the first POST imports the preset parser
        latencies = []
        for _ in range(args.post_repeats):
            t0 = time.perf_counter()
            job = stack.post(batch)
            latencies.append(time.perf_counter() - t0)
            stack.http.delete(f"/jobs/{job['id']}")
        report["post_mb"] = sum(len(b) for _, b in batch) / 2**20
        report["post_median_ms"] = 1000 * statistics.median(latencies)
        report["post_p90_ms"] = 1000 * sorted(latencies)[int(0.9 * (len(latencies) - 1))]

        # 1. end to end, worker warm (teacher loaded once at its start).
        worker = stack.start_worker()
        files = [(p.name, p.read_bytes()) for p in sorted(folder.glob("*.png"))]
        stack.finish(stack.post(files[:1])["id"])  # warm-up job
        load_s, run_local = local_runner(teacher, folder, args.tta, args.batch_size)
        service, local, worker_side = [], [], []
        # Alternating rounds, fastest of each: the machine may be shared and noisy.
        for r in range(args.rounds):
            t0 = time.perf_counter()
            job = stack.post(files)
            done = stack.finish(job["id"], poll=0.2)
            stack.http.get(f"/jobs/{job['id']}/annotations").raise_for_status()
            service.append(time.perf_counter() - t0)
            report["service_status"] = done["status"]
            worker_side.append((datetime.fromisoformat(done["finished_at"])
                                - datetime.fromisoformat(done["started_at"])).total_seconds())
            local.append(run_local(root / f"local{r}.json"))
        report["service_s"], report["local_warm_s"] = min(service), min(local)
        report["worker_s"] = min(worker_side)
        report["outside_s"] = statistics.median(s - w for s, w in zip(service, worker_side,
                                                                     strict=True))
        report["local_cold_s"] = min(local) + load_s
        report["overhead_vs_warm_pct"] = 100 * (report["service_s"] / min(local) - 1)
        report["overhead_vs_cold_pct"] = 100 * (report["service_s"] / report["local_cold_s"] - 1)

        # 4. API memory (the worker is warm by now; this adds one small job).
        report.update(api_memory(stack, api_pid, files[:4]))

        # 3. worker memory over a long job.
        long_files = [(f"long_{i:05d}.png", files[i % len(files)][1])
                      for i in range(args.long_images)]
        samples: list[tuple[float, float]] = []
        stop = threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(worker.pid, stop, samples))
        sampler.start()
        t0 = time.perf_counter()
        stack.finish(stack.post(long_files, tta="identity")["id"], poll=0.5)
        report["long_s"] = time.perf_counter() - t0
        stop.set()
        sampler.join()
        rss = [r for _, r in samples]
        # The first tenth is warm-up (allocator pools, lazy torch init); growth is measured after.
        report["rss_profile_mb"] = [rss[min(len(rss) - 1, int(f * len(rss)))]
                                    for f in (0.1, 0.25, 0.5, 0.75, 1.0)]
        report["rss_max_mb"] = max(rss)
    finally:
        stack.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)

    print(f"\nservice benchmark ({report['images']} images, tta={report['tta']}, "
          f"batch {report['batch']}, cpu)")
    print(f"  end-to-end via service          {report['service_s']:8.2f} s  "
          f"({report['service_status']}; {report['worker_s']:.2f} s of it inside the worker)")
    outside = report["outside_s"]
    print(f"  outside the worker (upload, queue, poll, download) {outside:.2f} s = "
          f"{100 * outside / report['service_s']:.1f} % of the job (median of rounds)")
    print(f"  local engine, teacher loaded    {report['local_warm_s']:8.2f} s  -> service adds "
          f"{report['overhead_vs_warm_pct']:+.1f} %  (target < 10 %)")
    print(f"  local engine + teacher loading  {report['local_cold_s']:8.2f} s  -> service adds "
          f"{report['overhead_vs_cold_pct']:+.1f} %")
    print(f"  POST /annotate, {args.post_batch} images ({report['post_mb']:.1f} MB)  median "
          f"{report['post_median_ms']:.0f} ms, p90 {report['post_p90_ms']:.0f} ms")
    prof = report["rss_profile_mb"]
    print(f"  worker RSS over {args.long_images} images ({report['long_s']:.0f} s) at "
          f"10/25/50/75/100 % of the job: {', '.join(f'{r:.0f}' for r in prof)} MB "
          f"(max {report['rss_max_mb']:.0f}); growth after warm-up {prof[-1] - prof[0]:+.0f} MB")
    print_api_memory(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
