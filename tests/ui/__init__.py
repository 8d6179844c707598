"""The review page in a real browser (Debian's chromium, driven by Playwright) against the
real stack: sign in, upload, watch the job, review, move a threshold, exclude, save,
download. Plus what the page must never do: show another key's data or run a name.

- ``conftest.py``: the stack (teachers, worker), the browser, a page per test, and the
  finished jobs and datasets the review tests share (package-scoped: one stack for all);
- ``page.py``: reading the page and a COCO file in the same terms, signing in, downloading;
- ``test_download.py``: upload and review, and the page shows what the download holds;
- ``test_jobs_view.py``: errors in words, confirmations, focus, paging, partial uploads;
- ``test_safety.py``: the page under its CSP, names as text, keys kept apart;
- ``test_zoom.py``: zoom, reject/accept, per-class views and crops; the README's screenshots.

Screenshots go to ``$DISTILL_SCREENSHOTS`` (the README's come from
``DISTILL_SCREENSHOTS=docs/screenshots``), else to the test's temporary folder.
"""
