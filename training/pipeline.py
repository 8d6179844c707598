"""One (task, seed) pipeline of the experiment: teacher, pseudo-labels, students,
baseline, and their test scores.

Every step is skipped when its output exists (a checkpoint with the wanted
iteration count, a pseudo-label file, an evaluation JSON), so rerunning resumes;
each step's wall time is kept in ``times.json``, including time spent before an
interruption. ``training.experiment`` runs these pipelines over tasks and seeds.
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from distill.card import Task
from distill.checkpoint import load_checkpoint
from distill.coco import load_coco, objects
from distill.data import SplitFiles
from distill.errors import ConfigError
from distill.fileio import write_json_atomic
from distill.options import Pooling
from training.defaults import DEFAULT_LABELED_RATIO
from training.trainer import TrainConfig, train
from training.variants import BY_NAME, VARIANTS, Variant

if TYPE_CHECKING:  # the experiment imports this module; the config is only a type here
    from training.experiment_config import ExperimentConfig

EVAL_POOLING: Pooling = "nms"  # the box pooling of the TTA evaluation rows


def exit_on_sigterm(signum: int, frame: Any) -> None:
    """A SIGTERM handler: unwind as ``SystemExit``, so the running step records its time."""
    raise SystemExit(128 + signum)


@contextmanager
def sigterm_exits() -> Iterator[None]:
    """For the block, SIGTERM unwinds the main thread as ``SystemExit`` (the default kills
    the process where it stands): an interrupted step still records the time it ran
    (:meth:`Pipeline.timed`), so a resumed run's times include it."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, exit_on_sigterm)
    try:
        yield
    finally:
        if previous is not None:  # None: a handler not installed from Python, kept
            signal.signal(signal.SIGTERM, previous)


class Pipeline:
    """One (task, seed): its run directory, cached steps and their wall times.

    ``run_dir`` (default ``<out_dir>/<task>/seed<seed>``) and ``label`` (default
    ``<task> seed <seed>``, the prefix of its progress lines) let ``distill loop`` run
    its steps in a user's run folder with the same machinery.
    """

    def __init__(self, cfg: ExperimentConfig, task: Task, seed: int,
                 data: dict[str, SplitFiles], *, run_dir: Path | None = None,
                 label: str | None = None) -> None:
        self.cfg, self.task, self.seed, self.data = cfg, task, seed, data
        self.dir = run_dir or cfg.out_dir / task / f"seed{seed}"
        self.label = label or f"{task} seed {seed}"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.times_path = self.dir / "times.json"
        self.times: dict[str, float] = (json.loads(self.times_path.read_text())
                                        if self.times_path.is_file() else {})
        self.commands: list[str] = []

    def json_of(self, split: str) -> Path:
        return self.data[split].json_for(self.task)

    def say(self, message: str) -> None:
        print(f"[{self.label}] {message}", flush=True)

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
        student = pseudo is not None
        # Students start from scratch (the paper) or, as a lever, from the teacher.
        init = self.dir / "teacher.pt" if student and cfg.student_init == "teacher" else None
        tc = TrainConfig(task=self.task, train_json=self.json_of("labeled"),
                         images=self.data["labeled"].images_dir, out=out, arch=cfg.arch,
                         pseudo_json=pseudo, pseudo_images=pseudo_images, iters=iters,
                         labeled_ratio=(cfg.labeled_ratio if student
                                        else DEFAULT_LABELED_RATIO),
                         init="scratch" if init is None else str(init),
                         batch_size=cfg.batch_size, lr=cfg.lr, seed=self.seed,
                         min_size=cfg.min_size, max_size=cfg.max_size, resume=True,
                         checkpoint_every=max(1, min(250, iters)), device=cfg.device,
                         precision=cfg.precision,
                         progress=cfg.progress and cfg.jobs <= 1, tensorboard=False)
        tc.command = tc.to_command()
        self.commands.append(shlex.join(tc.command))
        self.timed(f"train {name}", _trained(out, iters), lambda: train(tc))
        return out

    def annotate(self, name: str, teacher: Path, split: str, *, pooling: Pooling = "nms",
                 ignore_factor: float = 0.0, predictions_of: Path | None = None) -> Path:
        """Pseudo-labels of ``split`` by ``teacher``; ``predictions_of`` (an earlier output
        with the same teacher, split and inference) lends its raw predictions, so only the
        selection runs again."""
        from distill.annotate import annotate_folder
        from distill.options import FusionParams, InferenceOptions
        from distill.pseudolabels import SelectionConfig

        out = self.dir / f"{name}.json"
        images = self.data[split].images_dir
        if out.is_file():
            _check_ignore_factor(out, ignore_factor)
        log, lent = _log_of(out), None if predictions_of is None else _log_of(predictions_of)
        if lent is not None and lent.is_file() and not log.is_file():
            shutil.copyfile(lent, log)
        cmd = ["distill", "annotate", "--teacher", str(teacher), "--images", str(images),
               "--out", str(out), "--tta", self.cfg.tta]
        cmd += ["--box-pooling", pooling]  # "nms" too: the rows stay comparable across runs
        cmd += ["--ignore-factor", f"{ignore_factor:g}"] if ignore_factor else []
        self.commands.append(shlex.join(cmd))
        self.timed(f"annotate {name}", out.is_file(), lambda: annotate_folder(
            teacher, images, out,
            options=InferenceOptions(tta=self.cfg.tta, fusion=FusionParams(pooling=pooling),
                                     device=self.cfg.device),
            selection=SelectionConfig(ignore_factor=ignore_factor),
            progress=self.cfg.progress and self.cfg.jobs <= 1))
        return out

    def evaluate(self, name: str, model: Path, tta: str | None) -> dict[str, Any]:
        from training.evaluate import evaluate_checkpoint

        label = f"{name}+tta" if tta else name
        out = self.dir / f"eval-{label}.json"
        cmd = ["distill", "eval", "--model", str(model), "--json", str(self.json_of("test")),
               "--images", str(self.data["test"].images_dir), "--out", str(out)]
        # TTA rows pool boxes as every run before raw pooling became the default did, so
        # that their numbers stay comparable across runs (the pseudo-labels' pooling is
        # each variant's own).
        tta_args = ["--tta", tta, "--box-pooling", EVAL_POOLING] if tta else []
        self.commands.append(shlex.join(cmd + tta_args))

        def run() -> None:
            from distill.options import FusionParams, InferenceOptions

            options = InferenceOptions(fusion=FusionParams(pooling=EVAL_POOLING))
            report = evaluate_checkpoint(model, self.json_of("test"),
                                         self.data["test"].images_dir, tta=tta,
                                         options=options, device=self.cfg.device)
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
        return {**pseudo_counts(coco),
                "quality": pseudo_label_quality(coco, load_coco(self.json_of(split)), card)}


def pseudo_counts(coco: dict[str, Any]) -> dict[str, Any]:
    """How many images a pseudo-label file covers, and the objects and ignore regions kept."""
    kept = len(objects(coco))
    return {"images": len(coco["images"]), "annotations": kept,
            "ignore_regions": len(coco["annotations"]) - kept,
            "per_image": round(kept / max(len(coco["images"]), 1), 3)}


def run_pipeline(cfg: ExperimentConfig, task: Task, seed: int,
                 data: dict[str, SplitFiles]) -> dict[str, Any]:
    """Every model of :data:`~training.variants.VARIANTS` that the settings ask for, for one
    task and seed, and their test scores."""
    torch.set_num_threads(cfg.threads)
    p = Pipeline(cfg, task, seed, data)
    models: dict[str, Path] = {"teacher": p.train("teacher", cfg.teacher_iters)}
    # Same architecture, seed, data and schedule as the teacher when the budgets match:
    # that training is the teacher, so it is done once.
    models["baseline"] = (models["teacher"] if cfg.teacher_iters == cfg.student_iters
                          else p.train("baseline", cfg.student_iters))
    for v in VARIANTS:
        if v.split is not None and v.applies(cfg, task):
            models[v.name] = p.train(v.name, cfg.student_iters, _labels(p, v, models),
                                     data[v.split].images_dir)
    scores: dict[str, dict[str, Any]] = {}
    evaluated: dict[Path, str] = {}  # a model shared by two rows is evaluated once
    for name in (v.name for v in VARIANTS if v.name in models):
        first = evaluated.setdefault(models[name], name)
        for suffix, tta in (("", None), ("+tta", cfg.tta)):
            scores[name + suffix] = (scores[first + suffix] if first != name
                                     else p.evaluate(name, models[name], tta))
    pseudo_info = {v.pseudo: p.pseudo_summary(v.pseudo, v.split, models[v.labeler])
                   for v in VARIANTS if v.split is not None and not v.oracle
                   and (p.dir / f"{v.pseudo}.json").is_file()}
    return {"task": task, "seed": seed, "scores": scores, "times": p.times,
            "commands": p.commands, "pseudo": pseudo_info,
            "iters": {name: _iterations(path) for name, path in models.items()}}


def _labels(p: Pipeline, v: Variant, models: dict[str, Path]) -> Path:
    """What student ``v`` learns from besides the labeled split: the true labels of its
    split (an oracle: what the images can give at this budget, so a missing gain is traced
    to the labels or to the schedule) or pseudo-labels by its labeler."""
    assert v.split is not None
    if v.oracle:
        return p.json_of(v.split)
    # A box teacher's log holds every detection and is lent to the ignore variants; a
    # keypoint teacher's was cut by the score floor, which ignore regions reach below.
    lend = v.ignore and p.task == "boxes"
    return p.annotate(v.pseudo, models[v.labeler], v.split, pooling=v.pooling,
                      ignore_factor=p.cfg.ignore_factor if v.ignore else 0.0,
                      predictions_of=p.dir / f"{BY_NAME[v.plain].pseudo}.json" if lend
                      else None)


def _check_ignore_factor(out: Path, wanted: float) -> None:
    """A pseudo-label file found done must have been written with the ignore factor asked
    for now (the factor is not part of the file name)."""
    selection = json.loads(out.read_text(encoding="utf-8"))["info"].get("selection", {})
    if float(selection.get("ignore_factor", 0.0)) != wanted:
        raise ConfigError(f"{out} was written with ignore factor "
                          f"{selection.get('ignore_factor', 0.0)}, not {wanted}; choose "
                          "another --out-dir or delete the file")


def _log_of(out: Path) -> Path:
    """Where ``distill annotate`` streams the raw predictions of ``out``."""
    return Path(str(out) + ".predictions.jsonl")


def _trained(out: Path, iters: int) -> bool:
    return out.is_file() and _iterations(out) == iters


def _iterations(path: Path) -> int:
    _, _, extra = load_checkpoint(path)
    return int(extra.get("iteration", -1))
