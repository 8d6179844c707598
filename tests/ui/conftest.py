"""The browser tests' fixtures: one stack of teachers and a worker, one browser, a fresh
page per test, and the finished jobs and datasets the review tests share. Package-scoped,
so that every file of ``tests/ui`` uses the same stack and jobs, started once."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServiceStack
from tests.helpers import make_teacher
from tests.ui.page import CHROMIUM, EVIL, MAX_FILES, SERVED


@pytest.fixture(scope="package")
def stack(make_stack: Callable[..., ServiceStack], teacher_checkpoint: Path,
          synthetic: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[ServiceStack]:
    """A keypoint teacher, a box teacher, a box teacher whose category is named like a
    script, one without labeled statistics (its calibrated jobs fail), and one that no
    worker serves (named to sort first: the form must not default to it)."""
    root = tmp_path_factory.mktemp("ui")
    labeled = json.loads(synthetic["labeled"].boxes_json.read_text())
    make_teacher(root / "shapes.pt", synthetic["labeled"].boxes_json, task="boxes")
    labeled["categories"][0]["name"] = EVIL
    (root / "evil.json").write_text(json.dumps(labeled))
    make_teacher(root / "evil.pt", root / "evil.json", task="boxes")
    _without_stats(root / "shapes.pt", root / "nostats.pt")
    s = make_stack(api=True, workers=0, one_teacher=False, max_files=MAX_FILES,
                   teachers=f"person={teacher_checkpoint},evil={root / 'evil.pt'},"
                            f"shapes={root / 'shapes.pt'},nostats={root / 'nostats.pt'},"
                            f"archive={root / 'shapes.pt'}")
    s.start_worker(args=tuple(a for t in SERVED for a in ("--teacher", t)))
    yield s
    s.close()


def _without_stats(source: Path, target: Path) -> None:
    from dataclasses import replace

    from distill.checkpoint import load_checkpoint, save_checkpoint

    card, weights, _ = load_checkpoint(source)
    save_checkpoint(target, replace(card, labeled_stats=None), weights)


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield b
        b.close()


@pytest.fixture()
def page(browser: Any) -> Iterator[Any]:
    # bypass_csp: Playwright's waiting helpers evaluate strings, which the page's CSP
    # forbids (as it should); the names test below holds without the CSP's help.
    p = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True,
                         bypass_csp=True)
    dialogs: list[str] = []

    def on_dialog(d: Any) -> None:
        dialogs.append(d.message)
        d.dismiss()

    p.on("dialog", on_dialog)
    p.on("pageerror", lambda e: dialogs.append(f"page error: {e}"))
    yield p
    p.close()
    assert dialogs == []  # no native dialog (confirmations are the page's) and no error


@pytest.fixture(scope="package")
def reviewed(stack: ServiceStack, unlabeled_images: list[Path]) -> dict[str, dict[str, str]]:
    """Per teacher, a finished job and a finished dataset of two batches (flip: two
    transforms; boxes with min_votes 2, issue 21's point 1)."""
    out: dict[str, dict[str, str]] = {}
    forms: tuple[tuple[str, dict[str, Any]], ...] = (("shapes", {"min_votes": 2}), ("person", {}))
    for teacher, form in forms:
        job = stack.submit(unlabeled_images[:MAX_FILES], teacher=teacher, tta="flip",
                           **form)["id"]
        batches = [stack.submit(b, teacher=teacher, tta="flip", dataset=f"ds-{teacher}", **form)
                   for b in (unlabeled_images[6:9], unlabeled_images[9:12])]
        for j in (job, *(b["id"] for b in batches)):
            stack.wait_job(j)
        out[teacher] = {"job": job, "dataset": f"ds-{teacher}"}
    return out

