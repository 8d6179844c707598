"""Helpers of the browser tests: read what the review page shows (the DOM's data
attributes) and what a downloaded COCO file holds, in the same terms, so that a test
compares them; sign in; move a slider; download. Plus the constants the stack and the
tests share."""

from __future__ import annotations

import json
import os
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import API_KEYS, ServiceStack

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EVIL = "<script>alert('x')</script>"
MAX_FILES = 5  # small, so that the page's batches and a partly refused upload show
SERVED = ("evil", "nostats", "person", "shapes")  # by the worker; "archive" by none
# Each test module's pytestmark.
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and os.environ.get("CI") != "true",
    reason="Debian's chromium is not installed (apt-get install chromium); CI installs it")

Shown = dict[str, Counter[tuple[int, tuple[float, ...], int, int]]]


def sign_in(page: Any, stack: ServiceStack, key: str = API_KEYS[0]) -> None:
    page.goto(f"{stack.url}/ui/")
    page.fill("#key", key)
    page.click("#signin-form button")
    page.wait_for_selector("#nav:not([hidden])")


def fetched(stack: ServiceStack, path: str) -> dict[str, Any]:
    """The JSON answer of GET ``path`` (which must succeed)."""
    with stack.client() as c:
        resp = c.get(path)
    assert resp.status_code == 200, resp.text
    doc: dict[str, Any] = resp.json()
    return doc


def review_doc(stack: ServiceStack, base: str) -> dict[str, Any]:
    return fetched(stack, f"{base}/review")


def open_review(page: Any, kind: str, name: str) -> None:
    """Opens a review from the jobs view (a job's row or a dataset's item)."""
    page.click("nav button[data-view=jobs]")
    where = (f"#jobs-table tr[data-job='{name}'] td.actions button:text('Review')" if kind == "job"
             else f"#datasets li[data-dataset='{name}'] button")
    page.click(where)
    page.wait_for_selector("#review:not([hidden])")
    page.wait_for_function("n => document.querySelector('#review').dataset.name === n", arg=name)


def set_range(page: Any, selector: str, value: float) -> None:
    page.eval_on_selector(
        selector, "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }", str(value))


def shown(page: Any, doc: dict[str, Any]) -> Shown:
    """What the page draws as kept (iscrowd 0) or as ignore regions (1), per file: (category,
    box, iscrowd, visible keypoints), read from the cards' data attributes and mapped to the
    boxes of the review document. Every image must be on the gallery's current page."""
    cards = page.eval_on_selector_all("#gallery .card", """cards => cards.map(c => ({
        file: c.dataset.file, drawn: c.dataset.drawn, ignored: c.dataset.ignored,
        keypoints: c.dataset.keypoints, excluded: c.dataset.excluded}))""")
    by_name = {im["file_name"]: im for im in doc["images"]}
    out: Shown = {}
    for card in cards:
        if card["excluded"] == "true":
            continue
        im = by_name[card["file"]]
        kps = [int(k) for k in card["keypoints"].split(",")] if card["keypoints"] else []
        items: Counter[tuple[int, tuple[float, ...], int, int]] = Counter()
        for crowd, attr in ((0, "drawn"), (1, "ignored")):
            for n, index in enumerate(int(i) for i in card[attr].split(",") if i):
                x1, y1, x2, y2 = im["boxes"][index]
                items[(im["category_ids"][index], _box([x1, y1, x2 - x1, y2 - y1]), crowd,
                       kps[n] if crowd == 0 and kps else 0)] += 1
        if items:
            out[card["file"]] = items
    return out


def in_file(coco: dict[str, Any]) -> Shown:
    """The same view of a COCO file."""
    names = {im["id"]: im["file_name"] for im in coco["images"]}
    out: Shown = {}
    for a in coco["annotations"]:
        out.setdefault(names[a["image_id"]], Counter())[
            (a["category_id"], _box(a["bbox"]), a["iscrowd"],
             a.get("num_keypoints", 0) if not a["iscrowd"] else 0)] += 1
    return out


def _box(xywh: list[float]) -> tuple[float, ...]:
    return tuple(round(v, 2) for v in xywh)


def panel_counts(page: Any) -> dict[str, tuple[int, int]]:
    """Per category id: (kept, candidates) as the panel says."""
    boxes = page.eval_on_selector_all("#categories .category", """els => els.map(e => [
        e.dataset.category, Number(e.dataset.kept), Number(e.dataset.candidates)])""")
    return {c: (k, n) for c, k, n in boxes}


def file_counts(coco: dict[str, Any]) -> dict[str, tuple[int, int]]:
    report = coco["info"]["categories_report"]
    return {k: (v["kept"], v["candidates"]) for k, v in report.items() if k != "keypoints"}


def download(page: Any) -> dict[str, Any]:
    """Clicks Download (which saves first when the page has unsaved changes)."""
    with page.expect_download() as info:
        page.click("#download")
    page.wait_for_selector("#review-status:has-text('downloaded')")
    page.wait_for_function("document.querySelector('#review').dataset.dirty === 'false'")
    coco: dict[str, Any] = json.loads(Path(info.value.path()).read_text())
    return coco


def gallery_of(page: Any, doc: dict[str, Any]) -> None:
    """Waits until the gallery has a card for every image of the review document."""
    page.wait_for_function("n => document.querySelectorAll('#gallery .card').length === n",
                           arg=len(doc["images"]))


def screenshots_folder(tmp_path: Path) -> Path:
    """``$DISTILL_SCREENSHOTS`` if set (the README's), else the test's temporary folder."""
    folder = Path(os.environ.get("DISTILL_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder
