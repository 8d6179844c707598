"""The zoom (fit, wheel, pan, select, keypoint names on hover, reject and accept), the
per-class filter and crops; and the README's keypoint review screenshots."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ServiceStack
from tests.ui.page import (
    download,
    gallery_of,
    in_file,
    needs_chromium,
    open_review,
    review_doc,
    screenshots_folder,
    set_range,
    shown,
    sign_in,
)

pytestmark = needs_chromium


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
    gallery_of(page, doc)
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
    shots = screenshots_folder(tmp_path)
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
