// The upload form, built from what the API serves: teachers with their live workers and
// the presets each accepts (GET /teachers), the presets' descriptions, the default
// preset, the files per request and the dataset-name rule (GET /options). Images go in
// batches of max_files; a refused batch says exactly what was queued before it.

import { apiJson, errorText, uploadBatch } from "./api.js";
import { $, el, setText } from "./dom.js";

const U = { options: null, teachers: [] };

/** Fills the form (after sign-in). */
export async function loadUploadForm() {
  const [options, { teachers }] = await Promise.all([apiJson("/options"), apiJson("/teachers")]);
  U.options = options;
  U.teachers = teachers;
  const select = $("teacher");
  const previous = select.value;
  select.replaceChildren(...teachers.map((t) => {
    const workers = t.workers.length ? `${t.workers.length} worker${t.workers.length > 1 ? "s" : ""}` : "no worker running";
    return el("option", `${t.name} (${t.task ?? "unusable"}; ${workers})`, { value: t.name });
  }));
  // The default: the one chosen before, else the first teacher a live worker serves.
  const live = teachers.find((t) => t.workers.length && !t.error);
  select.value = teachers.some((t) => t.name === previous) ? previous : (live || teachers[0] || {}).name || "";
  $("dataset").title = `letters, digits, '.', '_' or '-' (${options.dataset_pattern})`;
  setText($("max-files"), `sent in batches of ${options.max_files} images`);
  teacherChanged();
}

function teacherChanged() {
  const teacher = U.teachers.find((t) => t.name === $("teacher").value);
  const presets = $("preset");
  const previous = presets.value;
  const accepted = teacher ? U.options.presets.filter((p) => teacher.presets.includes(p.name)) : [];
  presets.replaceChildren(...accepted.map((p) => el("option", `${p.name} (${p.passes} pass${p.passes > 1 ? "es" : ""})`, { value: p.name })));
  const names = accepted.map((p) => p.name);
  presets.value = names.includes(previous) ? previous
    : names.includes(U.options.default_preset) ? U.options.default_preset : names[0] || "";
  presetChanged();
  const refused = Object.entries(teacher?.refused_presets || {});
  setText($("preset-refused"), refused.length ? `not offered for this teacher: ${refused.map(([n, why]) => `${n} (${why})`).join("; ")}` : "");
  const notes = [];
  if (teacher && !teacher.workers.length) notes.push(`no worker serves ${teacher.name} now: jobs wait until one starts (distill worker --teacher ${teacher.name})`);
  if (teacher && teacher.error) notes.push(`unusable: ${teacher.error}`);
  if (teacher && !teacher.calibrated) notes.push("this teacher carries no labeled statistics: give explicit thresholds, or its jobs fail");
  setText($("teacher-note"), notes.join(". "));
  $("kp-threshold-field").hidden = teacher?.task !== "keypoints";
  $("votes-field").hidden = teacher?.task === "keypoints";
}

function presetChanged() {
  const preset = U.options?.presets.find((p) => p.name === $("preset").value);
  setText($("preset-info"), preset ? preset.description : "");
}

function datasetValid() {
  const input = $("dataset");
  const ok = !input.value || new RegExp(U.options.dataset_pattern).test(input.value);
  input.setCustomValidity(ok ? "" : `a dataset name is letters, digits, '.', '_' or '-', starting with a letter or digit, at most 64`);
  return ok;
}

function formFields(dataset) {
  const fields = [["teacher", $("teacher").value], ["tta", $("preset").value], ["dataset", dataset]];
  for (const [name, id] of [["score_threshold", "score-threshold"], ["keypoint_threshold", "kp-threshold"],
    ["min_votes", "min-votes-upload"], ["ignore_factor", "ignore-factor"]]) {
    const input = $(id);
    if (input.value !== "" && !input.closest("[hidden]")) fields.push([name, input.value]);
  }
  return fields;
}

function showFailure(error, queued, total, jobs, dataset) {
  const status = $("upload-status");
  const what = queued ? `${queued} of ${total} images were queued (${jobs} job${jobs > 1 ? "s" : ""} in dataset ${dataset}); the other ${total - queued} were not`
    : `nothing was queued (${total} images)`;
  setText(status, `${what}: ${errorText(error)}`);
  status.classList.add("error");
  const list = $("upload-files");
  list.replaceChildren(...(error.files || []).map((f) => el("li", `${f.file}: ${f.error}`)));
}

async function upload(event, done) {
  event.preventDefault();
  const files = [...$("folder").files, ...$("files").files];
  const status = $("upload-status");
  status.classList.remove("error");
  $("upload-files").replaceChildren();
  if (!files.length) { setText(status, "choose a folder or files first"); return; }
  if (!datasetValid()) { $("dataset").reportValidity(); return; }
  const dataset = $("dataset").value || `upload-${Date.now().toString(36)}`;
  const size = U.options.max_files;
  const bar = $("upload-progress");
  bar.hidden = false;
  bar.value = 0;
  let queued = 0;
  let jobs = 0;
  for (let i = 0; i < files.length; i += size) {
    const form = new FormData();
    for (const f of files.slice(i, i + size)) form.append("files", f, f.webkitRelativePath || f.name);
    for (const [name, value] of formFields(dataset)) form.append(name, value);
    try {
      const accepted = await uploadBatch(form, (p) => { bar.value = (i + p * Math.min(size, files.length - i)) / files.length; });
      queued += Math.min(size, files.length - i);
      jobs += 1;
      setText(status, `queued ${queued} of ${files.length} images in dataset ${dataset}${
        accepted.renamed.length ? ` (${accepted.renamed.length} renamed: another image had the name)` : ""}`);
    } catch (e) {
      showFailure(e, queued, files.length, jobs, dataset);
      return;
    }
  }
  bar.value = 1;
  done();
}

/** Wires the form once; `done()` runs after every batch was queued. */
export function installUpload(done) {
  $("upload-form").addEventListener("submit", (e) => upload(e, done));
  $("teacher").addEventListener("change", teacherChanged);
  $("preset").addEventListener("change", presetChanged);
  $("dataset").addEventListener("input", datasetValid);
}

export function clearUpload() {
  $("teacher").replaceChildren();
  $("preset").replaceChildren();
  $("upload-form").reset();
  setText($("upload-status"), "");
  $("upload-files").replaceChildren();
  $("upload-progress").hidden = true;
}
