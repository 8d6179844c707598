"""Upload and review in the browser, and the page shows what the download holds (a job
and a dataset, as calibrated, after moving sliders, and with the saved selection)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.conftest import API_KEYS, ServiceStack
from tests.ui.page import (
    SERVED,
    download,
    fetched,
    file_counts,
    gallery_of,
    in_file,
    needs_chromium,
    open_review,
    panel_counts,
    review_doc,
    screenshots_folder,
    set_range,
    shown,
    sign_in,
)

pytestmark = needs_chromium


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
    shots = screenshots_folder(tmp_path)
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
        gallery_of(page, doc)
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
        gallery_of(page, doc)
        assert shown(page, doc) == in_file(coco) and panel_counts(page) == file_counts(coco)

        # Reset to calibrated: the job's own thresholds again; reset to saved: back.
        page.click("#reset-calibrated")
        assert panel_counts(page) == file_counts(job_file) and shown(page, doc) == in_file(job_file)
        assert page.is_visible("#dirty")
        page.click("#reset-saved")
        assert page.is_hidden("#dirty") and shown(page, doc) == in_file(coco)
