"""A dataset larger than ``DISTILL_REVIEW_MAX_IMAGES`` is reviewed on a uniform sample:
the page says so, counts the sample against the sample's target, and what it saves
applies to every image of the dataset's download; one larger than
``DISTILL_REVIEW_MAX_DATASET_IMAGES`` is refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.conftest import ServiceStack
from tests.ui.page import (
    download,
    gallery_of,
    needs_chromium,
    open_review,
    panel_counts,
    review_doc,
    set_range,
    sign_in,
)

pytestmark = needs_chromium


def test_a_large_dataset_is_reviewed_on_a_sample(stack: ServiceStack, page: Any,
                                                 unlabeled_images: list[Path]) -> None:
    batches = [stack.submit(b, teacher="shapes", dataset="sampled")
               for b in (unlabeled_images[:3], unlabeled_images[3:6])]
    for b in batches:
        stack.wait_job(b["id"])
    stack.stop_api()
    try:
        stack.start_api(review_max_images="4")
        sign_in(page, stack)
        open_review(page, "dataset", "sampled")
        doc = review_doc(stack, "/datasets/sampled")
        assert doc["sample"] == {"images": 4, "of": 6, "decided_elsewhere": 0}
        gallery_of(page, doc)
        assert "a sample of 4 of 6 images" in page.inner_text("#review-title")
        assert "uniform sample of 4" in page.inner_text("#review-sample")
        # The panel counts the sample as the document's report does.
        assert panel_counts(page) == {k: (v["kept"], v["candidates"])
                                      for k, v in doc["report"].items() if k != "keypoints"}
        assert page.inner_text(".category[data-category='1'] .kept").endswith("in the sample")
        assert "for the sample" in page.inner_text(".category[data-category='1'] .target")

        # A threshold chosen on the sample applies to all six images of the download; saving
        # does not load the sample's document again (that reads every log of the dataset).
        loads: list[str] = []
        page.on("request", lambda r: loads.append(r.url) if r.url.endswith("/review") else None)
        set_range(page, ".category[data-category='1'] input[type=range]", 0.05)
        coco = download(page)
        assert loads == []
        assert page.input_value(".category[data-category='1'] input[type=range]") == "0.05"
        assert page.is_hidden("#dirty") and page.is_disabled("#reset-saved")
        assert coco["info"]["selection_source"] == "saved"
        assert coco["info"]["thresholds"]["score"]["1"] == 0.05
        assert len(coco["images"]) + coco["info"]["num_failed"] == 6
        # Beyond what a review reads on each load: refused, saying what to do instead.
        stack.stop_api()
        stack.start_api(review_max_images="4", review_max_dataset_images="5")
        with stack.client() as c:
            refused = c.get("/datasets/sampled/review")
        assert refused.status_code == 422, refused.text
        assert refused.json()["detail"]["limit"] == 5
        assert "DISTILL_REVIEW_MAX_DATASET_IMAGES" in refused.json()["detail"]["message"]
    finally:
        stack.stop_api()
        stack.start_api()
    # Every image's predictions (the API takes the whole dataset again): the file holds
    # each of category 1 scoring at least 0.05, those outside the sample too.
    whole = review_doc(stack, "/datasets/sampled")
    assert whole["sample"] is None and len(whole["images"]) == 6
    expected = sum(1 for im in whole["images"] for c, sc in zip(
        im["category_ids"], im["scores"], strict=True) if c == 1 and sc >= 0.05)
    outside = sum(1 for im in whole["images"] if im["file_name"] not in
                  {i["file_name"] for i in doc["images"]} for c, sc in zip(
                      im["category_ids"], im["scores"], strict=True) if c == 1 and sc >= 0.05)
    assert outside > 0
    assert sum(1 for a in coco["annotations"] if a["category_id"] == 1) == expected
