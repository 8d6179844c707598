// The review page's entry point: sign-in and sign-out, the views, and their wiring.
// Native ES modules, no build step, a strict CSP (service/static.py):
//   api.js (the key, requests, errors in words, images), dom.js, jobs.js, upload.js,
//   review.js (state, save, download, reset) with rule.js (the selection rule the API
//   sends), panel.js, gallery.js, crops.js, zoom.js and draw.js.
// Every name from the server (files, categories, teachers) is set as text, never as HTML.

import { apiJson, clearKey, errorText, key, revokeImages, setKey, whenUnauthorized } from "./api.js";
import { $ } from "./dom.js";
import { clearJobs, installJobs, refreshJobs, startPolling } from "./jobs.js";
import {
  clearReview, download, installReview, openReview, resetToCalibrated, resetToSaved, save,
} from "./review.js";
import { clearUpload, installUpload, loadUploadForm } from "./upload.js";
import { installZoom } from "./zoom.js";

function show(view) {
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== view;
  if (view === "jobs") refreshJobs(true);
  if (view === "upload") loadUploadForm().catch((e) => { $("upload-status").textContent = errorText(e); });
}

async function signIn(event) {
  event.preventDefault();
  setKey($("key").value);
  try {
    await apiJson("/options");
  } catch (e) {
    clearKey();
    $("signin-error").textContent = `sign-in failed: ${errorText(e)}`;
    return;
  }
  $("key").value = "";
  $("signin-error").textContent = "";
  enter();
}

function enter() {
  $("signin").hidden = true;
  $("nav").hidden = false;
  show("jobs");
  startPolling();
}

/** Clears everything the key showed: lists, the review, the form, every image URL. */
function signOut() {
  clearKey();
  clearJobs();
  clearReview();
  clearUpload();
  revokeImages();
  $("nav").hidden = true;
  for (const s of document.querySelectorAll(".view")) s.hidden = true;
  $("signin").hidden = false;
}

async function review(kind, name) {
  $("jobs-status").textContent = `opening the review of ${kind} ${name}...`;
  try {
    await openReview(kind, name);
  } catch (e) {
    $("jobs-status").textContent = `cannot review ${kind} ${name}: ${errorText(e)}`;
    return;
  }
  $("jobs-status").textContent = "";
  show("review");
}

function guarded(action) {
  return () => action().catch((e) => { $("review-status").textContent = errorText(e); });
}

whenUnauthorized(signOut);
installJobs(review);
installUpload(() => show("jobs"));
installZoom();
installReview();
$("signin-form").addEventListener("submit", signIn);
$("signout").addEventListener("click", signOut);
$("save").addEventListener("click", guarded(save));
$("download").addEventListener("click", guarded(download));
$("reset-saved").addEventListener("click", resetToSaved);
$("reset-calibrated").addEventListener("click", resetToCalibrated);
for (const b of document.querySelectorAll("nav button[data-view]")) {
  b.addEventListener("click", () => show(b.dataset.view));
}
if (key()) enter();
