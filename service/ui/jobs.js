// The jobs view: the key's jobs a page at a time (GET /jobs with next_cursor), refreshed
// every 2 s in place (rows keyed by job id, cells changed only when their text changes,
// so a focused button keeps its focus), failed jobs with their reason, Cancel/Delete
// after a confirmation, and the key's datasets (GET /datasets).

import { api, apiJson, errorText } from "./api.js";
import { $, button, confirmAction, el, setText } from "./dom.js";

const J = { cursors: [null], page: 0, next: null, timer: null, onReview: null, seen: "", ticks: 0 };

function perPage() { return Number($("jobs-per-page").value) || 20; }

function stateText(job) {
  if (job.status === "failed") return `failed: ${job.error || "no reason recorded"}`;
  if (job.waiting_for) return `${job.status} (waiting for ${job.waiting_for})`;
  if (job.status === "running" && job.error) return `running (${job.error}; retrying)`;
  return job.status;
}

function makeActions(job) {
  const cell = el("td", null, { class: "actions" });
  if (job.status === "finished") cell.append(button("Review", () => J.onReview("job", job.id)));
  const live = job.status === "queued" || job.status === "running";
  cell.append(button(live ? "Cancel" : "Delete", () => removeJob(job, live)));
  cell.dataset.key = job.status;  // the buttons change only with the status
  return cell;
}

async function removeJob(job, live) {
  const what = `${live ? "Cancel" : "Delete"} job ${job.id.slice(0, 8)}${job.dataset ? ` of dataset ${job.dataset}` : ""}? ${
    live ? "It stops, and its images and results are deleted." : "Its images and pseudo-labels are deleted."}`;
  if (!(await confirmAction(what, live ? "Cancel the job" : "Delete the job"))) return;
  try {
    await api(`/jobs/${job.id}`, { method: "DELETE" });
    setText($("jobs-status"), `job ${job.id.slice(0, 8)} ${live ? "cancelled" : "deleted"}`);
  } catch (e) {
    setText($("jobs-status"), `could not ${live ? "cancel" : "delete"} job ${job.id.slice(0, 8)}: ${errorText(e)}`);
  }
  refreshJobs();
}

function cells(job) {
  return [job.created_at.slice(0, 19).replace("T", " "), job.id.slice(0, 8), job.dataset ?? "",
    job.teacher, stateText(job), `${job.progress.done}/${job.progress.total}`, job.progress.failed];
}

function updateRow(row, job) {
  row.dataset.status = job.status;
  const texts = cells(job);
  texts.forEach((text, i) => setText(row.children[i], text));
  row.children[4].classList.toggle("error", job.status === "failed");
  const old = row.children[texts.length];
  if (old.dataset.key !== job.status) old.replaceWith(makeActions(job));
}

function newRow(job) {
  const row = el("tr", null, { "data-job": job.id });
  row.append(...cells(job).map(() => el("td")), el("td", null, { "data-key": "" }));
  updateRow(row, job);
  return row;
}

/** Shows the current page; rows are updated in place, added or removed, never rebuilt;
`withDatasets` refreshes the datasets too (else they follow changes of the listed jobs). */
export async function refreshJobs(withDatasets = false) {
  let page;
  try {
    const cursor = J.cursors[J.page];
    page = await apiJson(`/jobs?limit=${perPage()}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
  } catch (e) {
    setText($("jobs-status"), `could not list the jobs: ${errorText(e)}`);
    return;
  }
  const body = $("jobs-table").querySelector("tbody");
  const rows = new Map([...body.children].map((r) => [r.dataset.job, r]));
  let previous = null;
  for (const job of page.jobs) {
    const row = rows.get(job.id) || newRow(job);
    rows.delete(job.id);
    updateRow(row, job);
    const want = previous ? previous.nextSibling : body.firstChild;
    if (want !== row) body.insertBefore(row, want);
    previous = row;
  }
  for (const row of rows.values()) row.remove();
  J.next = page.next_cursor;
  $("jobs-older").disabled = !J.next;
  $("jobs-newer").disabled = J.page === 0;
  setText($("jobs-page"), `page ${J.page + 1}`);
  $("jobs-empty").hidden = page.jobs.length > 0 || J.page > 0;
  // The datasets (every job of each is read): when a listed job changes, else every 10 s.
  const seen = page.jobs.map((j) => `${j.id}:${j.status}`).join();
  J.ticks = (J.ticks + 1) % 5;
  if (withDatasets || seen !== J.seen || J.ticks === 0) refreshDatasets();
  J.seen = seen;
}

async function refreshDatasets() {
  let datasets;
  try { ({ datasets } = await apiJson("/datasets")); } catch (e) { return; }
  const list = $("datasets");
  const items = new Map([...list.children].map((li) => [li.dataset.dataset, li]));
  let previous = null;
  for (const d of datasets) {
    const finished = d.statuses.finished || 0;
    const text = `${d.name}: ${finished}/${d.jobs} jobs finished${d.statuses.failed ? `, ${d.statuses.failed} failed` : ""} `;
    let item = items.get(d.name);
    items.delete(d.name);
    if (!item) {
      item = el("li", null, { "data-dataset": d.name });
      item.append(el("span"), button("Review", () => J.onReview("dataset", d.name)));
    }
    setText(item.firstChild, text);
    item.lastChild.hidden = !finished;
    const want = previous ? previous.nextSibling : list.firstChild;
    if (want !== item) list.insertBefore(item, want);
    previous = item;
  }
  for (const item of items.values()) item.remove();
}

function go(delta) {
  if (delta > 0 && J.next) { J.cursors[J.page + 1] = J.next; J.page += 1; }
  if (delta < 0 && J.page > 0) J.page -= 1;
  refreshJobs();
}

/** Wires the view once; `onReview(kind, name)` opens a review. */
export function installJobs(onReview) {
  J.onReview = onReview;
  $("jobs-older").addEventListener("click", () => go(1));
  $("jobs-newer").addEventListener("click", () => go(-1));
  $("jobs-per-page").addEventListener("change", () => { J.cursors = [null]; J.page = 0; refreshJobs(); });
}

/** Polls every 2 s while the jobs view is shown. */
export function startPolling() {
  stopPolling();
  J.timer = setInterval(() => { if (!$("jobs").hidden) refreshJobs(); }, 2000);
}

export function stopPolling() { clearInterval(J.timer); J.timer = null; }

/** Forgets everything listed (sign-out). */
export function clearJobs() {
  stopPolling();
  J.cursors = [null]; J.page = 0; J.next = null; J.seen = ""; J.ticks = 0;
  $("jobs-table").querySelector("tbody").replaceChildren();
  $("datasets").replaceChildren();
  setText($("jobs-status"), "");
}
