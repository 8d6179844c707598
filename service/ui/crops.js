// The crops view: every kept instance of one class cut out of its image, lowest score
// first (the quickest way to spot a class's false positives), with reject / undo on each.
// Crops are laid out by instance; each says data-file, data-index and data-status.

import { loadImage } from "./api.js";
import { $, button, el, pagerButtons } from "./dom.js";
import { drawInstances } from "./draw.js";
import { openZoom } from "./zoom.js";

const PER_PAGE = 60;
const SIZE = 140;  // px, a crop's longer side
let page = 0;
let list = [];  // [{file, index}], in view order (kept while sliders move)
let listed = "";  // the category of `list`

function instances(host, catId) {
  const out = [];
  for (const im of host.R.doc.images) {
    if (!host.inFile(im)) continue;
    im.scores.forEach((s, i) => {
      const st = host.status(im, i);
      if (String(im.category_ids[i]) === catId && (st === "kept" || st === "rejected")) {
        out.push({ file: im.file_name, index: i, score: s });
      }
    });
  }
  return out.sort((a, b) => a.score - b.score || a.file.localeCompare(b.file));
}

export function renderCrops(host, reorder) {
  const { doc, filter } = host.R;
  const catId = filter || String(doc.categories[0]?.id ?? "");
  const name = doc.categories.find((c) => String(c.id) === catId)?.name ?? "?";
  if (reorder || !list.length || listed !== catId) {
    list = instances(host, catId);
    listed = catId;
    if (reorder) page = 0;
  }
  const pages = Math.max(1, Math.ceil(list.length / PER_PAGE));
  page = Math.min(page, pages - 1);
  const root = $("crops");
  root.dataset.category = catId;
  const head = el("p", `${list.length} kept or rejected instances of ${name}, lowest score first`, { class: "crops-head" });
  const pager = el("div", null, { class: "crops-pager" });
  pager.append(...pagerButtons(page, pages, (p) => { page = p; renderCrops(host, false); }));
  const grid = el("div", null, { class: "crop-grid" });
  for (const { file, index } of list.slice(page * PER_PAGE, (page + 1) * PER_PAGE)) {
    grid.append(crop(host, host.image(file), index));
  }
  root.replaceChildren(head, pager, grid);
}

function crop(host, im, index) {
  const status = host.status(im, index);
  const box = el("div", null, { class: `crop ${status}`, "data-file": im.file_name, "data-index": index,
    "data-status": status });
  const canvas = el("canvas", null, { width: SIZE, height: SIZE });
  canvas.addEventListener("click", () => openZoom(im, host, index));
  const votes = im.votes ? ` · ${im.votes[index]}/${host.R.doc.transforms} votes` : "";
  const action = status === "rejected" ? "undo" : "reject";
  box.append(canvas, el("div", `${im.scores[index].toFixed(3)}${votes}`, { class: "name" }),
    el("div", im.file_name, { class: "name" }),
    button(action === "undo" ? "Undo reject" : "Reject", () => host.decide(im, index, action)));
  drawCrop(host, canvas, im, index, status);
  return box;
}

async function drawCrop(host, canvas, im, index, status) {
  let img;
  try { img = await loadImage(im, false); } catch (e) { return; }
  if (!host.R.doc) return;
  const [x1, y1, x2, y2] = im.boxes[index];
  const margin = 0.15 * Math.max(x2 - x1, y2 - y1, 4);
  const sx = Math.max(0, x1 - margin);
  const sy = Math.max(0, y1 - margin);
  const sw = Math.min(im.width, x2 + margin) - sx;
  const sh = Math.min(im.height, y2 + margin) - sy;
  const scale = SIZE / Math.max(sw, sh, 1);
  canvas.width = Math.max(1, Math.round(sw * scale));
  canvas.height = Math.max(1, Math.round(sh * scale));
  const k = img.naturalWidth / im.width;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, sx * k, sy * k, sw * k, sh * k, 0, 0, canvas.width, canvas.height);
  drawInstances(ctx, im, [{ index, status: status === "rejected" ? "rejected" : "kept", near: false }],
    { scale, ox: -sx * scale, oy: -sy * scale }, { ...host.scene(true), labels: false });
}
