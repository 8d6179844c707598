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

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
EVIL = "<script>alert('x')</script>"
pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and os.environ.get("CI") != "true",
    reason="Debian's chromium is not installed (apt-get install chromium); CI installs it")


@pytest.fixture(scope="module")
def stack(make_stack: Callable[..., ServiceStack], teacher_checkpoint: Path,
          synthetic: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[ServiceStack]:
    """A keypoint teacher and a box teacher whose category is named like a script."""
    root = tmp_path_factory.mktemp("ui")
    labeled = json.loads(synthetic["labeled"].boxes_json.read_text())
    labeled["categories"][0]["name"] = EVIL
    (root / "evil.json").write_text(json.dumps(labeled))
    make_teacher(root / "evil.pt", root / "evil.json", task="boxes")
    s = make_stack(api=True, workers=0, one_teacher=False,
                   teachers=f"person={teacher_checkpoint},evil={root / 'evil.pt'}")
    s.start_worker()  # serves both
    yield s
    s.close()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"])
        yield b
        b.close()


def _screenshots(tmp_path: Path) -> Path:
    folder = Path(os.environ.get("DISTILL_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _sign_in(page: Any, stack: ServiceStack, key: str = API_KEYS[0]) -> None:
    page.goto(f"{stack.url}/ui/")
    page.fill("#key", key)
    page.click("#signin-form button")
    page.wait_for_selector("#nav:not([hidden])")


def test_review_a_job_in_the_browser(stack: ServiceStack, browser: Any,
                                     unlabeled_images: list[Path], tmp_path: Path) -> None:
    # bypass_csp: Playwright's waiting helpers evaluate strings, which the page's CSP
    # forbids (as it should); the names test below holds without the CSP's help.
    page = browser.new_page(viewport={"width": 1400, "height": 900}, accept_downloads=True,
                            bypass_csp=True)
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    _sign_in(page, stack)
    assert "distill-key" not in page.url and API_KEYS[0] not in page.url

    # Upload 8 images for the person teacher, then watch the job finish.
    page.click("nav button[data-view=upload]")
    page.wait_for_selector("#teacher option[value=person]", state="attached")
    page.select_option("#teacher", "person")
    page.select_option("#preset", "identity")
    page.fill("#dataset", "browser")
    page.set_input_files("#files", [str(p) for p in unlabeled_images[:8]])
    page.click("#upload-form button")
    row = page.wait_for_selector("#jobs-table tr[data-status=finished]", timeout=180_000)
    job_id = row.get_attribute("data-job")
    shots = _screenshots(tmp_path)
    page.screenshot(path=str(shots / "jobs.png"))

    # Review: the calibrated view first.
    row.query_selector("button").click()  # "Review"
    page.wait_for_function("document.querySelectorAll('#gallery .card').length === 8")
    review = httpx.get(f"{stack.url}/jobs/{job_id}/review",
                       headers={"Authorization": f"Bearer {API_KEYS[0]}"}).json()
    scores = sorted(s for im in review["images"] for s in im["scores"])
    calibrated_kept = review["report"]["1"]["kept"]
    kept = page.locator(".category[data-category='1'] .kept")
    assert kept.inner_text() == f"kept {calibrated_kept} of {len(scores)} candidates"

    # Move the person threshold to the median score: the kept count follows.
    threshold = round(scores[len(scores) // 2], 3)
    page.eval_on_selector(".category[data-category='1'] input[type=range]",
                          "(el, v) => { el.value = v; el.dispatchEvent(new Event('input')); }",
                          str(threshold))
    expected_all = sum(s >= threshold for s in scores)
    assert kept.inner_text() == f"kept {expected_all} of {len(scores)} candidates"
    assert expected_all != calibrated_kept

    # Exclude one image, save, download: the file applies both.
    first = page.locator("#gallery .card").first
    excluded = first.get_attribute("data-file")
    first.locator("input[type=checkbox]").check()
    page.click("#save")
    page.wait_for_selector("#review-status:has-text('selection saved')")
    page.screenshot(path=str(shots / "review.png"), full_page=True)
    with page.expect_download() as info:
        page.click("#download")
    coco = json.loads(Path(info.value.path()).read_text())
    assert coco["info"]["selection_source"] == "saved"
    assert excluded not in [im["file_name"] for im in coco["images"]]
    assert coco["info"]["excluded"] == [excluded]
    kept_scores = [a["score"] for a in coco["annotations"] if a["category_id"] == 1]
    expected = sum(s >= threshold for im in review["images"] if im["file_name"] != excluded
                   for s in im["scores"])
    assert len(kept_scores) == expected and min(kept_scores) >= threshold
    assert coco["info"]["thresholds"]["score"]["1"] == threshold
    assert dialogs == []
    page.close()


def test_names_render_as_text_and_keys_stay_apart(stack: ServiceStack, browser: Any,
                                                  unlabeled_images: list[Path]) -> None:
    headers = {"Authorization": f"Bearer {API_KEYS[0]}"}
    files = [("files", (f"<b>{EVIL}</b>.png", unlabeled_images[0].read_bytes(), "image/png"))]
    accepted = httpx.post(f"{stack.url}/annotate", headers=headers, files=files,
                          data={"teacher": "evil", "tta": "identity"}).json()
    assert "<" not in accepted["files"][0]["name"]  # names are sanitised on the way in
    stack.wait_job(accepted["id"], timeout=120)
    page = browser.new_page(bypass_csp=True)  # text rendering alone must keep names inert
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    _sign_in(page, stack)
    page.wait_for_selector(f"#jobs-table tr[data-job='{accepted['id']}'] button")
    page.click(f"#jobs-table tr[data-job='{accepted['id']}'] button")
    title = page.wait_for_selector(".category h3")
    assert title.inner_text() == EVIL  # shown as text, not parsed as markup
    assert page.locator("#categories script").count() == 0 and dialogs == []
    csp = httpx.get(f"{stack.url}/ui/").headers["content-security-policy"]
    assert "script-src 'self'" in csp

    # Another key sees nothing of this job: not its review, images or selection.
    other = {"Authorization": f"Bearer {API_KEYS[1]}"}
    job = accepted["id"]
    for method, path in (("GET", f"/jobs/{job}/review"), ("GET", f"/jobs/{job}/images/0"),
                         ("GET", f"/jobs/{job}/images/0?thumb=true"),
                         ("PUT", f"/jobs/{job}/selection")):
        resp = httpx.request(method, stack.url + path, headers=other, json={})
        assert resp.status_code == 404, (path, resp.text)
    # The owner's image endpoint serves the job's own images, by index only, cacheably.
    own = httpx.get(f"{stack.url}/jobs/{job}/images/0?thumb=true", headers=headers)
    assert own.status_code == 200 and own.headers["content-type"] == "image/jpeg"
    assert "immutable" in own.headers["cache-control"]
    again = httpx.get(f"{stack.url}/jobs/{job}/images/0?thumb=true",
                      headers={**headers, "If-None-Match": own.headers["etag"]})
    assert again.status_code == 304
    for bad in ("1", "-1", "..%2F..%2Fjob.json", "0%2F..%2F..%2Fjob.json"):
        assert httpx.get(f"{stack.url}/jobs/{job}/images/{bad}",
                         headers=headers).status_code in (404, 422), bad
    wait_for(lambda: (stack.data_dir / "jobs" / job / "thumbs" / "0.jpg").exists(), 5,
             "the thumbnail to be kept")
    page.close()
