"""The GPU check runs its whole code path on the CPU in dry mode (no GPU in tests)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import gpu_check


def test_dry_run_prints_speed_and_agreement(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_check.main(["--dry-run"]) == 0
    out = capsys.readouterr().out
    for task in ("keypoints", "boxes"):
        line = next(line for line in out.splitlines() if line.strip().startswith(task))
        assert "fp32" in line and "fp16" in line and "matched" in line
    # On the CPU autocast is off, so both runs are the same computation: full agreement.
    assert "100.0% of" in out and "keypoints 0.00 px apart" in out


def test_without_a_gpu_the_real_check_says_so(capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert gpu_check.main(["--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err
