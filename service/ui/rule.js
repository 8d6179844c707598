// The selection rule, applied in the page when a slider moves: a port of
// distill.calibrate.Selection.status (and of distill.pseudolabel_file.to_coco's candidate
// count and _add_keypoints). The API sends the rule's values (the review document's
// `rule`); this module is the page's only copy of how they apply. Keep it in step with
// the Python original: tests/ui/test_download.py compares the page with downloaded files.
//
// A rule: {score: {catId: threshold|null}, keypoint: threshold|null,
//          ignore: {catId: threshold|null}, min_votes, excluded: Set(file),
//          accepted: {file: Set(index)}, rejected: {file: Set(index)}}.
// A null or missing threshold keeps nothing (Python: math.inf); comparisons are >=.

export const IN_FILE = new Set(["kept", "ignored"]);

function reaches(thresholds, catId, score) {
  const t = thresholds[String(catId)];
  return t !== null && t !== undefined && score >= t;
}

/** Selection.keeps: kept by the thresholds (and enough agreeing transforms). */
export function keeps(rule, catId, score, votes) {
  if (votes !== null && votes !== undefined && votes < rule.min_votes) return false;
  return reaches(rule.score, catId, score);
}

/** Selection.ignores: not kept, but at least the category's ignore threshold. */
export function ignores(rule, catId, score, votes) {
  if (keeps(rule, catId, score, votes)) return false;
  return reaches(rule.ignore, catId, score);
}

/** Selection.status of the index-th prediction of an image of the review document. */
export function statusOf(rule, im, index) {
  const votes = im.votes ? im.votes[index] : null;
  const cat = im.category_ids[index];
  const score = im.scores[index];
  if (rule.rejected[im.file_name]?.has(index)) return "rejected";
  if (rule.accepted[im.file_name]?.has(index)) return "kept";
  if (keeps(rule, cat, score, votes)) return "kept";
  if (ignores(rule, cat, score, votes)) return "ignored";
  return votes !== null && votes < rule.min_votes ? "filtered" : "candidate";
}

/** to_coco's calibration candidates: predictions enough transforms agree on. */
export function isCandidate(rule, im, index) {
  return !im.votes || im.votes[index] >= rule.min_votes;
}

/** Selection.keeps_keypoint: a kept instance's keypoint labeled visible (v=2). */
export function keepsKeypoint(rule, score) {
  return rule.keypoint !== null && rule.keypoint !== undefined && score >= rule.keypoint;
}

/** Whether an image's predictions reach the file at all (not excluded, not failed). */
export function inFile(rule, im) { return !im.error && !rule.excluded.has(im.file_name); }

/** A rule from the review document's `rule` (or `calibrated`) block. */
export function ruleFrom(block, base = null) {
  const sets = (m) => Object.fromEntries(Object.entries(m || {}).map(([k, v]) => [k, new Set(v)]));
  return {
    score: { ...block.score }, keypoint: block.keypoint ?? null, ignore: { ...(block.ignore || {}) },
    min_votes: block.min_votes ?? 0,
    excluded: new Set(block.excluded ?? (base ? base.excluded : [])),
    accepted: block.accepted ? sets(block.accepted) : (base ? base.accepted : {}),
    rejected: block.rejected ? sets(block.rejected) : (base ? base.rejected : {}),
  };
}

/** The body of PUT .../selection (jobs.records.SelectionChoice) that saves `rule`. */
export function selectionBody(rule) {
  const lists = (m) => Object.fromEntries(Object.entries(m).filter(([, s]) => s.size)
    .map(([k, s]) => [k, [...s].sort((a, b) => a - b)]).sort(([a], [b]) => (a < b ? -1 : 1)));
  const score = Object.fromEntries(Object.entries(rule.score).sort(([a], [b]) => Number(a) - Number(b)));
  return { score_thresholds: score, keypoint_threshold: rule.keypoint, min_votes: rule.min_votes,
    excluded: [...rule.excluded].sort(), accepted: lists(rule.accepted), rejected: lists(rule.rejected) };
}
