"""``distill loop``: a labeled COCO set and a folder of unlabeled images -> a student, and
whether it beat an equal-budget baseline on a held-out split.

1. the held-out split: ``--test-json``, else ``--test-fraction`` of the labeled images,
   drawn by ``--seed`` and never trained on (``held-out/``);
2. the teacher on the rest (or ``--teacher``: imported, not trained; with ``--url`` and
   neither, the service's teacher labels and there is no teacher row);
3. round-1 pseudo-labels of the unlabeled folder, locally (``distill annotate``) or
   through a running service (``--url``: ``distill client annotate``);
4. the student from scratch on labeled + pseudo-labeled images; with ``--rounds N`` each
   round's student labels the folder again for the next one (locally);
5. the equal-budget baseline: labeled only, the student's iterations (the teacher itself
   when the budgets match, as in ``distill experiment``);
6. every model on the held-out split, single pass and with ``--tta``; the report
   (``report.json``, ``report/report.md``) sets each against the baseline.

Every step is a step of :class:`training.pipeline.Pipeline`: skipped when its output in
the run folder exists, timed in ``times.json``, so running the same command resumes.
``--preflight S`` runs the same steps on the labeled set alone, a share of it hidden and
playing the unlabeled folder, plus an oracle and the pseudo-labels' quality
(:mod:`training.preflight`).
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from distill.card import Task
from distill.coco import load_coco
from distill.data import SplitFiles
from distill.errors import ConfigError, DistillError
from distill.fileio import write_json_atomic
from training.loop_config import LoopConfig, config_from_args
from training.pipeline import Pipeline, pseudo_counts

PREFIX = "loop"


def run_loop(cfg: LoopConfig) -> dict[str, Any] | None:
    """Runs (or resumes) the loop; returns the report's data (None with ``stop_after``)."""
    from distill.threads import apply_thread_budget

    t0 = time.perf_counter()
    cfg.check()
    apply_thread_budget(cfg.threads)
    cfg.out.mkdir(parents=True, exist_ok=True)
    labeled = load_coco(cfg.labeled)
    task: Task = cfg.task or ("keypoints" if any(c.get("keypoints") for c in
                                                 labeled["categories"]) else "boxes")
    _claim(cfg, task)
    data, held_out = _splits(cfg, task, labeled)
    if cfg.url is not None and cfg.stop_after != "teacher" \
            and not (cfg.out / "pseudo.json").is_file():
        _check_service(cfg.url)  # before hours of teacher training, not after
    p = Pipeline(_experiment_settings(cfg), task, cfg.seed, data, run_dir=cfg.out,
                 label=PREFIX)
    models: dict[str, Path] = {}
    teacher = _teacher(cfg, p, task)
    if teacher is not None:
        models["teacher"] = teacher
    if cfg.stop_after == "teacher":
        return None
    pseudo = {"pseudo": _first_labels(cfg, p, teacher)}
    if cfg.stop_after == "labels":
        return None
    # Same architecture, seed, data and schedule as the teacher when the budgets match:
    # that training is the teacher, so it is done once (as in the experiment).
    if teacher is not None and cfg.teacher is None and cfg.teacher_iters == cfg.student_iters:
        models["baseline"] = teacher
    else:
        models["baseline"] = p.train("baseline", cfg.student_iters)
    unlabeled = data["unlabeled"].images_dir
    _students(cfg, p, models, pseudo, unlabeled)
    if cfg.preflight is not None:  # the hidden images' true labels: the most they can give
        models["oracle"] = p.train("oracle", cfg.student_iters, p.json_of("unlabeled"),
                                   unlabeled)
    rows: dict[str, dict[str, Any]] = {}
    evaluated: dict[Path, str] = {}  # the teacher that is the baseline is evaluated once
    for name, model in models.items():
        first = evaluated.setdefault(model, name)
        rows[name] = rows[first] if first != name else {
            "single": p.evaluate(name, model, None), "tta": p.evaluate(name, model, cfg.tta)}
    results = {
        "task": task, "config": _public(cfg), "held_out": held_out, "rows": rows,
        "deltas": deltas(rows, task),
        "pseudo": {name: pseudo_counts(load_coco(path)) for name, path in pseudo.items()},
        "times": p.times, "commands": p.commands, "wall_s": round(time.perf_counter() - t0, 1)}
    if cfg.preflight is not None:
        from training.preflight import verdict

        quality = {name: p.pseudo_summary(name, "unlabeled", models[
            "teacher" if name == "pseudo" else _labeler(name)])["quality"] for name in pseudo}
        results["pseudo_quality"] = quality
        results["preflight"] = verdict(rows, main_metric(task), quality)
    write_json_atomic(cfg.out / "report.json", results, indent=1)
    from training.loop_report import write_report

    report = write_report(cfg.out, results, pseudo["pseudo"], unlabeled)
    print(f"\nreport: {report} (and {cfg.out / 'report.json'})", flush=True)
    return results


def _students(cfg: LoopConfig, p: Pipeline, models: dict[str, Path],
              pseudo: dict[str, Path], unlabeled: Path) -> None:
    """Round 1's student from ``pseudo["pseudo"]``, then each later round's from the
    pseudo-labels of the round before's student (added to ``models`` and ``pseudo``)."""
    models["student"] = p.train("student", cfg.student_iters, pseudo["pseudo"], unlabeled)
    for r in range(2, cfg.rounds + 1):
        labeler = models[_labeler(f"pseudo-round{r}")]
        pseudo[f"pseudo-round{r}"] = p.annotate(f"pseudo-round{r}", labeler, "unlabeled")
        models[f"student-round{r}"] = p.train(f"student-round{r}", cfg.student_iters,
                                              pseudo[f"pseudo-round{r}"], unlabeled)


def _labeler(pseudo: str) -> str:
    """The model whose pseudo-labels ``pseudo-roundN`` are (round N-1's student)."""
    n = int(pseudo.removeprefix("pseudo-round"))
    return "student" if n == 2 else f"student-round{n - 1}"


def main_metric(task: Task) -> str:
    """The headline COCOeval type: keypoint AP for keypoint models, else box AP."""
    return "keypoints" if task == "keypoints" else "bbox"


def deltas(rows: dict[str, dict[str, Any]], task: Task) -> dict[str, dict[str, float]]:
    """Each model's headline AP minus the baseline's, single pass and with TTA on both
    sides."""
    metric = main_metric(task)
    base = rows["baseline"]
    # + 0.0: a difference that rounds to zero is 0.0, not -0.0
    return {name: {kind: round(row[kind][metric]["AP"] - base[kind][metric]["AP"], 1) + 0.0
                   for kind in ("single", "tta")} for name, row in rows.items()}


def _teacher(cfg: LoopConfig, p: Pipeline, task: Task) -> Path | None:
    """The teacher: imported, trained here, or (``--url`` with neither) the service's."""
    if cfg.teacher is not None:
        from distill.checkpoint import load_checkpoint

        card, _, _ = load_checkpoint(cfg.teacher)
        if card.task != task:
            raise ConfigError(f"--teacher {cfg.teacher} is a {card.task} model; the labeled "
                              f"file is {task} (or pass --task)")
        return cfg.teacher
    if cfg.url is not None and not (cfg.out / "teacher.pt").is_file():
        p.say(f"teacher: the service's ({cfg.teacher_name or 'its only one'}) at {cfg.url}")
        return None
    return p.train("teacher", cfg.teacher_iters)


def _first_labels(cfg: LoopConfig, p: Pipeline, teacher: Path | None) -> Path:
    """Round 1's pseudo-labels: through the service with ``--url``, else locally."""
    if cfg.url is None:
        assert teacher is not None
        return p.annotate("pseudo", teacher, "unlabeled")
    out = cfg.out / "pseudo.json"
    cmd = [sys.executable, "-m", "distill.cli", "client", "annotate",
           str(p.data["unlabeled"].images_dir), "--url", cfg.url, "--out", str(out),
           "--tta", cfg.tta]
    cmd += ["--teacher", cfg.teacher_name] if cfg.teacher_name else []
    cmd += [] if cfg.progress else ["--quiet"]
    p.commands.append(shlex.join(["distill", *cmd[3:]]))
    # The key travels in the environment, never on a command line others can read.
    env = {**os.environ}
    key = cfg.api_key()
    if key:
        env["DISTILL_API_KEY"] = key

    def label() -> None:
        code = subprocess.run(cmd, env=env, check=False).returncode
        if code != 0:  # the client said why above; what it submitted resumes on a rerun
            raise DistillError(f"distill client annotate against {cfg.url} failed "
                               f"(exit code {code}); run the same command again to resume")

    p.timed("annotate pseudo (service)", out.is_file(), label)
    return out


def _check_service(url: str) -> None:
    """Refuses a ``--url`` where no distill API answers ``/healthz``."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url.rstrip("/") + "/healthz", timeout=10) as resp:
            if resp.status == 200:
                return
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise ConfigError(f"no distill service answers at --url {url} ({exc}); start it "
                          "(distill serve --with-worker) or fix the address") from exc
    raise ConfigError(f"--url {url}/healthz answered {resp.status}, not 200")


def _splits(cfg: LoopConfig, task: Task, labeled: dict[str, Any]
            ) -> tuple[dict[str, SplitFiles], dict[str, Any]]:
    """The training, unlabeled and held-out splits, and how the held-out one was made;
    with ``--preflight``, the unlabeled split is the hidden share of the training one."""
    data, held_out = _held_out(cfg, labeled)
    if cfg.preflight is not None:
        from training.preflight import hide

        data["labeled"], data["unlabeled"], held_out["preflight"] = hide(
            data["labeled"].json_for(task), cfg.images, cfg.preflight, cfg.seed,
            cfg.out / "held-out")
        print(f"[{PREFIX}] preflight: the labels of {held_out['preflight']['hidden']} of the "
              f"{held_out['preflight']['hidden'] + held_out['preflight']['visible']} training "
              "images are hidden; those images play the unlabeled folder", flush=True)
    else:
        assert cfg.unlabeled is not None  # config_from_args requires one of the two
        data["unlabeled"] = SplitFiles(cfg.unlabeled, cfg.unlabeled, cfg.unlabeled)
    return data, held_out


def _held_out(cfg: LoopConfig, labeled: dict[str, Any]
              ) -> tuple[dict[str, SplitFiles], dict[str, Any]]:
    """The training and held-out splits, and how the held-out one was made."""
    def split(images: Path, coco: Path) -> SplitFiles:
        return SplitFiles(images, coco, coco)

    data: dict[str, SplitFiles] = {}
    if cfg.test_json is not None:
        data["labeled"] = split(cfg.images, cfg.labeled)
        data["test"] = split(cfg.test_images or cfg.images, cfg.test_json)
        return data, {"source": str(cfg.test_json), "images": len(
            load_coco(cfg.test_json)["images"])}
    folder = cfg.out / "held-out"
    train, test = folder / "train.json", folder / "test.json"
    ids = sorted(img["id"] for img in labeled["images"])
    n_test = max(1, round(cfg.test_fraction * len(ids)))
    if n_test >= len(ids):
        raise ConfigError(f"{cfg.labeled} has {len(ids)} image(s): too few to hold "
                          f"{cfg.test_fraction:g} of them out; pass --test-json")
    held = set(random.Random(cfg.seed).sample(ids, n_test))
    if not (train.is_file() and test.is_file()):
        for path, keep in ((train, lambda i: i not in held), (test, lambda i: i in held)):
            write_json_atomic(path, {
                **labeled, "images": [im for im in labeled["images"] if keep(im["id"])],
                "annotations": [a for a in labeled["annotations"] if keep(a["image_id"])]})
    print(f"[{PREFIX}] held-out split: {n_test} of the {len(ids)} labeled images "
          f"(--test-fraction {cfg.test_fraction:g}, seed {cfg.seed}) in {test}; the models "
          "never train on them (pass --test-json to evaluate on your own)", flush=True)
    data["labeled"] = split(cfg.images, train)
    data["test"] = split(cfg.images, test)
    return data, {"source": f"{n_test} of {len(ids)} labeled images "
                            f"(fraction {cfg.test_fraction:g}, seed {cfg.seed})",
                  "images": n_test}


def _experiment_settings(cfg: LoopConfig) -> Any:
    """The pipeline's settings for the loop's steps (one job, the loop's budgets)."""
    from training.experiment_config import ExperimentConfig

    return ExperimentConfig(out_dir=cfg.out, teacher_iters=cfg.teacher_iters,
                            student_iters=cfg.student_iters, arch=cfg.arch, tta=cfg.tta,
                            batch_size=cfg.batch_size, min_size=cfg.min_size,
                            max_size=cfg.max_size,
                            device=cfg.device, precision=cfg.precision, jobs=1,
                            seeds=(cfg.seed,),
                            progress=cfg.progress, command=cfg.command)


def _public(cfg: LoopConfig) -> dict[str, Any]:
    """The settings as JSON, without the API key."""
    out = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}
    out["key"] = None
    return out


def _claim(cfg: LoopConfig, task: Task) -> None:
    """Records the result-changing settings in ``settings.json``, or refuses to mix runs:
    steps are skipped when their output exists, so other settings would reuse stale ones."""
    from training.config_flags import result_fields, values_before

    path = cfg.out / "settings.json"
    mine = {k: v for k, v in _public(replace(cfg, task=task)).items()
            if k in result_fields(LoopConfig)}
    if path.is_file():
        from distill.fileio import read_json

        # A setting added since that run was recorded had its ``before`` value there.
        theirs = {**values_before(LoopConfig), **read_json(path, "the run folder's settings")}
        diff = [f"{k}: {theirs.get(k)} -> {v}" for k, v in mine.items() if theirs.get(k) != v]
        if diff:
            raise ConfigError(f"{cfg.out} holds a run with other settings ({', '.join(diff)});"
                              " choose another --out or delete that one")
        return
    write_json_atomic(path, mine, indent=1)


def run_from_args(args: argparse.Namespace) -> int:
    """``distill loop``."""
    run_loop(config_from_args(args))
    return 0
