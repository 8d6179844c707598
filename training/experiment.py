"""The data-distillation experiment on the synthetic data set.

For each task (keypoints, boxes) and seed:

1. generate the data (labeled, unlabeled, test and, optionally, a shifted unlabeled split);
2. train the teacher on the labeled split (``teacher_iters``; by default the student's
   budget, which makes the teacher the equal-budget baseline of step 5 as well);
3. pseudo-label the unlabeled split with ``distill.annotate`` (multi-transform
   inference, calibrated by the teacher card's labeled statistics);
4. train the student from scratch on labeled + pseudo-labeled images (mixed sampler,
   6:4, ``student_iters`` >= ``teacher_iters``);
5. the equal-budget baseline: same architecture, same seed (so the same initial
   weights), labeled only, the SAME number of iterations as the student. When the
   teacher had that budget it IS this training, and it is not repeated;
6. the same student with pseudo-labels of the shifted split; optionally (``--rounds 2``)
   a second round where the student is the teacher;
7. optional variants beside the student, each one entry of ``training.variants.VARIANTS``
   turned on by its flag: ``--compare-pooling`` (box teachers: Detectron's raw pooling),
   ``--ignore-factor F`` (the teacher's unsure predictions as ignore regions),
   ``--oracle`` (the same images with their true labels: what pseudo-labels could give
   at best);
8. evaluate everything on the test split, with and without test-time augmentation.

Every step is skipped when its output exists, so rerunning the same command resumes.

How the defaults were chosen (docs/RESULTS.md has the runs): the trainer's learning
rate, batch and schedule shape are its own defaults; the iteration counts are what
both tasks, two seeds and the shifted split allow in about two hours on two CPU cores
(giving the teacher the student's budget saves one training per task and seed); the
labeled-set size (40 images) comes from diagnostics on seeds 0 and 1, where a student
taught the TRUE labels of the unlabeled split showed that with 100 labeled images these
schedules are limited by iterations, not labels, so no pseudo-labels could help. The
shifted look was made milder after a probe on seed 0 (its teacher's pseudo-label
precision, not a test score). No setting was chosen by a test score of seeds 2 or 3.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import signal
import time
from dataclasses import asdict
from datetime import UTC, datetime
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import torch

from distill.card import Task
from distill.data import SplitFiles, generate
from distill.errors import ConfigError
from distill.fileio import write_json_atomic
from training.config_flags import result_fields, values_before
from training.experiment_config import ExperimentConfig, config_from_args
from training.pipeline import exit_on_sigterm, run_pipeline, sigterm_exits
from training.report import render_markdown

log = logging.getLogger(__name__)

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
        with sigterm_exits():
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
# (Seeds and tasks may be added later: each (task, seed) has its own directory. So may
# the shifted split, once: it only adds a student, and the generator renders the other
# splits identically with or without it.)
_RESULT_SETTINGS = result_fields(ExperimentConfig)
# Settings added later, with the value every older run folder was made with.
_SETTINGS_BEFORE = values_before(ExperimentConfig)


def _claim_out_dir(cfg: ExperimentConfig) -> None:
    """Records the result-changing settings in ``settings.json``, or refuses to mix.

    Every step is skipped when its output exists, so resuming with other sizes or
    schedules would silently reuse stale checkpoints and pseudo-labels.
    """
    path = cfg.out_dir / "settings.json"
    mine = _jsonable({k: getattr(cfg, k) for k in _RESULT_SETTINGS})
    if path.is_file():
        theirs = {**_SETTINGS_BEFORE, **json.loads(path.read_text(encoding="utf-8"))}
        diff = {k: (theirs.get(k), v) for k, v in mine.items() if theirs.get(k) != v}
        if set(diff) == {"shifted"} and theirs.get("shifted") == 0:
            write_json_atomic(path, mine)  # the shifted student joins a finished run
            return
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
    return list(json.loads(path.read_text(encoding="utf-8")).get("invocations", []))


def _data(cfg: ExperimentConfig, seed: int) -> dict[str, SplitFiles]:
    root = cfg.out_dir / "data" / f"seed{seed}"
    done = root / "done.json"
    want = {"labeled": cfg.labeled, "unlabeled": cfg.unlabeled, "test": cfg.test,
            "shifted": cfg.shifted, "seed": seed, "family": cfg.family}
    old = {"family": _SETTINGS_BEFORE["family"]}  # data rendered before there were families
    if done.is_file() and {**old, **json.loads(done.read_text())} == want:
        # Already rendered with these sizes: rebuild the paths only.
        return {name: SplitFiles.under(root, name)
                for name in ("labeled", "unlabeled", "test", "shifted")
                if name != "shifted" or cfg.shifted > 0}
    splits = generate(root, labeled=cfg.labeled, unlabeled=cfg.unlabeled, test=cfg.test,
                      seed=seed, shifted=cfg.shifted, family=cfg.family, progress=False)
    write_json_atomic(done, want)
    return splits


def _run_parallel(cfg: ExperimentConfig, jobs: list[tuple[Task, int]],
                  data: dict[int, dict[str, SplitFiles]]) -> list[dict[str, Any]]:
    """Pipelines in ``cfg.jobs`` worker processes. A failed, interrupted (Ctrl-C) or
    terminated (SIGTERM) run takes its workers down with it instead of leaving them
    training as orphans; what they finished stays on disk for the resumed run."""
    with sigterm_exits():
        pool = get_context("spawn").Pool(cfg.jobs, initializer=_worker_init)
        try:
            pending = [pool.apply_async(run_pipeline, (cfg, task, seed, data[seed]))
                       for task, seed in jobs]
            runs = [p.get() for p in pending]
            pool.close()
            return runs
        except BaseException:
            pool.terminate()  # SIGTERM: each worker records its step's partial time, exits
            raise
        finally:
            pool.join()


def _worker_init() -> None:
    """A spawned worker starts with no logging set up: warnings should still show. SIGTERM
    becomes SystemExit, so an interrupted step still records the time it ran."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # Progress bars are off in workers: the quiet training's one line per checkpoint says
    # where each run is.
    logging.getLogger("training.train_loop").setLevel(logging.INFO)
    signal.signal(signal.SIGTERM, exit_on_sigterm)


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


def run_from_args(args: argparse.Namespace, command: list[str] | None = None) -> int:
    """``distill experiment`` (and ``benchmarks/distill_experiment.py``)."""
    run_experiment(config_from_args(args, command))
    return 0
