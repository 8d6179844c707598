// Which page buttons a pager shows: the first and last pages and a window around the
// current one, with a gap (null) where pages are left out, so that a dataset of
// thousands of images gets a dozen buttons, not hundreds. No DOM here (tested by node).

/** Page indices (0-based) and nulls for gaps, for page `current` of `total`. */
export function pageWindow(current, total, around = 3) {
  const kept = (p) => p === 0 || p === total - 1 || Math.abs(p - current) <= around;
  const shown = [];
  for (let p = 0; p < total; p++) {
    // A gap of one page would take as much room as its button: show the page.
    if (kept(p) || (kept(p - 1) && kept(p + 1))) shown.push(p);
    else if (shown[shown.length - 1] !== null) shown.push(null);
  }
  return shown;
}
