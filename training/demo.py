"""``make demo``: the main job once, end to end, through the real stack (about 15 minutes).

1. generate the synthetic data set;
2. train a tiny teacher on the labeled split;
3. start the stack (``distill serve --with-worker``: API, one worker, an embedded
   Redis unless REDIS_URL is set) and send the unlabeled images through
   ``distill client annotate``: upload in batches, poll with a progress bar,
   download the calibrated COCO pseudo-labels; stop the stack;
4. train the student from scratch on labeled + pseudo-labeled images (6:4 mix,
   longer schedule);
5. evaluate teacher, teacher + TTA and student on the test split, print the
   table and write a report (Markdown, a bar plot, images with their
   pseudo-labels drawn) under the output folder.

Everything started is stopped on the way out, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from distill.data import SplitFiles, generate
from distill.options import TASKS
from training.demo_report import write_report
from training.evaluate import EvalReport, evaluate_checkpoint
from training.trainer import TrainConfig, train

SIZES = {"labeled": 100, "unlabeled": 200, "test": 60}
TEACHER_ITERS, STUDENT_ITERS = 600, 900
MINUTES = 15  # measured on 2 CPU cores: see docs/BENCHMARKS.md


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Stack:
    """``distill serve --with-worker`` as a child process, stopped on exit."""

    def __init__(self, teacher: Path, data_dir: Path, log: Path) -> None:
        self.key = secrets.token_urlsafe(16)
        self.url = f"http://127.0.0.1:{_free_port()}"
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
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def _train(task: str, files: dict[str, SplitFiles], out: Path, iters: int,
           pseudo: Path | None = None) -> Path:
    split = files["labeled"]
    cfg = TrainConfig(task=task, train_json=split.json_for(task),  # type: ignore[arg-type]
                      images=split.images_dir,
                      out=out, iters=iters, device="cpu",
                      pseudo_json=pseudo, pseudo_images=(
                          files["unlabeled"].images_dir if pseudo else None))
    return train(cfg).checkpoint


def main(argv: list[str] | None = None) -> int:
    """Runs the demo; returns the exit code."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--task", choices=TASKS, default="keypoints")
    p.add_argument("--out", type=Path, default=Path("out/demo"))
    p.add_argument("--teacher-iters", type=int, default=TEACHER_ITERS)
    p.add_argument("--student-iters", type=int, default=STUDENT_ITERS)
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiply the data set sizes (0.1 for a smoke test)")
    args = p.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    print(f"distill demo ({args.task}): about {MINUTES} minutes on 2 CPU cores. "
          f"Everything goes to {out}/.", flush=True)
    t0 = time.monotonic()
    sizes = {k: max(4, int(v * args.scale)) for k, v in SIZES.items()}
    print(f"[1/5] synthetic data: {sizes}", flush=True)
    files = generate(out / "data", seed=0, labeled=sizes["labeled"],
                     unlabeled=sizes["unlabeled"], test=sizes["test"])
    print(f"[2/5] training the teacher ({args.teacher_iters} iterations)", flush=True)
    teacher = _train(args.task, files, out / "teacher.pt", args.teacher_iters)
    print("[3/5] pseudo-labeling the unlabeled images through the service", flush=True)
    pseudo = out / "pseudo.json"
    stack = Stack(teacher, out / "service", out / "service.log")
    try:
        stack.wait_ready()
        subprocess.run([sys.executable, "-m", "distill.cli", "client", "annotate",
                        str(files["unlabeled"].images_dir), "--url", stack.url, "--key",
                        stack.key, "--out", str(pseudo), "--batch-size", "16"], check=True)
    finally:
        stack.stop()
    print(f"[4/5] training the student ({args.student_iters} iterations, labeled + pseudo)",
          flush=True)
    student = _train(args.task, files, out / "student.pt", args.student_iters, pseudo)
    print("[5/5] evaluating on the test split", flush=True)
    test = files["test"]
    test_json = test.json_for(args.task)
    rows: dict[str, EvalReport] = {
        "teacher": evaluate_checkpoint(teacher, test_json, test.images_dir),
        "teacher + TTA": evaluate_checkpoint(teacher, test_json, test.images_dir,
                                             tta="standard"),
        "student": evaluate_checkpoint(student, test_json, test.images_dir),
    }
    report = write_report(out, args.task, rows, pseudo, files["unlabeled"].images_dir,
                          minutes=(time.monotonic() - t0) / 60)
    print(f"\nreport: {report}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("\ninterrupted; everything started was stopped", file=sys.stderr)
        sys.exit(130)
