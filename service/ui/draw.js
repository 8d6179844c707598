// Drawing pseudo-labels on a canvas, in any view (thumbnail, zoom, crop): a view maps
// image pixels to canvas pixels as x * scale + ox. Kept instances are solid, ignore
// regions dotted grey, predictions just under their threshold dashed, rejected ones
// (zoom only) red. Keypoints are coloured by side, from their names.

export const COLORS = ["#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#46f0f0",
  "#f032e6", "#bcf60c", "#008080", "#9a6324"];
export const SIDES = { left: "#1f6fd1", right: "#e8590c", centre: "#2b9348" };
export const NEAR = 0.1;  // "just under a threshold": within this much of it

/** "left", "right" or "centre", from a keypoint's name (COCO: left_eye, right_knee, nose). */
export function side(name) {
  const n = String(name || "").toLowerCase();
  if (/(^|[_\s-])(left|l)([_\s-]|$)/.test(n)) return "left";
  if (/(^|[_\s-])(right|r)([_\s-]|$)/.test(n)) return "right";
  return "centre";
}

export function categoryColor(categories, catId) {
  const index = categories.findIndex((c) => c.id === catId);
  return COLORS[(index < 0 ? 0 : index) % COLORS.length];
}

/** How an instance of the given status is drawn; null: not drawn in this view. */
export function styleOf(status, near, zoomed) {
  if (status === "kept") return { dash: [], width: 2, alpha: 1 };
  if (status === "ignored") return { dash: [2, 3], width: 1.5, alpha: 0.9, color: "#888" };
  if (status === "rejected") return zoomed ? { dash: [4, 3], width: 1.5, alpha: 0.9, color: "#d00" } : null;
  if (near) return { dash: [6, 4], width: 1.5, alpha: 0.85 };
  return null;
}

/**
 * Draws `im`'s instances listed in `items` ({index, status, near}) on ctx, under `view`
 * ({scale, ox, oy}); `scene` gives categories, skeleton, keypoint names, the keypoint
 * rule (keepsKeypoint), votes' total and the selected index.
 */
export function drawInstances(ctx, im, items, view, scene) {
  const { scale: s, ox, oy } = view;
  const X = (x) => x * s + ox;
  const Y = (y) => y * s + oy;
  ctx.save();
  ctx.font = `${scene.font || 12}px sans-serif`;
  for (const { index: i, status, near } of items) {
    const style = styleOf(status, near, scene.zoomed);
    if (!style) continue;
    const [x1, y1, x2, y2] = im.boxes[i];
    const color = style.color || categoryColor(scene.categories, im.category_ids[i]);
    const selected = scene.selected === i;
    ctx.globalAlpha = style.alpha;
    ctx.strokeStyle = ctx.fillStyle = color;
    ctx.lineWidth = style.width + (selected ? 2 : 0);
    ctx.setLineDash(style.dash);
    ctx.strokeRect(X(x1), Y(y1), (x2 - x1) * s, (y2 - y1) * s);
    ctx.setLineDash([]);
    if (scene.labels !== false) {
      const votes = im.votes ? ` ${im.votes[i]}/${scene.transforms}v` : "";
      const name = scene.categories.find((c) => c.id === im.category_ids[i])?.name ?? "?";
      ctx.fillText(`${name} ${im.scores[i].toFixed(2)}${votes}`, X(x1) + 2, Math.max(10, Y(y1) - 3));
    }
    if (status === "kept" && im.keypoints) drawKeypoints(ctx, im, i, X, Y, s, scene);
  }
  ctx.restore();
}

function drawKeypoints(ctx, im, i, X, Y, s, scene) {
  const pts = im.keypoints[i];
  const visible = im.keypoint_scores[i].map((k) => scene.keepsKeypoint(k));
  const sides = scene.keypointNames.map(side);
  ctx.globalAlpha = 1;
  ctx.lineWidth = 2;
  for (const [a, b] of scene.skeleton) {
    if (!visible[a - 1] || !visible[b - 1]) continue;  // dropped keypoints stay hidden
    const sa = sides[a - 1];
    ctx.strokeStyle = sa === sides[b - 1] ? SIDES[sa] : SIDES.centre;
    ctx.beginPath();
    ctx.moveTo(X(pts[a - 1][0]), Y(pts[a - 1][1]));
    ctx.lineTo(X(pts[b - 1][0]), Y(pts[b - 1][1]));
    ctx.stroke();
  }
  const r = scene.zoomed ? 4 : 2.5;
  pts.forEach(([x, y], k) => {
    if (!visible[k]) return;
    ctx.fillStyle = SIDES[sides[k] || "centre"];
    ctx.beginPath(); ctx.arc(X(x), Y(y), r, 0, 2 * Math.PI); ctx.fill();
  });
  // How far apart the transforms put each kept keypoint: a thin ring of that radius.
  const spread = im.keypoint_spread && im.keypoint_spread[i];
  if (!spread) return;
  const [x1, y1, x2, y2] = im.boxes[i];
  const size = Math.max(x2 - x1, y2 - y1) * s;
  ctx.lineWidth = 1;
  ctx.globalAlpha = 0.6;
  pts.forEach(([x, y], k) => {
    if (!visible[k] || spread[k] * size < 3) return;
    ctx.strokeStyle = SIDES[sides[k] || "centre"];
    ctx.beginPath(); ctx.arc(X(x), Y(y), spread[k] * size, 0, 2 * Math.PI); ctx.stroke();
  });
}

/**
 * What lies under canvas point (px, py): the nearest visible keypoint of a drawn kept
 * instance within `radius` canvas px ({index, keypoint}), else the smallest drawn box
 * containing the point ({index}), else null.
 */
export function hitTest(im, items, view, scene, px, py, radius = 7) {
  const { scale: s, ox, oy } = view;
  let best = null;
  for (const { index: i, status } of items) {
    if (status !== "kept" || !im.keypoints) continue;
    im.keypoints[i].forEach(([x, y], k) => {
      if (!scene.keepsKeypoint(im.keypoint_scores[i][k])) return;
      const d = Math.hypot(x * s + ox - px, y * s + oy - py);
      if (d <= radius && (!best || d < best.d)) best = { index: i, keypoint: k, d };
    });
  }
  if (best) return { index: best.index, keypoint: best.keypoint };
  let box = null;
  for (const { index: i, status, near } of items) {
    if (!styleOf(status, near, true)) continue;
    const [x1, y1, x2, y2] = im.boxes[i];
    const inside = px >= x1 * s + ox && px <= x2 * s + ox && py >= y1 * s + oy && py <= y2 * s + oy;
    const area = (x2 - x1) * (y2 - y1);
    if (inside && (!box || area < box.area)) box = { index: i, area };
  }
  return box ? { index: box.index } : null;
}
