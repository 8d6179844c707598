"""The review page in a real browser (Debian's chromium, driven by Playwright) against the
real stack: sign in, upload, watch the job, review, move a threshold, exclude, save,
download. Plus what the page must never do: show another key's data or run a name.

Screenshots go to ``$DISTILL_SCREENSHOTS`` (the README's come from
``DISTILL_SCREENSHOTS=docs/screenshots``), else to the test's temporary folder.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import API_KEYS, ServiceStack, wait_for
from tests.helpers import make_teacher
from tests.ui_page import (
    download,
    fetched,
    file_counts,
    in_file,
    open_review,
    panel_counts,
    review_doc,
    set_range,
    shown,
    sign_in,
)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EVIL = "<script>alert('x')</script>"
MAX_FILES = 5  # small, so that the page's batches and a partly refused upload show
SERVED = ("evil", "nostats", "person", "shapes")  # by the worker; "archive" by none
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and os.environ.get("CI") != "true",
    reason="Debian's chromium is not installed (apt-get install chromium); CI installs it")


@pytest.fixture(scope="module")
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


@pytest.fixture(scope="module")
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
    p.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    p.on("pageerror", lambda e: dialogs.append(f"page error: {e}"))
    yield p
    p.close()
    assert dialogs == []  # no native dialog (confirmations are the page's) and no error


def _screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("DISTILL_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def reviewed(stack: ServiceStack, unlabeled_images: list[Path]) -> dict[str, dict[str, str]]:
    """Per teacher, a finished job and a finished dataset of two batches (flip: two
    transforms; boxes with min_votes 2, issue 21's point 1)."""
    out: dict[str, dict[str, str]] = {}
    for teacher, form in (("shapes", {"min_votes": 2}), ("person", {})):
        job = stack.submit(unlabeled_images[:MAX_FILES], teacher=teacher, tta="flip",
                           **form)["id"]
        batches = [stack.submit(b, teacher=teacher, tta="flip", dataset=f"ds-{teacher}", **form)
                   for b in (unlabeled_images[6:9], unlabeled_images[9:12])]
        for j in (job, *(b["id"] for b in batches)):
            stack.wait_job(j)
        out[teacher] = {"job": job, "dataset": f"ds-{teacher}"}
    return out


def test_upload_and_review_a_dataset_in_the_browser(stack: ServiceStack, page: Any,
                                                    unlabeled_images: list[Path],
                                                    tmp_path: Path) -> None:
    sign_in(page, stack)
    assert "distill-key" not in page.url and API_KEYS[0] not in page.url

    # The form offers what the API serves: the teachers, and the presets each accepts.
    page.click("nav button[data-view=upload]")
    page.wait_for_selector("#teacher option[value=person]", state="attached")
    offered = page.eval_on_selector_all("#teacher option", "os => os.map(o => o.value)")
    assert offered == ["archive", *SERVED]  # as GET /teachers lists them
    assert page.input_value("#teacher") == "evil"  # the first one a live worker serves
    assert "no worker running" in page.inner_text("#teacher option[value=archive]")
    page.select_option("#teacher", "person")
    presets = page.eval_on_selector_all("#preset option", "os => os.map(o => o.value)")
    assert "identity" in presets and "standard" in presets and "paper" not in presets
    assert "paper" in page.inner_text("#preset-refused")  # 1200 px on a 416 px teacher
    assert page.input_value("#preset") == "identity"  # the service's default preset
    page.click("#upload-form summary")  # the selection knobs the teacher's task takes
    assert page.is_hidden("#votes-field") and page.is_visible("#kp-threshold-field")

    # 8 images go in batches of MAX_FILES: two jobs of one dataset.
    page.fill("#dataset", "browser")
    page.set_input_files("#files", [str(p) for p in unlabeled_images[:8]])
    shots = _screenshots(tmp_path)
    page.screenshot(path=str(shots / "upload.png"))
    page.click("#upload-form button[type=submit]")
    page.wait_for_selector("#datasets li[data-dataset=browser]:has-text('2/2 jobs finished')",
                           timeout=180_000)
    page.screenshot(path=str(shots / "jobs.png"))

    # Review: the calibrated view first.
    open_review(page, "dataset", "browser")
    page.wait_for_function("document.querySelectorAll('#gallery .card').length === 8")
    review = review_doc(stack, "/datasets/browser")
    scores = sorted(s for im in review["images"] for s in im["scores"])
    calibrated_kept = review["report"]["1"]["kept"]
    kept = page.locator(".category[data-category='1'] .kept")
    assert kept.inner_text() == f"kept {calibrated_kept} of {len(scores)} candidates"
    assert page.is_hidden("#dirty")

    # Move the person threshold to the median score: the kept count follows.
    threshold = round(scores[len(scores) // 2], 3)
    set_range(page, ".category[data-category='1'] input[type=range]", threshold)
    expected_all = sum(s >= threshold for s in scores)
    assert kept.inner_text() == f"kept {expected_all} of {len(scores)} candidates"
    assert expected_all != calibrated_kept
    assert page.is_visible("#dirty")  # downloads do not apply it yet

    # Exclude one image, save, download: the file applies both.
    first = page.locator("#gallery .card").first
    excluded = first.get_attribute("data-file")
    first.locator("input[type=checkbox]").check()
    page.click("#save")
    page.wait_for_selector("#review-status:has-text('selection saved')")
    assert page.is_hidden("#dirty")
    coco = download(page)
    assert coco["info"]["selection_source"] == "saved"
    assert excluded not in [im["file_name"] for im in coco["images"]]
    assert coco["info"]["excluded"] == [excluded]
    kept_scores = [a["score"] for a in coco["annotations"] if a["category_id"] == 1]
    expected = sum(s >= threshold for im in review["images"] if im["file_name"] != excluded
                   for s in im["scores"])
    assert len(kept_scores) == expected and min(kept_scores) >= threshold
    assert coco["info"]["thresholds"]["score"]["1"] == threshold


def _annotations(stack: ServiceStack, base: str) -> dict[str, Any]:
    return fetched(stack, f"{base}/annotations")


def _gallery_of(page: Any, doc: dict[str, Any]) -> None:
    page.wait_for_function("n => document.querySelectorAll('#gallery .card').length === n",
                           arg=len(doc["images"]))


@pytest.mark.parametrize("teacher", ["shapes", "person"])
def test_the_page_shows_what_the_download_holds(stack: ServiceStack, page: Any,
                                                reviewed: dict[str, dict[str, str]],
                                                teacher: str) -> None:
    """Issue 21, point 1: with min_votes (boxes) and for keypoints, for a job and a dataset,
    as calibrated, after moving sliders, and with the saved selection: the page's kept
    counts and drawn instances are the downloaded file's."""
    sign_in(page, stack)
    for kind in ("job", "dataset"):
        name = reviewed[teacher][kind]
        base = f"/jobs/{name}" if kind == "job" else f"/datasets/{name}"
        open_review(page, kind, name)
        doc = review_doc(stack, base)
        _gallery_of(page, doc)
        job_file = _annotations(stack, base)
        assert job_file["info"]["selection_source"] == "job"
        assert shown(page, doc) == in_file(job_file)
        assert panel_counts(page) == file_counts(job_file)
        if teacher == "shapes":  # flip: 1 or 2 transforms agree; min_votes 2 filters some
            assert any(s == "filtered" for im in doc["images"] for s in im["status"])

        # Sliders moved, nothing saved: the page applies the rule itself; Download saves
        # what the page shows, and the file holds exactly that.
        cat = next(str(c["id"]) for c in doc["categories"]
                   if doc["report"][str(c["id"])]["candidates"])
        old = doc["rule"]["score"][cat]
        set_range(page, f".category[data-category='{cat}'] input[type=range]",
                  round(max(0.0, (0.5 if old is None else old) - 0.05), 3))
        if teacher == "person" and doc["rule"]["keypoint"] is not None:
            set_range(page, "#kp-slider", round(doc["rule"]["keypoint"] - 0.3, 2))
            assert page.get_attribute("#kp-panel", "data-kept-keypoints") is not None
        assert page.get_attribute("#review", "data-dirty") == "true"
        before, counts = shown(page, doc), panel_counts(page)
        assert counts != file_counts(job_file) or before != in_file(job_file)
        coco = download(page)
        assert coco["info"]["selection_source"] == "saved"
        assert in_file(coco) == before and file_counts(coco) == counts

        # The saved selection, from a fresh page load.
        page.reload()
        page.wait_for_selector("#nav:not([hidden])")
        open_review(page, kind, name)
        doc = review_doc(stack, base)
        _gallery_of(page, doc)
        assert shown(page, doc) == in_file(coco) and panel_counts(page) == file_counts(coco)

        # Reset to calibrated: the job's own thresholds again; reset to saved: back.
        page.click("#reset-calibrated")
        assert panel_counts(page) == file_counts(job_file) and shown(page, doc) == in_file(job_file)
        assert page.is_visible("#dirty")
        page.click("#reset-saved")
        assert page.is_hidden("#dirty") and shown(page, doc) == in_file(coco)


def _to_canvas(page: Any, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of image point (x, y) in the zoom."""
    data = page.eval_on_selector("#zoom-canvas", """c => ({s: +c.dataset.scale,
        ox: +c.dataset.ox, oy: +c.dataset.oy, left: c.getBoundingClientRect().left,
        top: c.getBoundingClientRect().top})""")
    return data["left"] + x * data["s"] + data["ox"], data["top"] + y * data["s"] + data["oy"]


def test_zoom_reject_and_the_per_class_views(stack: ServiceStack, page: Any,
                                             reviewed: dict[str, dict[str, str]]) -> None:
    sign_in(page, stack)
    name = reviewed["person"]["job"]
    open_review(page, "job", name)
    doc = review_doc(stack, f"/jobs/{name}")
    _gallery_of(page, doc)
    # A threshold at the median score leaves some predictions out; then the image with the
    # most kept instances among those with some left out.
    scores = sorted(s for i in doc["images"] for s in i["scores"])
    set_range(page, ".category[data-category='1'] input[type=range]",
              round(scores[len(scores) // 2], 3))
    by = {i["file_name"]: i for i in doc["images"]}
    file, _ = max(((f, k) for f, k in page.eval_on_selector_all(
        "#gallery .card", "cs => cs.map(c => [c.dataset.file, Number(c.dataset.kept)])")
        if k < len(by[f]["scores"])), key=lambda fk: fk[1])
    im = by[file]
    card = page.locator(f"#gallery .card[data-file='{file}']")
    thumb_width = card.locator("canvas").bounding_box()["width"]
    card.locator("canvas").click()

    # Fitted to the viewport, whatever the image's own size; the file name shown.
    page.wait_for_selector("#zoom[open]")
    assert page.inner_text("#zoom-name") == file
    page.wait_for_function("+document.querySelector('#zoom-canvas').dataset.scale > 0")
    fit = float(page.get_attribute("#zoom-canvas", "data-scale"))
    stage = page.locator("#zoom-canvas").bounding_box()
    assert fit == pytest.approx(min(stage["width"] / im["width"], stage["height"] / im["height"]),
                                rel=0.02)
    assert im["width"] * fit > 2 * thumb_width

    # Wheel zoom around the cursor, drag to pan.
    cx, cy = stage["x"] + stage["width"] / 2, stage["y"] + stage["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.wheel(0, -500)
    page.wait_for_function("s => +document.querySelector('#zoom-canvas').dataset.scale > s",
                           arg=fit * 1.5)
    ox = float(page.get_attribute("#zoom-canvas", "data-ox"))
    page.mouse.down()
    page.mouse.move(cx + 80, cy, steps=5)
    page.mouse.up()
    assert float(page.get_attribute("#zoom-canvas", "data-ox")) == pytest.approx(ox + 80, abs=2)
    page.click("#zoom-fit")

    # Every prediction listed with its score and votes; a click on an instance selects its row.
    rows = page.locator("#zoom-list li")
    assert rows.count() == len(im["scores"])
    status = dict(page.eval_on_selector_all(
        "#zoom-list li", "rs => rs.map(r => [Number(r.dataset.index), r.dataset.status])"))
    kept = [i for i, s in status.items() if s == "kept"]
    assert kept, "the teacher kept nothing on the first image"
    i = min(kept, key=lambda k: (im["boxes"][k][2] - im["boxes"][k][0])
            * (im["boxes"][k][3] - im["boxes"][k][1]))
    x1, y1, x2, y2 = im["boxes"][i]
    page.mouse.click(*_to_canvas(page, (x1 + x2) / 2, (y1 + y2) / 2))
    selected = int(page.get_attribute("#zoom-list li.selected", "data-index"))
    sx1, sy1, sx2, sy2 = im["boxes"][selected]
    assert sx1 - 8 <= (x1 + x2) / 2 <= sx2 + 8 and sy1 - 8 <= (y1 + y2) / 2 <= sy2 + 8
    assert f"{im['scores'][selected]:.3f}" in page.inner_text("#zoom-list li.selected")

    # Hovering a kept keypoint names it, with its score, in the score units of the file.
    names = doc["categories"][0]["keypoints"]
    k = max(range(len(names)), key=lambda j: im["keypoint_scores"][i][j])
    page.mouse.move(*_to_canvas(page, *im["keypoints"][i][k]))
    page.wait_for_selector("#zoom-tip:not([hidden])")
    tip = page.inner_text("#zoom-tip")
    assert "score" in tip and any(n in tip for n in names)

    # Reject a kept instance from its row: counts follow, Download saves and the file obeys.
    page.click(f"#zoom-list li[data-index='{i}'] button.decide")
    assert page.get_attribute(f"#zoom-list li[data-index='{i}']", "data-status") == "rejected"
    assert card.get_attribute("data-kept") == str(len(kept) - 1)
    assert page.is_visible("#dirty")
    # Accept a prediction the thresholds leave out: it is kept whatever its score.
    out = next(j for j, st in status.items() if st == "candidate")
    page.click(f"#zoom-list li[data-index='{out}'] button.decide")
    assert page.get_attribute(f"#zoom-list li[data-index='{out}']", "data-status") == "kept"
    assert "(accepted)" in page.inner_text(f"#zoom-list li[data-index='{out}']")
    assert card.get_attribute("data-kept") == str(len(kept))
    page.click("#zoom-close")
    coco = download(page)
    assert coco["info"]["selection"]["rejected"] == {file: [i]}
    assert coco["info"]["selection"]["accepted"] == {file: [out]}
    assert shown(page, review_doc(stack, f"/jobs/{name}")) == in_file(coco)

    # The per-class filter and the crops of one class, lowest score first, with reject.
    name = reviewed["shapes"]["job"]
    open_review(page, "job", name)
    doc = review_doc(stack, f"/jobs/{name}")
    cat = max(doc["categories"], key=lambda c: doc["report"][str(c["id"])]["kept"])["id"]
    with_cat = {im["file_name"] for im in doc["images"] if cat in im["category_ids"]}
    page.select_option("#class-filter", str(cat))
    cards = page.eval_on_selector_all("#gallery .card", "cs => cs.map(c => [c.dataset.file, "
                                      "c.dataset.drawn])")
    assert {f for f, _ in cards} == with_cat  # only images with the class, only it drawn
    by = {im["file_name"]: im for im in doc["images"]}
    assert all(by[f]["category_ids"][int(j)] == cat for f, d in cards for j in d.split(",") if j)
    page.select_option("#view-mode", "crops")
    crops = page.eval_on_selector_all("#crops .crop", """cs => cs.map(c => [c.dataset.file,
        Number(c.dataset.index), c.dataset.status])""")
    expected = sorted((by[f]["scores"][j], f, j) for f, im in by.items()
                      for j, s in enumerate(im["status"]) if s == "kept"
                      and im["category_ids"][j] == cat)
    # The first page of crops (60 a page), lowest score first, of every kept one.
    assert [(f, j) for f, j, _ in crops] == [(f, j) for _, f, j in expected][:60]
    assert page.inner_text("#crops .crops-head").startswith(f"{len(expected)} kept")
    first = page.locator("#crops .crop").first
    first.locator("button").click()
    assert page.locator("#crops .crop").first.get_attribute("data-status") == "rejected"
    assert page.get_attribute(f".category[data-category='{cat}']", "data-kept") == str(
        len(expected) - 1)


def test_errors_in_words_confirmations_focus_and_paging(stack: ServiceStack, page: Any,
                                                        unlabeled_images: list[Path],
                                                        tmp_path: Path) -> None:
    # A calibrated job of a teacher without labeled statistics fails, saying why.
    failed = stack.submit(unlabeled_images[:1], teacher="nostats", tta="identity")["id"]
    stack.wait_job(failed, status="failed")
    # A dataset whose batches ran with two teachers cannot be calibrated together.
    for teacher in ("shapes", "evil"):
        stack.wait_job(stack.submit(unlabeled_images[:1], teacher=teacher, tta="identity",
                                    dataset="mixed")["id"])
    sign_in(page, stack)
    row = f"#jobs-table tr[data-job='{failed}']"
    state = page.wait_for_selector(f"{row} td:nth-child(5)").inner_text()
    assert state.startswith("failed: ") and "labeled" in state and "{" not in state
    page.click("#datasets li[data-dataset=mixed] button")
    message = page.wait_for_selector("#jobs-status:has-text('cannot review')").inner_text()
    assert "different teachers" in message and "{" not in message

    # The 2-second refresh keeps the keyboard focus where it was.
    page.focus(f"{row} td.actions button")
    page.wait_for_timeout(2600)
    assert page.evaluate("document.activeElement.closest('tr')?.dataset.job") == failed

    # Delete asks first; "No" keeps the job, "Yes" deletes it.
    page.click(f"{row} td.actions button")
    page.wait_for_selector("#confirm[open]")
    assert "Delete job" in page.inner_text("#confirm-text")
    page.click("#confirm-no")
    assert stack.job(failed)["status"] == "failed"
    page.click(f"{row} td.actions button")
    page.click("#confirm-yes")
    page.wait_for_selector(row, state="detached")
    with stack.client() as c:
        assert c.get(f"/jobs/{failed}").status_code == 404

    # Every job is reachable: pages of 5 through next_cursor.
    page.select_option("#jobs-per-page", "5")
    page.wait_for_function("document.querySelectorAll('#jobs-table tbody tr').length === 5")
    first = page.eval_on_selector_all("#jobs-table tbody tr", "rs => rs.map(r => r.dataset.job)")
    page.click("#jobs-older")
    page.wait_for_function("ids => ![...document.querySelectorAll('#jobs-table tbody tr')]"
                           ".some(r => ids.includes(r.dataset.job))", arg=first)
    assert page.inner_text("#jobs-page") == "page 2"
    page.click("#jobs-newer")
    page.wait_for_function("id => document.querySelector('#jobs-table tbody tr')"
                           ".dataset.job === id", arg=first[0])

    # A partly refused upload says exactly what was queued, in words.
    bad = tmp_path / "zz-not-an-image.png"
    bad.write_bytes(b"not an image at all")
    page.click("nav button[data-view=upload]")
    page.wait_for_selector("#teacher option[value=shapes]", state="attached")
    page.select_option("#teacher", "shapes")
    page.click("#upload-form summary")
    assert page.is_visible("#votes-field") and page.is_hidden("#kp-threshold-field")
    page.fill("#dataset", "partial")
    page.set_input_files("#files", [*map(str, unlabeled_images[:6]), str(bad)])
    page.click("#upload-form button[type=submit]")
    status = page.wait_for_selector("#upload-status:has-text('were queued')").inner_text()
    assert status.startswith(f"{MAX_FILES} of 7 images were queued") and "{" not in status
    assert "zz-not-an-image.png" in page.inner_text("#upload-files")
    with stack.client() as c:
        jobs = c.get("/jobs", params={"dataset": "partial"}).json()["jobs"]
    assert [j["progress"]["total"] for j in jobs] == [MAX_FILES]


def test_the_page_runs_under_its_csp(stack: ServiceStack, browser: Any,
                                    reviewed: dict[str, dict[str, str]]) -> None:
    """Without Playwright's CSP bypass: the modules load, a review and the zoom draw, and
    the browser reports no violation (styles are set through the CSSOM, never inline)."""
    page = browser.new_page(viewport={"width": 1200, "height": 800})
    console: list[str] = []
    page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: console.append(str(e)))
    page.on("response", lambda r: console.append(f"{r.status} {r.url}") if r.status >= 400
            else None)
    sign_in(page, stack)
    job = reviewed["person"]["job"]
    page.click(f"#jobs-table tr[data-job='{job}'] td.actions button:text('Review')")
    page.wait_for_selector("#gallery canvas[data-ready=true]")
    page.click("#gallery .card canvas")
    page.wait_for_selector("#zoom-list li")
    page.close()
    assert console == []


def test_names_render_as_text_and_keys_stay_apart(stack: ServiceStack, page: Any,
                                                  unlabeled_images: list[Path]) -> None:
    headers = {"Authorization": f"Bearer {API_KEYS[0]}"}
    files = [("files", (f"<b>{EVIL}</b>.png", unlabeled_images[0].read_bytes(), "image/png"))]
    accepted = httpx.post(f"{stack.url}/annotate", headers=headers, files=files,
                          data={"teacher": "evil", "tta": "identity"}).json()
    assert "<" not in accepted["files"][0]["name"]  # names are sanitised on the way in
    job = accepted["id"]
    stack.wait_job(job, timeout=120)
    # Every blob URL the page makes, to check that sign-out revokes them.
    page.add_init_script("""(() => { const make = URL.createObjectURL; window.blobs = [];
        URL.createObjectURL = (b) => { const u = make(b); window.blobs.push(u); return u; };
    })()""")
    sign_in(page, stack)
    page.wait_for_selector(f"#jobs-table tr[data-job='{job}'] button")
    page.click(f"#jobs-table tr[data-job='{job}'] button")
    title = page.wait_for_selector(".category h3")
    assert title.inner_text() == EVIL  # shown as text, not parsed as markup
    assert page.locator("#categories script").count() == 0
    csp = httpx.get(f"{stack.url}/ui/").headers["content-security-policy"]
    assert "script-src 'self'" in csp
    page.wait_for_selector("#gallery canvas[data-ready=true]")

    # Sign-out clears the page: the review, the lists, and every image URL is revoked.
    page.click("#signout")
    assert page.locator("#gallery .card").count() == 0
    assert page.locator("#categories .category").count() == 0
    assert page.locator("#jobs-table tbody tr").count() == 0
    alive = page.evaluate("""async () => (await Promise.all(window.blobs.map(u =>
        fetch(u).then(() => u, () => null)))).filter(Boolean)""")
    assert page.evaluate("window.blobs.length") > 0 and alive == []

    # Another key in the same browser: none of the first key's jobs, and its image URL
    # answers 404, not a copy from the browser's cache.
    sign_in(page, stack, API_KEYS[1])
    page.wait_for_selector("#jobs-empty:not([hidden])")
    assert page.locator(f"#jobs-table tr[data-job='{job}']").count() == 0
    status = page.evaluate("""async ([u, k]) => (await fetch(u, {headers:
        {Authorization: 'Bearer ' + k}})).status""", [f"/jobs/{job}/images/0?thumb=true",
                                                      API_KEYS[1]])
    assert status == 404

    # Another key sees nothing of this job: not its review, images or selection.
    other = {"Authorization": f"Bearer {API_KEYS[1]}"}
    for method, path in (("GET", f"/jobs/{job}/review"), ("GET", f"/jobs/{job}/images/0"),
                         ("GET", f"/jobs/{job}/images/0?thumb=true"),
                         ("PUT", f"/jobs/{job}/selection")):
        resp = httpx.request(method, stack.url + path, headers=other, json={})
        assert resp.status_code == 404, (path, resp.text)
    # The owner's image endpoint serves the job's own images, by index only; the browser
    # revalidates each use (the key is checked every time; a 304 costs no bytes).
    own = httpx.get(f"{stack.url}/jobs/{job}/images/0?thumb=true", headers=headers)
    assert own.status_code == 200 and own.headers["content-type"] == "image/jpeg"
    assert own.headers["cache-control"] == "private, no-cache"
    assert own.headers["vary"] == "Authorization"
    again = httpx.get(f"{stack.url}/jobs/{job}/images/0?thumb=true",
                      headers={**headers, "If-None-Match": own.headers["etag"]})
    assert again.status_code == 304
    for bad in ("1", "-1", "..%2F..%2Fjob.json", "0%2F..%2F..%2Fjob.json"):
        assert httpx.get(f"{stack.url}/jobs/{job}/images/{bad}",
                         headers=headers).status_code in (404, 422), bad
    wait_for(lambda: (stack.data_dir / "jobs" / job / "thumbs" / "0.jpg").exists(), 5,
             "the thumbnail to be kept")


@pytest.mark.skipif(not os.environ.get("DISTILL_SCREENSHOT_TEACHER"),
                    reason="the README's keypoint screenshots need a trained teacher: "
                           "DISTILL_SCREENSHOT_TEACHER=teacher.pt (and DISTILL_SCREENSHOTS)")
def test_keypoint_review_screenshots(make_stack: Callable[..., ServiceStack], page: Any,
                                     unlabeled_images: list[Path], tmp_path: Path) -> None:
    """The README's keypoint review with a trained teacher: the gallery, the zoom with a
    keypoint named on hover, and the crops of the class."""
    s = make_stack(api=True, workers=1, one_teacher=False,
                   teachers=f"person={os.environ['DISTILL_SCREENSHOT_TEACHER']}")
    images = sorted(Path(os.environ.get("DISTILL_SCREENSHOT_IMAGES") or
                         unlabeled_images[0].parent).glob("*.png"))[:12]
    jobs = [s.submit(images[i:i + 6], teacher="person", tta="standard", dataset="people")["id"]
            for i in range(0, len(images), 6)]
    for job in jobs:
        s.wait_job(job, timeout=600)
    shots = _screenshots(tmp_path)
    sign_in(page, s)
    open_review(page, "dataset", "people")
    page.wait_for_function("document.querySelectorAll('#gallery canvas[data-ready]').length > 0")
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / "review.jpg"), type="jpeg", quality=80, full_page=True)
    doc = review_doc(s, "/datasets/people")
    im = max(doc["images"], key=lambda i: i["status"].count("kept"))
    page.click(f"#gallery .card[data-file='{im['file_name']}'] canvas")
    page.wait_for_function("+document.querySelector('#zoom-canvas').dataset.scale > 0")
    i = im["status"].index("kept")
    page.click(f"#zoom-list li[data-index='{i}']")
    k = max(range(len(im["keypoints"][i])), key=lambda j: im["keypoint_scores"][i][j])
    page.mouse.move(*_to_canvas(page, *im["keypoints"][i][k]))
    page.wait_for_selector("#zoom-tip:not([hidden])")
    page.screenshot(path=str(shots / "zoom.jpg"), type="jpeg", quality=80)
    page.click("#zoom-close")
    page.select_option("#view-mode", "crops")
    page.wait_for_selector("#crops .crop")
    page.wait_for_timeout(500)
    page.screenshot(path=str(shots / "crops.jpg"), type="jpeg", quality=80)
