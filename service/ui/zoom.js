// The zoom: one image fitted to the viewport, wheel zoom around the cursor, drag to pan,
// double-click (or Fit) to fit again; the file name; the image's predictions listed with
// scores, votes and status, each with accept / reject; a click on an instance selects
// its row; hovering a keypoint names it with its score.

import { loadImage } from "./api.js";
import { $, button, el } from "./dom.js";
import { categoryColor, drawInstances, hitTest, side } from "./draw.js";

const Z = { host: null, im: null, img: null, view: { scale: 1, ox: 0, oy: 0 }, selected: null, drag: null };

export async function openZoom(im, host, index = null) {
  Z.host = host; Z.im = im; Z.img = null; Z.selected = index;
  $("zoom-name").textContent = im.file_name;
  $("zoom").dataset.file = im.file_name;
  if (!$("zoom").open) $("zoom").showModal();
  renderList();
  try { Z.img = await loadImage(im, false); } catch (e) { return; }
  if (Z.im?.file_name !== im.file_name) return;
  fit();
}

/** Follows a change of the rule or a reloaded document (same image, new statuses). */
export function refreshZoom(host) {
  if (!$("zoom").open || !Z.im || !host.R.doc) return;
  Z.host = host;
  Z.im = host.image(Z.im.file_name) || Z.im;
  renderList();
  draw();
}

export function closeZoom() {
  if ($("zoom").open) $("zoom").close();
  Object.assign(Z, { host: null, im: null, img: null, selected: null, drag: null });
  $("zoom-list").replaceChildren();
  $("zoom-keypoints").replaceChildren();
  const canvas = $("zoom-canvas");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
}

function fit() {
  const canvas = $("zoom-canvas");
  const stage = $("zoom-stage");
  canvas.width = stage.clientWidth;
  canvas.height = stage.clientHeight;
  const { width, height } = Z.im;
  const scale = Math.min(canvas.width / width, canvas.height / height);
  Z.view = { scale, ox: (canvas.width - width * scale) / 2, oy: (canvas.height - height * scale) / 2 };
  canvas.dataset.fit = String(scale);
  draw();
}

function items() {
  return Z.host.items(Z.im, { all: true }).map((x) => (x.index === Z.selected ? { ...x, near: true } : x));
}

function draw() {
  const canvas = $("zoom-canvas");
  if (!Z.img || !Z.host) return;
  const ctx = canvas.getContext("2d");
  const { scale, ox, oy } = Z.view;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.fillStyle = "#333";
  ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(Z.img, ox, oy, Z.im.width * scale, Z.im.height * scale);
  drawInstances(ctx, Z.im, items(), Z.view, { ...Z.host.scene(true), selected: Z.selected, font: 13 });
  Object.assign(canvas.dataset, { scale: String(scale), ox: String(ox), oy: String(oy) });
}

function actionOf(status, accepted) {
  if (status === "rejected") return ["undo", "Undo reject"];
  if (accepted) return ["undo", "Undo accept"];
  return status === "kept" ? ["reject", "Reject"] : ["accept", "Accept"];
}

function renderList() {
  const { host, im } = Z;
  const cats = host.R.doc.categories;
  const order = im.scores.map((s, i) => i).sort((a, b) => im.scores[b] - im.scores[a]);
  $("zoom-list").replaceChildren(...order.map((i) => {
    const status = host.status(im, i);
    const accepted = host.R.rule.accepted[im.file_name]?.has(i) ?? false;
    const name = cats.find((c) => c.id === im.category_ids[i])?.name ?? "?";
    const votes = im.votes ? ` · ${im.votes[i]}/${host.R.doc.transforms} votes` : "";
    const row = el("li", null, { "data-index": i, "data-status": status, class: `pred ${status}` });
    row.classList.toggle("selected", i === Z.selected);
    const swatch = el("span", "■", { class: "swatch" });
    swatch.style.color = categoryColor(cats, im.category_ids[i]);
    const [action, label] = actionOf(status, accepted);
    row.append(swatch, el("span", `${name} ${im.scores[i].toFixed(3)}${votes} · ${status}${accepted ? " (accepted)" : ""}`),
      button(label, (e) => { e.stopPropagation(); host.decide(im, i, action); }, { class: "decide" }));
    row.addEventListener("click", () => select(i));
    return row;
  }));
  renderKeypoints();
}

function renderKeypoints() {
  const { host, im } = Z;
  const box = $("zoom-keypoints");
  const i = Z.selected;
  if (i === null || !im.keypoints) { box.replaceChildren(); return; }
  const names = host.scene(true).keypointNames;
  box.replaceChildren(el("h4", "keypoints of the selected instance"), ...im.keypoint_scores[i].map((s, k) => {
    const kept = host.scene(true).keepsKeypoint(s);
    return el("div", `${names[k] ?? `#${k + 1}`} (${side(names[k])}): ${s.toFixed(2)} ${kept ? "visible" : "dropped"}`,
      { class: `kp ${kept ? "visible" : "dropped"}`, "data-keypoint": k });
  }));
}

function select(i) {
  Z.selected = i;
  for (const row of $("zoom-list").children) row.classList.toggle("selected", Number(row.dataset.index) === i);
  $("zoom-list").querySelector(`li[data-index="${i}"]`)?.scrollIntoView({ block: "nearest" });
  renderKeypoints();
  draw();
}

function canvasPoint(e) {
  const rect = $("zoom-canvas").getBoundingClientRect();
  return [e.clientX - rect.left, e.clientY - rect.top];
}

function tip(e) {
  const [px, py] = canvasPoint(e);
  const hit = hitTest(Z.im, items(), Z.view, Z.host.scene(true), px, py);
  const box = $("zoom-tip");
  if (!hit) { box.hidden = true; return; }
  const { im } = Z;
  const cat = Z.host.R.doc.categories.find((c) => c.id === im.category_ids[hit.index]);
  let text = `${cat?.name ?? "?"} ${im.scores[hit.index].toFixed(3)} · ${Z.host.status(im, hit.index)}`;
  if (hit.keypoint !== undefined) {
    const name = Z.host.scene(true).keypointNames[hit.keypoint] ?? `#${hit.keypoint + 1}`;
    text = `${name} (${side(name)}): score ${im.keypoint_scores[hit.index][hit.keypoint].toFixed(2)}`;
  }
  box.textContent = text;
  box.style.left = `${px + 14}px`;
  box.style.top = `${py + 14}px`;
  box.hidden = false;
}

function wheel(e) {
  e.preventDefault();
  if (!Z.img) return;
  const [px, py] = canvasPoint(e);
  const fitScale = Number($("zoom-canvas").dataset.fit) || 1;
  const scale = Math.min(fitScale * 40, Math.max(fitScale / 4, Z.view.scale * Math.exp(-e.deltaY * 0.0015)));
  const f = scale / Z.view.scale;
  Z.view = { scale, ox: px - (px - Z.view.ox) * f, oy: py - (py - Z.view.oy) * f };
  draw();
}

export function installZoom() {
  const canvas = $("zoom-canvas");
  canvas.addEventListener("wheel", wheel, { passive: false });
  canvas.addEventListener("pointerdown", (e) => {
    Z.drag = { x: e.clientX, y: e.clientY, ox: Z.view.ox, oy: Z.view.oy, moved: false };
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!Z.im || !Z.host) return;
    if (!Z.drag) { tip(e); return; }
    const dx = e.clientX - Z.drag.x;
    const dy = e.clientY - Z.drag.y;
    if (Math.hypot(dx, dy) > 3) Z.drag.moved = true;
    if (Z.drag.moved) { Z.view = { ...Z.view, ox: Z.drag.ox + dx, oy: Z.drag.oy + dy }; draw(); }
  });
  canvas.addEventListener("pointerup", (e) => {
    const drag = Z.drag;
    Z.drag = null;
    if (!drag || drag.moved || !Z.im) return;
    const [px, py] = canvasPoint(e);
    const hit = hitTest(Z.im, items(), Z.view, Z.host.scene(true), px, py);
    if (hit) select(hit.index);
  });
  canvas.addEventListener("pointerleave", () => { $("zoom-tip").hidden = true; });
  canvas.addEventListener("dblclick", () => { if (Z.img) fit(); });
  $("zoom-fit").addEventListener("click", () => { if (Z.img) fit(); });
  $("zoom-close").addEventListener("click", closeZoom);
  $("zoom").addEventListener("close", () => { Z.im = null; });
}
