"""Virtual environments for the real tools the project integrates with (datumaro,
cvat-sdk, ...), made by the test tooling beside the project's own, as
tests/contract/schemathesis.sh makes schemathesis's: the tools stay out of the
project's dependencies.

Each lives in ``<repo>/.venv-<name>`` (gitignored), made on first use and reused while
its stamp names the same requirements. Only when the package index cannot be reached is
the test skipped, saying so; a failed install with a reachable index fails it.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def tool_python(name: str, requirements: list[str], timeout: float = 1200) -> Path:
    """The Python of ``.venv-<name>`` with ``requirements`` installed (made if missing)."""
    venv = REPO / f".venv-{name}"
    python, stamp = venv / "bin" / "python", venv / "distill-requirements.txt"
    wanted = "\n".join(requirements)
    with open(REPO / f".venv-{name}.lock", "w") as lock:  # one maker at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        if python.exists() and stamp.is_file() and stamp.read_text() == wanted:
            return python
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
        pip = subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                              "--disable-pip-version-check", *requirements],
                             capture_output=True, text=True, timeout=timeout)
        if pip.returncode != 0:
            package = requirements[0].split("=")[0].split(">")[0].split("<")[0]
            probe = subprocess.run([str(python), "-m", "pip", "index", "versions", package],
                                   capture_output=True, text=True, timeout=300)
            if probe.returncode != 0:
                last = (probe.stderr.strip().splitlines() or ["no output"])[-1]
                pytest.skip(f"the package index cannot be reached, so {wanted!r} cannot be "
                            f"installed into {venv.name}: {last}")
            pytest.fail(f"pip install {' '.join(requirements)} failed with the index "
                        f"reachable:\n{pip.stdout[-2000:]}\n{pip.stderr[-4000:]}")
        stamp.write_text(wanted)
    return python
