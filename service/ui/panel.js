// The review panel: per category the labeled target, a score histogram with the
// threshold, a slider and the kept count; min_votes; the keypoint threshold in the
// units the file records, with what it keeps. Built once per review document and
// updated (never rebuilt) while a slider moves.

import { $, el, setText } from "./dom.js";
import { SIDES, categoryColor } from "./draw.js";

const fmt = (t, digits = 3) => (t === null || t === undefined ? "none (keeps nothing)" : t.toFixed(digits));

export function buildPanel(host) {
  const { doc, rule } = host.R;
  const filter = $("class-filter");
  filter.replaceChildren(el("option", "all categories", { value: "" }),
    ...doc.categories.map((c) => el("option", c.name, { value: String(c.id) })));
  filter.value = host.R.filter;
  $("view-mode").value = host.R.view;
  const root = $("categories");
  root.replaceChildren();
  for (const cat of doc.categories) {
    const id = String(cat.id);
    const report = doc.report[id] || {};
    const box = el("div", null, { class: "category", "data-category": id });
    const title = el("h3", cat.name);
    title.style.color = categoryColor(doc.categories, cat.id);
    const slider = el("input", null, { type: "range", min: 0, max: 1, step: 0.001,
      "aria-label": `threshold of ${cat.name}` });
    slider.value = rule.score[id] ?? 1;
    slider.addEventListener("input", () => host.setThreshold(cat.id, Number(slider.value)));
    box.append(title,
      el("p", `labeled target ${report.target ?? "n/a"}${doc.sample ? " for the sample" : ""}; calibrated threshold ${fmt(doc.calibrated.score[id])}`,
        { class: "target" }),
      el("canvas", null, { width: 280, height: 60, class: "hist" }), slider,
      el("output"), el("p", null, { class: "kept" }), el("p", null, { class: "ignored" }));
    root.append(box);
  }
  const votes = doc.transforms > 1 && doc.images.some((im) => im.votes);
  $("votes-panel").hidden = !votes;
  if (votes) {
    const input = $("min-votes");
    input.max = doc.transforms;
    input.value = rule.min_votes;
    input.oninput = () => {
      const v = Number(input.value);
      if (Number.isInteger(v) && v >= 0 && v <= doc.transforms) host.setMinVotes(v);
    };
    setText($("votes-info"), `of ${doc.transforms} transforms must agree on a kept box (the job's: ${
      doc.calibrated.min_votes})`);
  }
  buildKeypointPanel(host);
}

function buildKeypointPanel(host) {
  const { doc, rule } = host.R;
  $("kp-panel").hidden = doc.task !== "keypoints";
  if (doc.task !== "keypoints") return;
  let lo = Infinity;
  let hi = -Infinity;
  for (const im of doc.images) {
    for (const row of im.keypoint_scores || []) for (const s of row) { lo = Math.min(lo, s); hi = Math.max(hi, s); }
  }
  if (lo > hi) { lo = 0; hi = 1; }
  const kp = $("kp-slider");
  kp.min = Math.floor(lo * 100) / 100;
  kp.max = Math.ceil(hi * 100) / 100;
  kp.step = 0.01;
  kp.value = rule.keypoint ?? kp.max;
  kp.oninput = () => host.setKeypoint(Number(kp.value));
  setText($("kp-units"), "Keypoint scores are the ensembled heatmap logit at each keypoint's peak "
    + `(here ${lo.toFixed(2)} to ${hi.toFixed(2)}): the units of distill.keypoint_scores and `
    + "info.thresholds.keypoint in the file. Higher is surer; it is not a probability. A kept "
    + "instance's keypoint scoring at least the threshold is labeled visible, the others are "
    + `written 0,0,0. Calibrated: ${fmt(doc.calibrated.keypoint, 2)}.`);
  const legend = $("kp-legend");
  legend.replaceChildren(...Object.entries(SIDES).map(([name, color]) => {
    const item = el("span", `● ${name}`, { class: "side" });
    item.style.color = color;
    return item;
  }));
}

export function updatePanel(host) {
  const { doc, rule } = host.R;
  const { cats, instances, keypoints } = host.counts();
  for (const box of document.querySelectorAll("#categories .category")) {
    const id = box.dataset.category;
    const c = cats.get(id);
    const t = rule.score[id];
    box.dataset.kept = c.kept;
    box.dataset.candidates = c.candidates;
    box.dataset.ignored = c.ignored;
    const slider = box.querySelector("input[type=range]");
    if (t !== null && Number(slider.value) !== t) slider.value = t;
    setText(box.querySelector("output"), t === null || t === undefined ? "keeps nothing" : `threshold ${t.toFixed(3)}`);
    setText(box.querySelector(".kept"), `kept ${c.kept} of ${c.candidates} candidates${
      doc.sample ? " in the sample" : ""}`);
    const ig = rule.ignore[id];
    const ignored = box.querySelector(".ignored");
    ignored.hidden = ig === null || ig === undefined;
    setText(ignored, `${c.ignored} ignore regions (scores from ${fmt(ig)}; recalibrated when saved)`);
    histogram(box.querySelector("canvas"), c.scores, t);
  }
  if (!$("votes-panel").hidden && Number($("min-votes").value) !== rule.min_votes) $("min-votes").value = rule.min_votes;
  if (doc.task !== "keypoints") return;
  const kp = $("kp-panel");
  kp.dataset.instances = instances;
  kp.dataset.keptKeypoints = keypoints;
  setText($("kp-value"), rule.keypoint === null ? "none" : rule.keypoint.toFixed(2));
  const target = doc.report.keypoints?.target_per_instance;
  setText($("kp-info"), `kept ${keypoints} keypoints on ${instances} kept instances (${
    instances ? (keypoints / instances).toFixed(1) : "n/a"} per instance; labeled: ${
    target === null || target === undefined ? "n/a" : target.toFixed(1)} visible per instance)`);
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
  if (threshold !== null && threshold !== undefined) {
    ctx.strokeStyle = "#b00020";
    ctx.beginPath();
    ctx.moveTo(threshold * canvas.width, 0); ctx.lineTo(threshold * canvas.width, canvas.height);
    ctx.stroke();
  }
}
