"""The jobs view in the browser: failures said in words, delete confirmed, the refresh
keeping the focus, paging through every job, and a partly refused upload."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import ServiceStack
from tests.ui.page import MAX_FILES, needs_chromium, sign_in

pytestmark = needs_chromium


def test_errors_in_words_confirmations_focus_and_paging(stack: ServiceStack, page: Any,
                                                        unlabeled_images: list[Path],
                                                        reviewed: dict[str, dict[str, str]],
                                                        tmp_path: Path) -> None:
    """``reviewed`` only for its six jobs: paging needs more than a page of 5, whichever
    of this package's files runs first."""
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
