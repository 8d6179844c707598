"""The data-distillation experiment on the synthetic data set.

For each task (keypoints, boxes) and seed:

1. generate the data (labeled, unlabeled, test and, optionally, a shifted unlabeled split);
2. train the teacher on the labeled split (``teacher_iters``);
3. pseudo-label the unlabeled split with ``distill.annotate`` (multi-transform
   inference, calibrated by the teacher card's labeled statistics);
4. train the student from scratch on labeled + pseudo-labeled images (mixed sampler,
   6:4, ``student_iters`` > ``teacher_iters``);
5. train the equal-budget baseline: same architecture, same seed (so the same initial
   weights), labeled only, the SAME number of iterations as the student;
6. the same student with pseudo-labels of the shifted split; optionally a second round
   where the student is the teacher;
7. evaluate everything on the test split, with and without test-time augmentation.

Every step is skipped when its output exists, so rerunning the same command resumes.
Hyper-parameters were chosen on a separate validation split, never on the test split.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from distill.card import Task, load_checkpoint
from distill.coco import load_coco
from distill.data import SplitFiles, generate
from distill.errors import ConfigError
from distill.fileio import write_json_atomic
from training.report import render_markdown
from training.trainer import TrainConfig, train

log = logging.getLogger(__name__)

ROWS = ("teacher", "baseline", "student", "student-shifted", "student-round2", "student-oracle")


@dataclass(frozen=True)
class ExperimentConfig:
    """Sizes, schedules and switches; defaults fit about two hours on two CPU cores."""

    out_dir: Path
    tasks: tuple[Task, ...] = ("keypoints", "boxes")
    seeds: tuple[int, ...] = (0, 1)  # mean and spread over seeds
    labeled: int = 100
    unlabeled: int = 500
    shifted: int = 400  # 0: no shifted-unlabeled student
    test: int = 150
    teacher_iters: int = 500
    student_iters: int = 800
    batch_size: int = 4
    lr: float = 0.02
    tta: str = "standard"
    second_round: bool = False
    oracle: bool = False  # also a student taught the unlabeled split's true annotations
    arch: str = "tiny"
    min_size: int | None = None
    max_size: int | None = None
    jobs: int = 2  # (task, seed) pipelines run in parallel, one thread each by default
    threads: int = 1
    results_md: Path | None = None
    quick: bool = False
    progress: bool = True
    command: list[str] = field(default_factory=list)


def quick_config(out_dir: Path, **overrides: Any) -> ExperimentConfig:
    """A smoke-test setting: a few images, a few iterations, one seed, one process."""
    settings: dict[str, Any] = {
        "seeds": (0,), "labeled": 6, "unlabeled": 6, "shifted": 4, "test": 4,
        "teacher_iters": 4, "student_iters": 6, "batch_size": 2, "tta": "flip",
        "min_size": 128, "max_size": 224, "jobs": 1, "quick": True, "second_round": True,
        **overrides}
    return ExperimentConfig(out_dir=out_dir, **settings)


def run_experiment(cfg: ExperimentConfig) -> dict[str, Any]:
    """Runs every (task, seed) pipeline, writes ``results.json`` and the Markdown report."""
    t0 = time.perf_counter()
    started = datetime.now(UTC).isoformat(timespec="seconds")
    cfg.out_dir.mkdir(parents=True, exist_ok=True)
    _claim_out_dir(cfg)
    # Data first, in this process: two parallel pipelines must not write the same split.
    data = {seed: _data(cfg, seed) for seed in cfg.seeds}
    jobs = [(task, seed) for seed in cfg.seeds for task in cfg.tasks]
    runs: list[dict[str, Any]]
    if cfg.jobs <= 1:
        runs = [run_pipeline(cfg, task, seed, data[seed]) for task, seed in jobs]
    else:
        runs = _run_parallel(cfg, jobs, data)
    finished = datetime.now(UTC).isoformat(timespec="seconds")
    invocation = {"started": started, "finished": finished,
                  "wall_s": round(time.perf_counter() - t0, 1)}
    results = {"config": _jsonable(asdict(cfg)), "runs": runs, "machine": machine(cfg),
               "invocations": [*_earlier_invocations(cfg.out_dir), invocation],
               "wall_s": invocation["wall_s"], "finished": finished}
    write_json_atomic(cfg.out_dir / "results.json", results)
    markdown = render_markdown(results)
    target = cfg.results_md or cfg.out_dir / "RESULTS.md"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(markdown, encoding="utf-8")
    print(markdown)
    return results


# Settings that change results: a run directory holds results of one combination only.
# (Seeds and tasks may be added later: each (task, seed) has its own directory.)
_RESULT_SETTINGS = ("labeled", "unlabeled", "shifted", "test", "teacher_iters",
                    "student_iters", "batch_size", "lr", "tta", "arch", "min_size",
                    "max_size", "quick")


def _claim_out_dir(cfg: ExperimentConfig) -> None:
    """Records the result-changing settings in ``settings.json``, or refuses to mix.

    Every step is skipped when its output exists, so resuming with other sizes or
    schedules would silently reuse stale checkpoints and pseudo-labels.
    """
    path = cfg.out_dir / "settings.json"
    mine = _jsonable({k: getattr(cfg, k) for k in _RESULT_SETTINGS})
    if path.is_file():
        theirs = json.loads(path.read_text(encoding="utf-8"))
        diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
        if diff:
            changes = ", ".join(f"{k}: {a} -> {b}" for k, (a, b) in diff.items())
            raise ConfigError(f"{cfg.out_dir} holds a run with other settings ({changes}); "
                              "choose another --out-dir or delete that one")
        return
    write_json_atomic(path, mine)


def _earlier_invocations(out_dir: Path) -> list[dict[str, Any]]:
    """Wall times of earlier invocations on this run directory (a resumed run reports all)."""
    path = out_dir / "results.json"
    if not path.is_file():
        return []
    earlier = json.loads(path.read_text(encoding="utf-8"))
    if "invocations" in earlier:
        return list(earlier["invocations"])
    return [{"started": None, "finished": earlier["finished"], "wall_s": earlier["wall_s"]}]


def _data(cfg: ExperimentConfig, seed: int) -> dict[str, SplitFiles]:
    root = cfg.out_dir / "data" / f"seed{seed}"
    done = root / "done.json"
    want = {"labeled": cfg.labeled, "unlabeled": cfg.unlabeled, "test": cfg.test,
            "shifted": cfg.shifted, "seed": seed}
    if done.is_file() and json.loads(done.read_text()) == want:
        # Already rendered with these sizes: rebuild the paths only.
        return {name: SplitFiles(root / "images" / name,
                                 root / "annotations" / f"{name}_keypoints.json",
                                 root / "annotations" / f"{name}_boxes.json")
                for name in ("labeled", "unlabeled", "test", "shifted")
                if name != "shifted" or cfg.shifted > 0}
    splits = generate(root, labeled=cfg.labeled, unlabeled=cfg.unlabeled, test=cfg.test,
                      seed=seed, shifted=cfg.shifted, progress=False)
    write_json_atomic(done, want)
    return splits


class _Pipeline:
    """One (task, seed): its run directory, cached steps and their wall times."""

    def __init__(self, cfg: ExperimentConfig, task: Task, seed: int,
                 data: dict[str, SplitFiles]) -> None:
        self.cfg, self.task, self.seed, self.data = cfg, task, seed, data
        self.dir = cfg.out_dir / task / f"seed{seed}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.times_path = self.dir / "times.json"
        self.times: dict[str, float] = (json.loads(self.times_path.read_text())
                                        if self.times_path.is_file() else {})
        self.commands: list[str] = []

    def json_of(self, split: str) -> Path:
        files = self.data[split]
        return files.keypoints_json if self.task == "keypoints" else files.boxes_json

    def say(self, message: str) -> None:
        print(f"[{self.task} seed {self.seed}] {message}", flush=True)

    def timed(self, name: str, done: bool, step: Callable[[], Any]) -> None:
        if done:
            self.say(f"{name}: done earlier ({self.times.get(name, 0):.0f} s)")
            return
        self.say(f"{name} ...")
        # Time spent before an interruption counts too: steps resume, so must their clocks.
        partial_path = self.dir / "partial-times.json"
        partial = json.loads(partial_path.read_text()) if partial_path.is_file() else {}
        t0 = time.perf_counter()
        try:
            step()
        except BaseException:
            partial[name] = partial.get(name, 0.0) + time.perf_counter() - t0
            write_json_atomic(partial_path, partial)
            raise
        self.times[name] = round(time.perf_counter() - t0 + partial.pop(name, 0.0), 1)
        write_json_atomic(self.times_path, self.times)
        write_json_atomic(partial_path, partial)
        self.say(f"{name}: {self.times[name]:.0f} s")

    def train(self, name: str, iters: int, pseudo: Path | None = None,
              pseudo_images: Path | None = None) -> Path:
        cfg = self.cfg
        out = self.dir / f"{name}.pt"
        tc = TrainConfig(task=self.task, train_json=self.json_of("labeled"),
                         images=self.data["labeled"].images_dir, out=out, arch=cfg.arch,
                         pseudo_json=pseudo, pseudo_images=pseudo_images, iters=iters,
                         batch_size=cfg.batch_size, lr=cfg.lr, seed=self.seed,
                         min_size=cfg.min_size, max_size=cfg.max_size, resume=True,
                         checkpoint_every=max(1, min(250, iters)), device="cpu",
                         progress=cfg.progress and cfg.jobs <= 1, tensorboard=False)
        tc.command = train_command(tc)
        self.commands.append(shlex.join(tc.command))
        self.timed(f"train {name}", _trained(out, iters), lambda: train(tc))
        return out

    def annotate(self, name: str, teacher: Path, split: str) -> Path:
        from distill.annotate import InferenceOptions, annotate_folder

        out = self.dir / f"{name}.json"
        images = self.data[split].images_dir
        self.commands.append(shlex.join(["distill", "annotate", "--teacher", str(teacher),
                                         "--images", str(images), "--out", str(out),
                                         "--tta", self.cfg.tta]))
        self.timed(f"annotate {name}", out.is_file(), lambda: annotate_folder(
            teacher, images, out, options=InferenceOptions(tta=self.cfg.tta),
            progress=self.cfg.progress and self.cfg.jobs <= 1))
        return out

    def evaluate(self, name: str, model: Path, tta: str | None) -> dict[str, Any]:
        from training.evaluate import evaluate_checkpoint

        label = f"{name}+tta" if tta else name
        out = self.dir / f"eval-{label}.json"
        cmd = ["distill", "eval", "--model", str(model), "--json", str(self.json_of("test")),
               "--images", str(self.data["test"].images_dir), "--out", str(out)]
        self.commands.append(shlex.join(cmd + (["--tta", tta] if tta else [])))

        def run() -> None:
            report = evaluate_checkpoint(model, self.json_of("test"),
                                         self.data["test"].images_dir, tta=tta)
            write_json_atomic(out, report.to_json())

        self.timed(f"eval {label}", out.is_file(), run)
        scores: dict[str, Any] = json.loads(out.read_text())["scores"]
        return scores


    def pseudo_summary(self, name: str, split: str, teacher: Path) -> dict[str, Any]:
        """How many pseudo-labels ``name`` kept and, since the synthetic unlabeled splits
        keep their annotations, how good they are (a diagnostic; nothing is tuned on it)."""
        from training.pseudo_quality import pseudo_label_quality

        coco = json.loads((self.dir / f"{name}.json").read_text(encoding="utf-8"))
        card, _, _ = load_checkpoint(teacher)
        n = max(len(coco["images"]), 1)
        return {"images": len(coco["images"]), "annotations": len(coco["annotations"]),
                "per_image": round(len(coco["annotations"]) / n, 3),
                "quality": pseudo_label_quality(coco, load_coco(self.json_of(split)), card)}


def run_pipeline(cfg: ExperimentConfig, task: Task, seed: int,
                 data: dict[str, SplitFiles]) -> dict[str, Any]:
    """Teacher, pseudo-labels, students and baseline for one task and seed; their scores."""
    torch.set_num_threads(cfg.threads)
    p = _Pipeline(cfg, task, seed, data)
    models: dict[str, Path] = {}
    models["teacher"] = p.train("teacher", cfg.teacher_iters)
    pseudo = p.annotate("pseudo", models["teacher"], "unlabeled")
    models["student"] = p.train("student", cfg.student_iters, pseudo,
                                data["unlabeled"].images_dir)
    models["baseline"] = p.train("baseline", cfg.student_iters)
    if cfg.shifted > 0:
        shifted = p.annotate("pseudo-shifted", models["teacher"], "shifted")
        models["student-shifted"] = p.train("student-shifted", cfg.student_iters, shifted,
                                            data["shifted"].images_dir)
    if cfg.second_round:
        pseudo2 = p.annotate("pseudo-round2", models["student"], "unlabeled")
        models["student-round2"] = p.train("student-round2", cfg.student_iters, pseudo2,
                                           data["unlabeled"].images_dir)
    if cfg.oracle:
        # The same student with perfect pseudo-labels: what the unlabeled images can give
        # at this budget, so a missing gain is traced to the labels or to the schedule.
        models["student-oracle"] = p.train("student-oracle", cfg.student_iters,
                                           p.json_of("unlabeled"), data["unlabeled"].images_dir)
    scores: dict[str, dict[str, Any]] = {}
    for name in ROWS:
        if name in models:
            scores[name] = p.evaluate(name, models[name], None)
            scores[f"{name}+tta"] = p.evaluate(name, models[name], cfg.tta)
    sources = {"pseudo": ("unlabeled", "teacher"), "pseudo-shifted": ("shifted", "teacher"),
               "pseudo-round2": ("unlabeled", "student")}
    pseudo_info = {name: p.pseudo_summary(name, split, models[by])
                   for name, (split, by) in sources.items() if (p.dir / f"{name}.json").is_file()}
    return {"task": task, "seed": seed, "scores": scores, "times": p.times,
            "commands": p.commands, "pseudo": pseudo_info,
            "iters": {name: _iterations(path) for name, path in models.items()}}


def _run_parallel(cfg: ExperimentConfig, jobs: list[tuple[Task, int]],
                  data: dict[int, dict[str, SplitFiles]]) -> list[dict[str, Any]]:
    """Pipelines in ``cfg.jobs`` worker processes. A failed, interrupted (Ctrl-C) or
    terminated (SIGTERM) run takes its workers down with it instead of leaving them
    training as orphans; what they finished stays on disk for the resumed run."""
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm) if in_main else None
    pool = get_context("spawn").Pool(cfg.jobs, initializer=_worker_init)
    try:
        pending = [pool.apply_async(run_pipeline, (cfg, task, seed, data[seed]))
                   for task, seed in jobs]
        runs = [p.get() for p in pending]
        pool.close()
        return runs
    except BaseException:
        pool.terminate()  # SIGTERM: each worker records its step's partial time and exits
        raise
    finally:
        pool.join()
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _worker_init() -> None:
    """A spawned worker starts with no logging set up: warnings should still show. SIGTERM
    becomes SystemExit, so an interrupted step still records the time it ran."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)


def _trained(out: Path, iters: int) -> bool:
    return out.is_file() and _iterations(out) == iters


def _iterations(path: Path) -> int:
    _, _, extra = load_checkpoint(path)
    return int(extra.get("iteration", -1))


def train_command(tc: TrainConfig) -> list[str]:
    """The ``distill train`` command line equivalent to ``tc``."""
    cmd = ["distill", "train", "--task", tc.task, "--train-json", str(tc.train_json),
           "--images", str(tc.images)]
    if tc.pseudo_json is not None and tc.pseudo_images is not None:
        cmd += ["--pseudo-json", str(tc.pseudo_json), "--pseudo-images", str(tc.pseudo_images),
                "--labeled-ratio", str(tc.labeled_ratio)]
    cmd += ["--arch", tc.arch, "--iters", str(tc.iters), "--batch-size", str(tc.batch_size),
            "--lr", str(tc.lr), "--seed", str(tc.seed), "--out", str(tc.out)]
    if tc.min_size is not None:
        cmd += ["--min-size", str(tc.min_size)]
    if tc.max_size is not None:
        cmd += ["--max-size", str(tc.max_size)]
    return [*cmd, "--resume"]


def machine(cfg: ExperimentConfig) -> dict[str, Any]:
    """What ran the experiment, for the report."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "jobs": cfg.jobs,
            "threads_per_job": cfg.threads, "torch": torch.__version__,
            "python": platform.python_version(), "platform": platform.platform()}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``distill experiment`` flags (also used by ``benchmarks/distill_experiment.py``)."""
    d = ExperimentConfig(out_dir=Path("runs/experiment"))
    p.add_argument("--out-dir", type=Path, default=d.out_dir, help="runs, data and results")
    p.add_argument("--results", type=Path, default=None,
                   help="Markdown report (default docs/RESULTS.md; <out-dir>/RESULTS.md "
                        "with --quick)")
    p.add_argument("--tasks", nargs="+", choices=("keypoints", "boxes"), default=list(d.tasks))
    p.add_argument("--seeds", type=int, nargs="+", default=list(d.seeds))
    p.add_argument("--labeled", type=int, default=d.labeled)
    p.add_argument("--unlabeled", type=int, default=d.unlabeled)
    p.add_argument("--shifted", type=int, default=d.shifted,
                   help="shifted unlabeled images (0: skip that student)")
    p.add_argument("--test", type=int, default=d.test)
    p.add_argument("--teacher-iters", type=int, default=d.teacher_iters)
    p.add_argument("--student-iters", type=int, default=d.student_iters,
                   help="student AND baseline iterations (the equal budget)")
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--tta", default=d.tta, help="preset for pseudo-labels and +TTA rows")
    p.add_argument("--second-round", action="store_true", help="student becomes teacher")
    p.add_argument("--oracle", action="store_true",
                   help="also a student taught the unlabeled split's true annotations "
                        "(synthetic data only): the ceiling of what pseudo-labels can give")
    p.add_argument("--arch", default=d.arch)
    p.add_argument("--min-size", type=int, default=None)
    p.add_argument("--max-size", type=int, default=None)
    p.add_argument("--jobs", type=int, default=d.jobs, help="pipelines in parallel")
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads per job")
    p.add_argument("--quick", action="store_true", help="smoke test: tiny sizes, few iterations")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def config_from_args(args: argparse.Namespace, command: list[str] | None = None
                     ) -> ExperimentConfig:
    """Maps the flags onto :class:`ExperimentConfig` (``--quick`` overrides the sizes);
    ``command`` is the command line recorded in the report (default: this process's)."""
    command = ["distill", *sys.argv[1:]] if command is None else command
    cfg = ExperimentConfig(
        out_dir=args.out_dir, tasks=tuple(args.tasks), seeds=tuple(args.seeds),
        labeled=args.labeled, unlabeled=args.unlabeled, shifted=args.shifted, test=args.test,
        teacher_iters=args.teacher_iters, student_iters=args.student_iters,
        batch_size=args.batch_size, lr=args.lr, tta=args.tta, second_round=args.second_round,
        oracle=args.oracle,
        arch=args.arch, min_size=args.min_size, max_size=args.max_size, jobs=args.jobs,
        threads=args.threads, results_md=args.results, progress=not args.quiet,
        command=command)
    if args.quick:
        cfg = quick_config(args.out_dir, tasks=cfg.tasks, progress=cfg.progress,
                           results_md=args.results, command=command)
    elif cfg.results_md is None:
        cfg = replace(cfg, results_md=Path("docs/RESULTS.md"))
    if cfg.student_iters <= cfg.teacher_iters and not cfg.quick:
        log.warning("the student schedule (%d) is not longer than the teacher's (%d)",
                    cfg.student_iters, cfg.teacher_iters)
    return cfg


def run_from_args(args: argparse.Namespace, command: list[str] | None = None) -> int:
    """``distill experiment`` (and ``benchmarks/distill_experiment.py``)."""
    run_experiment(config_from_args(args, command))
    return 0
