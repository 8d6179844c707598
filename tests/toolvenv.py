"""Virtual environments for the real tools the project integrates with (cvat-sdk, ...),
made by the test tooling beside the project's own, as tests/contract/schemathesis.sh
makes schemathesis's: the tools stay out of the project's dependencies.

Each lives in ``<repo>/.venv-<name>`` (gitignored), made once and reused; a marker file
records the requirements it was made with, so changing them remakes it.
"""

from __future__ import annotations

import fcntl
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def tool_python(name: str, requirements: list[str], timeout: float = 900) -> Path:
    """The Python of ``.venv-<name>`` with ``requirements`` installed (made if missing).

    Raises ``subprocess.CalledProcessError`` with pip's output when the install fails:
    a tool that cannot be installed fails its test rather than skipping it.
    """
    venv = REPO / f".venv-{name}"
    python = venv / "bin" / "python"
    marker = venv / ".requirements"
    wanted = "\n".join(requirements)
    lock = REPO / f".venv-{name}.lock"
    with lock.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # two test processes must not build it at once
        if python.exists() and marker.exists() and marker.read_text() == wanted:
            return python
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet",
                        "--disable-pip-version-check", *requirements],
                       check=True, timeout=timeout, capture_output=True, text=True)
        marker.write_text(wanted)
    return python
