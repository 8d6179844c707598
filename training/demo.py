"""``make demo``: ``distill loop`` on generated data, through the real stack.

1. generate the synthetic data set (labeled, unlabeled and test splits);
2. ``distill loop --stop-after teacher``: train a tiny teacher on the labeled split;
3. start the stack (``distill serve --with-worker``: API, one worker, an embedded
   Redis unless REDIS_URL is set) serving that teacher, and ``distill loop --url ...
   --stop-after labels``: the unlabeled images go through ``distill client annotate``
   (upload in batches, poll with a progress bar, download the calibrated COCO
   pseudo-labels); stop the stack;
4. ``distill loop`` again, which resumes: the student from scratch on labeled +
   pseudo-labeled images (6:4 mix, longer schedule), a second round (the round-1
   student labels the images again, locally, for a new student), the equal-budget
   baseline, and every model on the test split, single pass and with TTA; the table,
   ``report.json`` and ``report/`` (Markdown, a bar plot, images with their
   pseudo-labels drawn) under the output folder.

Every step resumes from its output, so the same command continues an interrupted demo.
Everything started is stopped on the way out, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shlex
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import httpx

from distill.data import generate
from distill.options import TASKS
from distill.processes import free_port, stop_process
from training.loop import run_loop
from training.loop_config import LoopConfig

SIZES = {"labeled": 100, "unlabeled": 200, "test": 60}
TEACHER_ITERS, STUDENT_ITERS, ROUNDS = 600, 900, 2
# 15.4 measured with teacher, service and student alone (docs/BENCHMARKS.md); the
# baseline and the second round add two 900-iteration trainings and one labeling.
MINUTES = 30


class Stack:
    """``distill serve --with-worker`` as a child process, stopped on exit."""

    def __init__(self, teacher: Path, data_dir: Path, log: Path) -> None:
        self.key = secrets.token_urlsafe(16)
        self.url = f"http://127.0.0.1:{free_port()}"
        env = {**os.environ, "DISTILL_API_KEYS": self.key, "DISTILL_TTA": "standard",
               "DISTILL_PORT": self.url.rsplit(":", 1)[1]}
        self._log = open(log, "ab")  # noqa: SIM115  (closed in stop)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "distill.cli", "serve", "--with-worker", "--teacher",
             str(teacher), "--data-dir", str(data_dir)],
            env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180) -> None:
        """Waits until the API answers /readyz (Redis up, the worker's heartbeat seen)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the stack exited early (code {self.proc.returncode}); "
                                   f"see {self._log.name}")
            try:
                if httpx.get(self.url + "/readyz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise TimeoutError(f"the stack was not ready after {timeout:.0f} s; see {self._log.name}")

    def stop(self) -> None:
        """SIGTERM (graceful: the worker and embedded Redis go down with it), then SIGKILL."""
        stop_process(self.proc)
        self._log.close()


def main(argv: list[str] | None = None) -> int:
    """Runs the demo; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", choices=TASKS, default="keypoints")
    p.add_argument("--out", type=Path, default=Path("out/demo"))
    p.add_argument("--teacher-iters", type=int, default=TEACHER_ITERS)
    p.add_argument("--student-iters", type=int, default=STUDENT_ITERS)
    p.add_argument("--rounds", type=int, default=ROUNDS)
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch threads (default: every core; the stack is down while "
                        "the models train)")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply the data set sizes (0.1 for a smoke test)")
    args = p.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    print(f"distill demo ({args.task}): about {MINUTES} minutes on 2 CPU cores. "
          f"Everything goes to {out}/.", flush=True)
    sizes = {k: max(4, int(v * args.scale)) for k, v in SIZES.items()}
    print(f"[1/4] synthetic data: {sizes}", flush=True)
    files = generate(out / "data", seed=0, labeled=sizes["labeled"],
                     unlabeled=sizes["unlabeled"], test=sizes["test"], progress=False)
    labeled, test = files["labeled"], files["test"]
    cfg = LoopConfig(labeled=labeled.json_for(args.task), images=labeled.images_dir,
                     unlabeled=files["unlabeled"].images_dir, out=out,
                     test_json=test.json_for(args.task), test_images=test.images_dir,
                     task=args.task, teacher_iters=args.teacher_iters,
                     student_iters=args.student_iters, rounds=args.rounds,
                     tta="standard", device="cpu", threads=args.threads,
                     command=["python", "-m", "training.demo", *sys.argv[1:]])
    print(f"steps 2-4 are: {shlex.join(cfg.to_command())} (step 3 with --url)", flush=True)
    print(f"[2/4] training the teacher ({args.teacher_iters} iterations)", flush=True)
    run_loop(replace(cfg, stop_after="teacher"))
    print("[3/4] pseudo-labeling the unlabeled images through the service", flush=True)
    stack = Stack(out / "teacher.pt", out / "service", out / "service.log")
    try:
        stack.wait_ready()
        run_loop(replace(cfg, url=stack.url, key=stack.key, stop_after="labels"))
    finally:
        stack.stop()
    print(f"[4/4] the students ({args.rounds} round(s), {args.student_iters} iterations "
          "each, labeled + pseudo), the equal-budget baseline and the evaluation on the "
          "test split", flush=True)
    # The service's pseudo-labels are done: the same settings resume past them.
    run_loop(replace(cfg, url=stack.url))
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        sys.exit(130)
