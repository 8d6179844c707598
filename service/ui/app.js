// The review page: jobs, uploads, and a look at pseudo-labels before training on them.
// Plain ES module, no build step. The API key lives in sessionStorage and travels only in
// the Authorization header (never in a URL); images are fetched with it and shown as blobs.
// Every name from the server (files, categories, teachers) is set as text, never as HTML.

const $ = (id) => document.getElementById(id);
const PAGE = 24;
const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0", "#f032e6",
  "#bcf60c", "#008080", "#9a6324"];
const state = { review: null, thresholds: {}, kp: null, excluded: new Set(), page: 0,
  poll: null, urls: new Map() };

function key() { return sessionStorage.getItem("distill-key"); }

async function api(path, options = {}) {
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${key()}` };
  const resp = await fetch(path, { ...options, headers });
  if (resp.status === 401) { signOut(); throw new Error("signed out: the key was refused"); }
  if (!resp.ok) {
    let message = `${resp.status}`;
    try { message = (await resp.json()).detail.message; } catch (e) { /* not JSON */ }
    throw new Error(message);
  }
  return resp;
}

function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

function show(view) {
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== view;
  if (view === "jobs") refreshJobs();
}

// ---- sign-in -------------------------------------------------------------------------
async function signIn(event) {
  event.preventDefault();
  sessionStorage.setItem("distill-key", $("key").value);
  try {
    await api("/teachers");
  } catch (e) {
    sessionStorage.removeItem("distill-key");
    $("signin-error").textContent = `sign-in failed: ${e.message}`;
    return;
  }
  $("key").value = "";
  enter();
}

function enter() {
  $("signin").hidden = true;
  $("nav").hidden = false;
  loadTeachers();
  show("jobs");
  state.poll = setInterval(() => { if (!$("jobs").hidden) refreshJobs(); }, 2000);
}

function signOut() {
  sessionStorage.removeItem("distill-key");
  clearInterval(state.poll);
  $("nav").hidden = true;
  for (const s of document.querySelectorAll(".view")) s.hidden = true;
  $("signin").hidden = false;
}

// ---- jobs and datasets -----------------------------------------------------------------
async function refreshJobs() {
  const { jobs } = await (await api("/jobs?limit=200")).json();
  const body = $("jobs-table").querySelector("tbody");
  body.replaceChildren();
  const datasets = new Map();
  for (const job of jobs) {
    const row = el("tr", null, { "data-job": job.id, "data-status": job.status });
    row.append(el("td", job.created_at.slice(0, 19).replace("T", " ")),
      el("td", job.id.slice(0, 8)), el("td", job.dataset ?? ""), el("td", job.teacher),
      el("td", job.status + (job.waiting_for ? ` (waiting for ${job.waiting_for})` : "")),
      el("td", `${job.progress.done}/${job.progress.total}`), el("td", job.progress.failed));
    const actions = el("td");
    if (job.status === "finished") actions.append(button("Review", () => openReview("job", job.id)));
    const live = job.status === "queued" || job.status === "running";
    actions.append(button(live ? "Cancel" : "Delete", async () => {
      await api(`/jobs/${job.id}`, { method: "DELETE" });
      refreshJobs();
    }));
    row.append(actions);
    body.append(row);
    if (job.dataset) datasets.set(job.dataset, [...(datasets.get(job.dataset) || []), job]);
  }
  const list = $("datasets");
  list.replaceChildren();
  for (const [name, members] of datasets) {
    const done = members.filter((j) => j.status === "finished").length;
    const item = el("li", `${name}: ${done}/${members.length} jobs finished `);
    if (done) item.append(button("Review", () => openReview("dataset", name)));
    list.append(item);
  }
}

function button(text, onClick) {
  const b = el("button", text, { type: "button" });
  b.addEventListener("click", onClick);
  return b;
}

// ---- upload -----------------------------------------------------------------------------
async function loadTeachers() {
  const { teachers } = await (await api("/teachers")).json();
  const select = $("teacher");
  select.replaceChildren(...teachers.map((t) => el("option", `${t.name} (${t.task})`,
    { value: t.name })));
}

async function upload(event) {
  event.preventDefault();
  const files = [...$("folder").files, ...$("files").files];
  if (!files.length) { $("upload-status").textContent = "choose a folder or files first"; return; }
  const dataset = $("dataset").value || `upload-${Date.now().toString(36)}`;
  const bar = $("upload-progress");
  bar.hidden = false;
  let sent = 0;
  for (let i = 0; i < files.length; i += 16) {
    const form = new FormData();
    for (const f of files.slice(i, i + 16)) form.append("files", f, f.webkitRelativePath || f.name);
    form.append("teacher", $("teacher").value);
    form.append("tta", $("preset").value);
    form.append("dataset", dataset);
    await new Promise((resolve, reject) => {  // XHR: fetch reports no upload progress
      const xhr = new XMLHttpRequest();
      xhr.open("POST", "/annotate");
      xhr.setRequestHeader("Authorization", `Bearer ${key()}`);
      xhr.upload.onprogress = (e) => { bar.value = (sent + e.loaded) / (sent + e.total || 1); };
      xhr.onload = () => (xhr.status === 202 ? resolve() : reject(new Error(xhr.responseText)));
      xhr.onerror = () => reject(new Error("network error"));
      xhr.send(form);
    }).catch((e) => { $("upload-status").textContent = `upload failed: ${e.message}`; throw e; });
    sent += 1;
    $("upload-status").textContent = `uploaded ${Math.min(i + 16, files.length)} of ${files.length} images to dataset ${dataset}`;
  }
  bar.value = 1;
  show("jobs");
}

// ---- review -----------------------------------------------------------------------------
async function openReview(kind, name) {
  const path = kind === "job" ? `/jobs/${name}/review` : `/datasets/${name}/review`;
  const data = await (await api(path)).json();
  state.review = data;
  state.page = 0;
  const saved = data.saved;
  state.thresholds = {};
  for (const cat of data.categories) {
    const id = String(cat.id);
    const chosen = saved ? saved.score_thresholds[id] : data.calibrated.score[id];
    state.thresholds[id] = chosen ?? null;
  }
  state.kp = saved ? saved.keypoint_threshold : data.calibrated.keypoint;
  state.excluded = new Set(saved ? saved.excluded : []);
  $("review-title").textContent = `Review of ${kind} ${name} (teacher ${data.teacher})`;
  buildPanel();
  show("review");
  render();
}

function keeps(catId, score) {
  const t = state.thresholds[String(catId)];
  return t !== null && t !== undefined && score >= t;
}

function buildPanel() {
  const root = $("categories");
  root.replaceChildren();
  const data = state.review;
  data.categories.forEach((cat, index) => {
    const id = String(cat.id);
    const report = data.report[id] || {};
    const box = el("div", null, { class: "category", "data-category": id });
    const title = el("h3", cat.name);
    title.style.color = COLORS[index % COLORS.length];
    const calibrated = data.calibrated.score[id];
    const slider = el("input", null, { type: "range", min: 0, max: 1, step: 0.001,
      "aria-label": `threshold of ${cat.name}` });
    slider.value = state.thresholds[id] ?? 1;
    const value = el("output");
    const kept = el("p", null, { class: "kept" });
    const hist = el("canvas", null, { width: 280, height: 60 });
    slider.addEventListener("input", () => { state.thresholds[id] = Number(slider.value); render(); });
    box.append(title, el("p", `labeled target ${report.target ?? "n/a"}; calibrated threshold ${
      calibrated === null || calibrated === undefined ? "none (keeps nothing)" : calibrated.toFixed(3)}`),
    hist, slider, value, kept);
    root.append(box);
  });
  const kpScores = data.images.flatMap((im) => (im.keypoint_scores || []).flat());
  $("kp-panel").hidden = !kpScores.length;
  if (kpScores.length) {
    const kp = $("kp-slider");
    kp.min = Math.min(...kpScores); kp.max = Math.max(...kpScores); kp.step = 0.01;
    kp.value = state.kp ?? kp.max;
    kp.oninput = () => { state.kp = Number(kp.value); render(); };
  }
}

function updatePanel() {
  const data = state.review;
  for (const box of document.querySelectorAll(".category")) {
    const id = box.dataset.category;
    const scores = data.images.filter((im) => !im.error && !state.excluded.has(im.file_name))
      .flatMap((im) => im.scores.filter((s, i) => String(im.category_ids[i]) === id));
    const t = state.thresholds[id];
    const kept = scores.filter((s) => t !== null && s >= t).length;
    box.querySelector("output").textContent = t === null ? "keeps nothing" : `threshold ${t.toFixed(3)}`;
    box.querySelector(".kept").textContent = `kept ${kept} of ${scores.length} candidates`;
    histogram(box.querySelector("canvas"), scores, t);
  }
  if (!$("kp-panel").hidden) $("kp-value").textContent = state.kp === null ? "none" : state.kp.toFixed(2);
}

function histogram(canvas, scores, threshold) {
  const ctx = canvas.getContext("2d");
  const bins = new Array(20).fill(0);
  for (const s of scores) bins[Math.min(19, Math.floor(s * 20))] += 1;
  const top = Math.max(1, ...bins);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.fillStyle = "#8aa";
  bins.forEach((n, i) => {
    const h = (n / top) * (canvas.height - 4);
    ctx.fillRect(i * canvas.width / 20 + 1, canvas.height - h, canvas.width / 20 - 2, h);
  });
  if (threshold !== null) {
    ctx.strokeStyle = "#b00020";
    ctx.beginPath();
    ctx.moveTo(threshold * canvas.width, 0); ctx.lineTo(threshold * canvas.width, canvas.height);
    ctx.stroke();
  }
}

function keptScores(im) { return im.scores.filter((s, i) => keeps(im.category_ids[i], s)); }

function ordered() {
  const images = [...state.review.images];
  const sort = $("sort").value;
  if (sort === "name") return images.sort((a, b) => a.file_name.localeCompare(b.file_name));
  if (sort === "lowest") {
    const low = (im) => Math.min(...keptScores(im), 2);
    return images.sort((a, b) => low(a) - low(b));
  }
  // Worth a look: predictions just under their threshold (within 0.1), then the lowest kept.
  const near = (im) => im.scores.filter((s, i) => {
    const t = state.thresholds[String(im.category_ids[i])];
    return t !== null && s < t && s >= t - 0.1;
  }).length;
  return images.sort((a, b) => near(b) - near(a) || Math.min(...keptScores(a), 2) - Math.min(...keptScores(b), 2));
}

function render() {
  updatePanel();
  const images = ordered();
  const pages = Math.max(1, Math.ceil(images.length / PAGE));
  state.page = Math.min(state.page, pages - 1);
  const pager = $("pager");
  pager.replaceChildren(...Array.from({ length: pages }, (_, p) =>
    button(`${p + 1}`, () => { state.page = p; render(); })));
  const gallery = $("gallery");
  gallery.replaceChildren();
  for (const im of images.slice(state.page * PAGE, (state.page + 1) * PAGE)) {
    const card = el("div", null, { class: "card", "data-file": im.file_name });
    card.classList.toggle("excluded", state.excluded.has(im.file_name));
    const canvas = el("canvas");
    const exclude = el("input", null, { type: "checkbox", "aria-label": `exclude ${im.file_name}` });
    exclude.checked = state.excluded.has(im.file_name);
    exclude.addEventListener("change", () => {
      if (exclude.checked) state.excluded.add(im.file_name); else state.excluded.delete(im.file_name);
      render();
    });
    const label = el("label", " exclude");
    label.prepend(exclude);
    card.append(canvas, el("div", im.file_name, { class: "name" }),
      el("div", im.error ? `error: ${im.error}` : `${keptScores(im).length} kept`), label);
    canvas.addEventListener("click", () => zoom(im));
    gallery.append(card);
    if (!im.error) draw(canvas, im, true);
  }
}

async function imageUrl(im, thumb) {
  const id = `${im.job}/${im.n}/${thumb}`;
  if (!state.urls.has(id)) {
    const resp = await api(`/jobs/${im.job}/images/${im.n}${thumb ? "?thumb=true" : ""}`);
    state.urls.set(id, URL.createObjectURL(await resp.blob()));
  }
  return state.urls.get(id);
}

async function draw(canvas, im, thumb) {
  const img = new Image();
  img.src = await imageUrl(im, thumb);
  await img.decode();
  canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
  const ctx = canvas.getContext("2d");
  ctx.drawImage(img, 0, 0);
  const s = img.naturalWidth / im.width;
  const cats = state.review.categories;
  const skeleton = (cats[0] && cats[0].skeleton) || [];
  im.boxes.forEach(([x1, y1, x2, y2], i) => {
    if (!keeps(im.category_ids[i], im.scores[i])) return;
    const index = cats.findIndex((c) => c.id === im.category_ids[i]);
    ctx.strokeStyle = ctx.fillStyle = COLORS[index % COLORS.length];
    ctx.lineWidth = 2;
    ctx.strokeRect(x1 * s, y1 * s, (x2 - x1) * s, (y2 - y1) * s);
    ctx.font = "12px sans-serif";
    const votes = im.votes ? ` ${im.votes[i]}v` : "";  // transforms that agree on it
    ctx.fillText(`${cats[index]?.name ?? "?"} ${im.scores[i].toFixed(2)}${votes}`, x1 * s + 2,
      Math.max(10, y1 * s - 3));
    if (!im.keypoints) return;
    const pts = im.keypoints[i];
    const visible = im.keypoint_scores[i].map((k) => state.kp !== null && k >= state.kp);
    for (const [a, b] of skeleton) {
      if (!visible[a - 1] || !visible[b - 1]) continue;  // dropped keypoints stay hidden
      ctx.beginPath();
      ctx.moveTo(pts[a - 1][0] * s, pts[a - 1][1] * s); ctx.lineTo(pts[b - 1][0] * s, pts[b - 1][1] * s);
      ctx.stroke();
    }
    pts.forEach(([x, y], k) => { if (visible[k]) ctx.fillRect(x * s - 2, y * s - 2, 4, 4); });
    // How far apart the transforms put each kept keypoint: a ring of that radius.
    const spread = im.keypoint_spread && im.keypoint_spread[i];
    if (!spread) return;
    const size = Math.max(x2 - x1, y2 - y1) * s;
    ctx.lineWidth = 1;
    pts.forEach(([x, y], k) => {
      if (!visible[k] || spread[k] * size < 3) return;
      ctx.beginPath(); ctx.arc(x * s, y * s, spread[k] * size, 0, 2 * Math.PI); ctx.stroke();
    });
  });
}

function zoom(im) {
  draw($("zoom-canvas"), im, false);
  $("zoom").showModal();
}

async function saveSelection() {
  const data = state.review;
  const path = data.kind === "job" ? `/jobs/${data.name}/selection` : `/datasets/${data.name}/selection`;
  await api(path, { method: "PUT", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ score_thresholds: state.thresholds, keypoint_threshold: state.kp,
      excluded: [...state.excluded] }) });
  $("review-status").textContent = "selection saved: downloads now apply it";
}

async function download() {
  const data = state.review;
  const path = data.kind === "job" ? `/jobs/${data.name}/annotations` : `/datasets/${data.name}/annotations`;
  const resp = await api(path);
  const link = el("a", null, { download: `${data.name}.pseudo.json` });
  link.href = URL.createObjectURL(await resp.blob());
  document.body.append(link);
  link.click();
  link.remove();
  $("review-status").textContent = `downloaded with the ${resp.headers.get("X-Distill-Selection")} selection`;
}

$("signin-form").addEventListener("submit", signIn);
$("signout").addEventListener("click", signOut);
$("upload-form").addEventListener("submit", upload);
$("sort").addEventListener("change", render);
$("save").addEventListener("click", () => saveSelection().catch((e) => { $("review-status").textContent = e.message; }));
$("download").addEventListener("click", () => download().catch((e) => { $("review-status").textContent = e.message; }));
$("zoom-close").addEventListener("click", () => $("zoom").close());
for (const b of document.querySelectorAll("nav button[data-view]")) {
  b.addEventListener("click", () => show(b.dataset.view));
}
if (key()) enter();
