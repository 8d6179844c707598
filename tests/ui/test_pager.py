"""The pager's page window (``service/ui/pages.js``), run by node: the first and last
pages and a window around the current one, gaps marked (never a gap of one page); a
short list shows every page."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from tests.conftest import REPO

NODE = shutil.which("node")


def _window(current: int, total: int) -> list[int | None]:
    script = ("import { pageWindow } from './service/ui/pages.js';"
              f"console.log(JSON.stringify(pageWindow({current}, {total})));")
    run = subprocess.run([str(NODE), "--input-type=module", "-e", script], cwd=REPO,
                         capture_output=True, text=True, timeout=30, check=True)
    found: list[int | None] = json.loads(run.stdout)
    return found


@pytest.mark.skipif(NODE is None, reason="node is not installed")
def test_a_long_pager_shows_a_window_and_a_short_one_everything() -> None:
    assert _window(0, 5) == [0, 1, 2, 3, 4]
    assert _window(0, 417) == [0, 1, 2, 3, None, 416]
    assert _window(200, 417) == [0, None, 197, 198, 199, 200, 201, 202, 203, None, 416]
    assert _window(416, 417) == [0, None, 413, 414, 415, 416]
    assert _window(5, 10) == list(range(10))  # a one-page gap shows the page instead
    assert _window(6, 12) == [0, None, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert _window(0, 1) == [0]
