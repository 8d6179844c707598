"""Seeds a running service for the schemathesis run and writes its configuration.

    python tests/contract/seed.py URL KEY IMAGES_DIR BASE_TOML OUT_TOML

Waits until the API and a worker are ready, uploads two images into the dataset
``contract`` and waits for that job to finish (so its annotations, review, images and
selection exist), uploads one more image as a job for ``DELETE /jobs/{job_id}`` alone
(deleting the first would leave the rest of the run with 404s), and writes
``BASE_TOML`` plus schemathesis dictionaries of those ids to ``OUT_TOML``. Each path
parameter takes a real value about half the time and a generated one otherwise.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

DATASET = "contract"
TEACHER = "teacher"  # the checkpoint's file stem (DISTILL_TEACHER)
REAL_SHARE = 0.5


def _wait(what: str, ready: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if ready():
                return
        except httpx.TransportError:
            pass
        time.sleep(0.25)
    raise SystemExit(f"seed: {what} not within {timeout_s:.0f} s")


def _upload(client: httpx.Client, images: list[Path], dataset: str | None) -> str:
    files = [("files", (p.name, p.read_bytes(), "image/png")) for p in images]
    data = {"teacher": TEACHER, **({"dataset": dataset} if dataset else {})}
    response = client.post("/annotate", files=files, data=data)
    if response.status_code != 202:
        raise SystemExit(f"seed: upload answered {response.status_code}: {response.text}")
    return str(response.json()["id"])


def _ended(client: httpx.Client, job: str) -> bool:
    """Whether the job finished; one that failed or was cancelled stops the seeding."""
    record = client.get(f"/jobs/{job}").json()
    if record["status"] in ("failed", "cancelled"):
        raise SystemExit(f"seed: job {job} {record['status']}: {record.get('error')}")
    return bool(record["status"] == "finished")


def _toml_list(values: list[str | int]) -> str:
    return "[" + ", ".join(json.dumps(v) for v in values) + "]"


def main(url: str, key: str, images_dir: Path, base: Path, out: Path) -> None:
    """Seeds the service at ``url`` and writes the run's configuration to ``out``."""
    images = sorted(images_dir.glob("*.png"))
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"},
                      timeout=30) as client:
        _wait("the API and a worker", lambda: client.get("/readyz").status_code == 200, 120)
        job = _upload(client, images[:2], DATASET)
        _wait(f"job {job} finished", lambda: _ended(client, job), 180)
        doomed = _upload(client, images[2:3], None)
    # TOML: top-level tables may follow the base file's [[operations]] entries.
    sections = {
        "jobs": [job], "doomed": [doomed], "datasets": [DATASET], "teachers": [TEACHER],
        "images": [0, 1],
    }
    text = base.read_text(encoding="utf-8") + "\n# Written by tests/contract/seed.py.\n"
    for name, values in sections.items():
        text += f"[dictionaries.{name}]\nvalues = {_toml_list(values)}\n\n"
    real = f"probability = {REAL_SHARE}"
    text += ("[parameters]\n"
             f'"path.job_id" = {{ dictionary = "jobs", {real} }}\n'
             f'"path.name" = {{ dictionary = "datasets", {real} }}\n'
             f'"path.teacher" = {{ dictionary = "teachers", {real} }}\n'
             f'"query.teacher" = {{ dictionary = "teachers", {real} }}\n'
             f'"query.dataset" = {{ dictionary = "datasets", {real} }}\n'
             f'"path.n" = {{ dictionary = "images", {real} }}\n\n'
             "[[operations]]\n"
             'include-path = "/jobs/{job_id}"\n'
             'include-method = "DELETE"\n'
             f'parameters = {{ "path.job_id" = {{ dictionary = "doomed", {real} }} }}\n')
    out.write_text(text, encoding="utf-8")
    print(f"seed: job {job} finished in dataset {DATASET}; job {doomed} to delete")


if __name__ == "__main__":
    if len(sys.argv) != 6:
        raise SystemExit(__doc__)
    main(sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4]), Path(sys.argv[5]))
