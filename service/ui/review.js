// The review of a finished job or dataset: its state, the rule the page applies
// (rule.js), saving, downloading, resetting, and per-image / per-instance decisions.
// The panel (panel.js), gallery and crops (gallery.js, crops.js) and the zoom (zoom.js)
// draw from this state through `host`.

import { api, apiJson, resourcePath } from "./api.js";
import { $ } from "./dom.js";
import { NEAR } from "./draw.js";
import { inFile, isCandidate, keepsKeypoint, ruleFrom, selectionBody, statusOf } from "./rule.js";
import { buildPanel, updatePanel } from "./panel.js";
import { renderGallery, resetGallery } from "./gallery.js";
import { refreshZoom, closeZoom } from "./zoom.js";

const R = { doc: null, byName: new Map(), rule: null, loaded: "", filter: "", view: "gallery", page: 0,
  statuses: new Map() };

/** Everything the views read, and the changes they may make. */
export const host = {
  R,
  image: (name) => R.byName.get(name),
  status: (im, i) => R.statuses.get(im.file_name)[i],
  near(im, i) {
    const st = host.status(im, i);
    if (st !== "candidate" && st !== "filtered") return false;
    const t = R.rule.score[String(im.category_ids[i])];
    return t !== null && t !== undefined && im.scores[i] >= t - NEAR;
  },
  /** The instances to draw ({index, status, near}), of the filtered class only. */
  items(im, { all = false } = {}) {
    const out = [];
    im.scores.forEach((_, i) => {
      if (R.filter && String(im.category_ids[i]) !== R.filter && !all) return;
      out.push({ index: i, status: host.status(im, i), near: host.near(im, i) });
    });
    return out;
  },
  scene(zoomed) {
    const cat = R.doc.categories[0] || {};
    return { categories: R.doc.categories, skeleton: cat.skeleton || [],
      keypointNames: cat.keypoints || [], transforms: R.doc.transforms, zoomed,
      keepsKeypoint: (s) => keepsKeypoint(R.rule, s) };
  },
  inFile: (im) => inFile(R.rule, im),
  /** "reject" / "accept" / "undo" one prediction; the rule changes, the views follow. */
  decide(im, i, action) {
    const sets = { accept: R.rule.accepted, reject: R.rule.rejected };
    for (const m of [R.rule.accepted, R.rule.rejected]) m[im.file_name]?.delete(i);
    if (action in sets) (sets[action][im.file_name] ||= new Set()).add(i);
    changed();
  },
  setExcluded(im, excluded) {
    if (excluded) R.rule.excluded.add(im.file_name); else R.rule.excluded.delete(im.file_name);
    changed();
  },
  setThreshold(catId, value) { R.rule.score[String(catId)] = value; changed(); },
  setKeypoint(value) { R.rule.keypoint = value; changed(); },
  setMinVotes(value) { R.rule.min_votes = value; changed(); },
};

/** The page's rule from now on; a category it does not name keeps nothing (null). */
function useRule(rule) {
  for (const cat of R.doc.categories) rule.score[String(cat.id)] ??= null;
  R.rule = rule;
}

function recompute() {
  R.statuses = new Map(R.doc.images.map((im) => [im.file_name,
    im.scores.map((_, i) => statusOf(R.rule, im, i))]));
}

function render(reorder) {
  recompute();
  updatePanel(host);
  renderGallery(host, reorder);
  refreshZoom(host);
  const dirty = JSON.stringify(selectionBody(R.rule)) !== R.loaded;
  $("review").dataset.dirty = String(dirty);
  $("dirty").hidden = !dirty;
  $("reset-saved").disabled = !dirty;
  $("download").textContent = dirty ? "Save and download COCO" : "Download COCO";
}

/** A change of the rule: everything follows, but nothing moves under the reviewer's hand
(the gallery's order changes only on sort, filter, a page or a save). */
function changed() { render(false); }

/** Opens (or re-opens, keeping the page, filter and view) a job's or dataset's review. */
export async function openReview(kind, name, { keep = false } = {}) {
  const doc = await apiJson(resourcePath(kind, name, "review"));
  if (!keep) resetGallery();
  R.doc = doc;
  R.byName = new Map(doc.images.map((im) => [im.file_name, im]));
  useRule(ruleFrom(doc.rule));
  R.loaded = JSON.stringify(selectionBody(R.rule));
  if (!keep) { R.page = 0; R.filter = ""; R.view = "gallery"; }
  const shown = doc.sample ? `a sample of ${doc.sample.images} of ${doc.sample.of} images`
    : `${doc.images.length} images`;
  $("review-title").textContent = `Review of ${kind} ${name} (teacher ${doc.teacher ?? "?"}, ${shown})`;
  $("review-sample").hidden = !doc.sample;
  $("review-sample").textContent = doc.sample ? sampleNote(kind, doc.sample) : "";
  $("review").dataset.kind = kind;
  $("review").dataset.name = name;
  buildPanel(host);
  recompute();
  render(true);
}

/** What a sampled review means (review_data's `sample`). */
function sampleNote(kind, sample) {
  const elsewhere = sample.decided_elsewhere ? ` ${sample.decided_elsewhere} images with saved `
    + "decisions (excluded, accepted, rejected) lie outside the sample; those decisions still apply." : "";
  return `This ${kind} holds more images than the page takes, so it shows a uniform sample of `
    + `${sample.images} of ${sample.of} (the same images while the ${kind} does not change). `
    + `The thresholds start from a calibration over all ${sample.of} images and what you save `
    + `applies to every image; the counts and targets below cover the sample only.${elsewhere}`;
}

async function saveSelection() {
  const { kind, name } = R.doc;
  const body = selectionBody(R.rule);
  await api(resourcePath(kind, name, "selection"), { method: "PUT",
    headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
  if (!R.doc.sample) {
    await openReview(kind, name, { keep: true });  // the server's statuses under what was saved
    return;
  }
  // A sample's document costs a read of every log of the dataset: the page keeps its own
  // statuses (rule.js applies the server's rule) and takes what it saved as the saved rule.
  R.doc.rule = { ...R.doc.rule, score: { ...body.score_thresholds }, keypoint: body.keypoint_threshold,
    min_votes: body.min_votes, excluded: body.excluded, accepted: body.accepted,
    rejected: body.rejected, source: "saved" };
  R.loaded = JSON.stringify(body);
  render(false);
}

export async function save() {
  await saveSelection();
  $("review-status").textContent = "selection saved: every download now applies it";
}

/** Downloads what the page shows: an unsaved selection is saved first. */
export async function download() {
  $("review-status").textContent = "";
  const dirty = $("review").dataset.dirty === "true";
  if (dirty) await saveSelection();
  const { kind, name } = R.doc;
  const resp = await api(resourcePath(kind, name, "annotations"));
  const link = document.createElement("a");
  link.download = `${name}.pseudo.json`;
  link.href = URL.createObjectURL(await resp.blob());
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 10_000);
  $("review-status").textContent = `${dirty ? "saved, then downloaded" : "downloaded"} with the ${
    resp.headers.get("X-Distill-Selection")} selection`;
}

/** Back to the selection downloads apply now (the saved one, else the job's). */
export function resetToSaved() {
  useRule(ruleFrom(R.doc.rule));
  buildPanel(host);
  render(true);
}

/** Thresholds and min_votes back to the job's own (calibrated); decisions stay. */
export function resetToCalibrated() {
  useRule(ruleFrom(R.doc.calibrated, R.rule));
  buildPanel(host);
  render(true);
}

/** Counts under the page's rule: per category kept / ignored / candidates, keypoints. */
function counts() {
  const cats = new Map(R.doc.categories.map((c) => [String(c.id), { kept: 0, ignored: 0, candidates: 0, scores: [] }]));
  let instances = 0;
  let keypoints = 0;
  for (const im of R.doc.images) {
    if (!inFile(R.rule, im)) continue;
    im.scores.forEach((s, i) => {
      const c = cats.get(String(im.category_ids[i]));
      if (!c) return;
      const st = host.status(im, i);
      if (isCandidate(R.rule, im, i)) { c.candidates += 1; c.scores.push(s); }
      if (st === "kept") c.kept += 1;
      if (st === "ignored") c.ignored += 1;
      if (st === "kept" && im.keypoint_scores) {
        instances += 1;
        keypoints += im.keypoint_scores[i].filter((k) => keepsKeypoint(R.rule, k)).length;
      }
    });
  }
  return { cats, instances, keypoints };
}

/** Kept and ignore-region counts of one image as the file holds them (0 when left out). */
function imageCounts(im) {
  if (!inFile(R.rule, im)) return { kept: 0, ignored: 0 };
  const st = R.statuses.get(im.file_name);
  return { kept: st.filter((s) => s === "kept").length, ignored: st.filter((s) => s === "ignored").length };
}

host.counts = counts;
host.imageCounts = imageCounts;

/** Wires the review's own controls once: sort, class filter, view. */
export function installReview() {
  $("sort").addEventListener("change", () => render(true));
  $("class-filter").addEventListener("change", () => {
    R.filter = $("class-filter").value;
    R.page = 0;
    render(true);
  });
  $("view-mode").addEventListener("change", () => { R.view = $("view-mode").value; render(true); });
}

/** Forgets the review (sign-out): state, panel, gallery, zoom. */
export function clearReview() {
  closeZoom();
  R.doc = null; R.rule = null; R.loaded = ""; R.statuses = new Map(); R.byName = new Map();
  $("categories").replaceChildren();
  $("review-title").textContent = "Review";
  $("review-sample").hidden = true;
  $("review-status").textContent = "";
  $("dirty").hidden = true;
  delete $("review").dataset.name;
  resetGallery();
}
