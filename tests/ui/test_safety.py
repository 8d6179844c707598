"""What the page must never do: break its CSP, run a name as markup, or show one key's
data to another (in the page, the browser's cache or the API)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from tests.conftest import API_KEYS, ServiceStack, wait_for
from tests.ui.page import EVIL, needs_chromium, sign_in

pytestmark = needs_chromium


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
