"""A dataset larger than ``DISTILL_REVIEW_MAX_IMAGES`` is reviewed on a uniform sample:
the page says so, counts the sample against the sample's target, and what it saves
applies to every image of the dataset's download."""

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
        assert doc["sample"] == {"images": 4, "of": 6}
        gallery_of(page, doc)
        assert "a sample of 4 of 6 images" in page.inner_text("#review-title")
        assert "uniform sample of 4" in page.inner_text("#review-sample")
        # The panel counts the sample as the document's report does.
        assert panel_counts(page) == {k: (v["kept"], v["candidates"])
                                      for k, v in doc["report"].items() if k != "keypoints"}
        assert page.inner_text(".category[data-category='1'] .kept").endswith("in the sample")
        assert "for the sample" in page.inner_text(".category[data-category='1'] .target")

        # A threshold chosen on the sample applies to all six images of the download.
        set_range(page, ".category[data-category='1'] input[type=range]", 0.05)
        coco = download(page)
        assert coco["info"]["selection_source"] == "saved"
        assert coco["info"]["thresholds"]["score"]["1"] == 0.05
        assert len(coco["images"]) + coco["info"]["num_failed"] == 6
        assert all(a["score"] >= 0.05 for a in coco["annotations"] if a["category_id"] == 1)
    finally:
        stack.stop_api()
        stack.start_api()
