"""The distillation experiment's --quick mode, end to end."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from distill.errors import ConfigError
from training.experiment import _claim_out_dir, run_experiment
from training.experiment_config import quick_config


@pytest.fixture(autouse=True)
def _threads() -> Iterator[None]:
    """These tests pick their own thread counts; the rest of the suite gets its own back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.mark.slow
def test_quick_experiment_runs_end_to_end(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cfg = quick_config(tmp_path / "exp", rounds=1, oracle=True, progress=False,
                       compare_pooling=True, ignore_factor=2.0,
                       command=["distill", "experiment", "--quick"])
    results = run_experiment(cfg)
    assert {(r["task"], r["seed"]) for r in results["runs"]} == {("keypoints", 0), ("boxes", 0)}
    for run in results["runs"]:
        # The fair comparison: the baseline gets exactly the student's iterations.
        assert run["iters"]["baseline"] == run["iters"]["student"] == cfg.student_iters
        assert run["iters"]["teacher"] == cfg.teacher_iters
        assert {"teacher", "baseline", "baseline+tta", "student", "student+tta",
                "student-shifted", "student-oracle", "student-shifted-oracle", "student-ignore",
                "student-shifted-ignore"} <= set(run["scores"])
        # The raw-pooling students exist for box teachers only.
        assert ("student-raw" in run["scores"]) == (run["task"] == "boxes")
        assert ("student-raw-ignore" in run["scores"]) == (run["task"] == "boxes")
        # The ignore variant reuses the teacher's predictions: only the selection reran.
        assert run["pseudo"]["pseudo-ignore"]["annotations"] == \
            run["pseudo"]["pseudo"]["annotations"]
        folder = tmp_path / "exp" / run["task"] / "seed0"
        assert (folder / "pseudo-ignore.json.predictions.jsonl").read_bytes() == \
            (folder / "pseudo.json.predictions.jsonl").read_bytes()
        assert run["pseudo"]["pseudo"]["images"] == cfg.unlabeled
        quality = run["pseudo"]["pseudo"]["quality"]["bbox"]
        assert 0.0 <= quality["precision50"] <= 1.0 and 0.0 <= quality["recall50"] <= 1.0
    report = (tmp_path / "exp" / "RESULTS.md").read_text()
    assert "| baseline (labeled only, student's budget) | single pass |" in report
    assert "Quick mode" in report and "distill train --task boxes" in report
    saved = json.loads((tmp_path / "exp" / "results.json").read_text())
    assert saved["config"]["student_iters"] == cfg.student_iters
    assert "| pseudo-labels | seed | kept |" in report
    assert "share of oracle gain" in report and "ignore regions" in report
    # A rerun finds every step done, re-renders the report and lists both invocations.
    again = run_experiment(cfg)
    assert again["runs"][0]["times"] == results["runs"][0]["times"]
    assert len(again["invocations"]) == 2
    assert "2 invocations" in (tmp_path / "exp" / "RESULTS.md").read_text()
    # Other sizes in the same directory would reuse stale steps: refused, nothing run.
    with pytest.raises(ConfigError, match="student_iters: 6 -> 7"):
        run_experiment(replace(cfg, student_iters=cfg.student_iters + 1))


def test_a_teacher_with_the_students_budget_is_the_baseline(tmp_path: Path) -> None:
    """Same seed, data and schedule is the same training: done once, evaluated once."""
    torch.set_num_threads(1)
    cfg = quick_config(tmp_path / "exp", tasks=("boxes",), shifted=0, rounds=1,
                       teacher_iters=6, student_iters=6, progress=False)
    run = run_experiment(cfg)["runs"][0]
    seed_dir = cfg.out_dir / "boxes" / "seed0"
    assert (seed_dir / "teacher.pt").is_file() and not (seed_dir / "baseline.pt").exists()
    assert not (seed_dir / "eval-baseline.json").exists()
    assert run["iters"]["baseline"] == run["iters"]["teacher"] == run["iters"]["student"] == 6
    assert run["scores"]["baseline+tta"] == run["scores"]["teacher+tta"]
    report = (cfg.out_dir / "RESULTS.md").read_text()
    assert "| teacher = baseline (labeled only, student's budget) | single pass |" in report
    assert "| teacher (labeled only) |" not in report


def test_a_shifted_split_may_join_a_finished_run_once(tmp_path: Path) -> None:
    """Adding the shifted student changes no earlier result; any other change is refused."""
    cfg = quick_config(tmp_path / "exp", shifted=0)
    cfg.out_dir.mkdir(parents=True)
    _claim_out_dir(cfg)
    _claim_out_dir(replace(cfg, shifted=4))
    assert json.loads((cfg.out_dir / "settings.json").read_text())["shifted"] == 4
    with pytest.raises(ConfigError, match="shifted: 4 -> 8"):
        _claim_out_dir(replace(cfg, shifted=8))
    with pytest.raises(ConfigError, match="shifted: 4 -> 0"):
        _claim_out_dir(cfg)
    fresh = replace(cfg, out_dir=tmp_path / "other")
    fresh.out_dir.mkdir()
    _claim_out_dir(fresh)
    with pytest.raises(ConfigError, match="labeled: 6 -> 7"):
        _claim_out_dir(replace(fresh, shifted=4, labeled=7))


@pytest.mark.slow
def test_sigterm_takes_the_worker_processes_down(tmp_path: Path) -> None:
    """Stopping a parallel experiment must not leave its pipelines training as orphans."""
    import psutil

    script = ("import sys; from pathlib import Path; "
              "from training.experiment import run_experiment; "
              "from training.experiment_config import quick_config; "
              "run_experiment(quick_config(Path(sys.argv[1]), jobs=2, progress=False))")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path / "exp")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert proc.stdout is not None
        started = 0
        for line in proc.stdout:  # both pipelines report their first step
            started += "train teacher ..." in line
            if started == 2:
                break
        assert started == 2, "the pipelines never started"
        workers = psutil.Process(proc.pid).children(recursive=True)
        assert len(workers) >= 2
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) != 0
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"orphaned workers: {alive}"
    finally:
        proc.kill()


@pytest.mark.slow
def test_student_levers_reach_the_students_only(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    cfg = quick_config(tmp_path / "exp", tasks=("boxes",), shifted=0, rounds=1,
                       progress=False, labeled_ratio=0.5, student_init="teacher")
    (run,) = run_experiment(cfg)["runs"]
    trains = {c.split("--out ")[1].split()[0]: c for c in run["commands"]
              if c.startswith("distill train")}
    folder = tmp_path / "exp" / "boxes" / "seed0"
    teacher_cmd = trains[str(folder / "teacher.pt")]
    student_cmd = trains[str(folder / "student.pt")]
    assert "--init" not in teacher_cmd and "--pseudo-json" not in teacher_cmd
    assert "--labeled-ratio 0.5" in student_cmd
    assert f"--init {folder / 'teacher.pt'}" in student_cmd
    # Another lever in the same folder would reuse these students: refused.
    with pytest.raises(ConfigError, match="labeled_ratio"):
        run_experiment(replace(cfg, labeled_ratio=0.6))
