// The gallery: a page of thumbnails with the pseudo-labels drawn, per-image exclusion,
// a per-class filter and sorting; or, in the crops view (crops.js), one class's instances.
// Each card says on the DOM what it draws: data-drawn (indices of kept instances),
// data-ignored, data-dashed, data-keypoints (visible keypoints per drawn instance) and
// data-kept (what the file holds for the image).

import { loadImage } from "./api.js";
import { $, el, pagerButtons } from "./dom.js";
import { drawInstances } from "./draw.js";
import { renderCrops } from "./crops.js";
import { openZoom } from "./zoom.js";

export const PAGE = 24;
let order = [];  // the images in gallery order (kept while sliders move)
const thumbs = new Map();  // file name -> decoded thumbnail, while the review is open

function ordered(host) {
  const { doc, filter } = host.R;
  const showing = (im) => !filter || im.category_ids.some((c) => String(c) === filter);
  const images = doc.images.filter(showing);
  const sort = $("sort").value;
  const keptScores = (im) => im.scores.filter((_, i) => host.status(im, i) === "kept");
  const low = (im) => Math.min(...keptScores(im), 2);
  if (sort === "name") return images.sort((a, b) => a.file_name.localeCompare(b.file_name));
  if (sort === "lowest") return images.sort((a, b) => low(a) - low(b));
  // Worth a look: most predictions just under their threshold, then the lowest kept score.
  const near = (im) => im.scores.filter((_, i) => host.near(im, i)).length;
  return images.sort((a, b) => near(b) - near(a) || low(a) - low(b));
}

/** Renders the current view; `reorder` false keeps the order (a slider is moving). */
export function renderGallery(host, reorder) {
  const { R } = host;
  $("gallery").hidden = R.view !== "gallery";
  $("crops").hidden = R.view !== "crops";
  if (R.view === "crops") { $("pager").replaceChildren(); renderCrops(host, reorder); return; }
  if (reorder || !order.length) order = ordered(host);
  const pages = Math.max(1, Math.ceil(order.length / PAGE));
  R.page = Math.min(R.page, pages - 1);
  $("pager").replaceChildren(...pagerButtons(R.page, pages, (p) => {
    R.page = p; renderGallery(host, false);
  }));
  const shown = order.slice(R.page * PAGE, (R.page + 1) * PAGE);
  const gallery = $("gallery");
  const cards = new Map([...gallery.children].map((c) => [c.dataset.file, c]));
  gallery.replaceChildren(...shown.map((im) => {
    const card = cards.get(im.file_name) || makeCard(host, im);
    updateCard(host, card, im);
    return card;
  }));
}

function makeCard(host, im) {
  const card = el("div", null, { class: "card", "data-file": im.file_name });
  const canvas = el("canvas", null, { width: 320, height: 240 });
  const exclude = el("input", null, { type: "checkbox", "aria-label": `exclude ${im.file_name}` });
  // Handlers look the image up by name: a saved selection reloads the document.
  const current = () => host.image(im.file_name);
  exclude.addEventListener("change", () => host.setExcluded(current(), exclude.checked));
  const label = el("label", " exclude");
  label.prepend(exclude);
  card.append(canvas, el("div", im.file_name, { class: "name" }), el("div", null, { class: "count" }), label);
  canvas.addEventListener("click", () => openZoom(current(), host));
  return card;
}

function updateCard(host, card, im) {
  const excluded = host.R.rule.excluded.has(im.file_name);
  card.classList.toggle("excluded", excluded);
  card.dataset.excluded = String(excluded);
  card.querySelector("input[type=checkbox]").checked = excluded;
  const items = host.items(im);
  const of = (pred) => items.filter(pred).map((x) => x.index);
  const drawn = of((x) => x.status === "kept");
  card.dataset.drawn = drawn.join(",");
  card.dataset.ignored = of((x) => x.status === "ignored").join(",");
  card.dataset.dashed = of((x) => x.near && x.status !== "kept").join(",");
  const scene = host.scene(false);
  card.dataset.keypoints = im.keypoint_scores
    ? drawn.map((i) => im.keypoint_scores[i].filter((s) => scene.keepsKeypoint(s)).length).join(",") : "";
  const { kept, ignored } = host.imageCounts(im);
  card.dataset.kept = kept;
  card.querySelector(".count").textContent = im.error ? `error: ${im.error}`
    : `${kept} kept${ignored ? `, ${ignored} ignore regions` : ""}`;
  const canvas = card.querySelector("canvas");
  canvas.items = items;  // the latest: a thumbnail still loading draws these
  if (!im.error) drawCard(host, canvas, im);
}

async function drawCard(host, canvas, im) {
  let img = thumbs.get(im.file_name);
  if (!img) {
    try { img = await loadImage(im, true); } catch (e) { return; }  // signed out meanwhile
    thumbs.set(im.file_name, img);
  }
  if (!host.R.doc) return;
  canvas.width = img.naturalWidth;
  canvas.height = img.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0);
  drawInstances(ctx, im, canvas.items, { scale: img.naturalWidth / im.width, ox: 0, oy: 0 }, { ...host.scene(false), font: 11 });
  canvas.dataset.ready = "true";
}

/** Forgets the gallery (a new review, or sign-out). */
export function resetGallery() {
  order = [];
  thumbs.clear();
  $("gallery").replaceChildren();
  $("crops").replaceChildren();
  $("pager").replaceChildren();
}
