// DOM helpers. Every server-provided name is set as text (textContent), never as HTML.
import { pageWindow } from "./pages.js";

export const $ = (id) => document.getElementById(id);

/** A new element with `text` as its text content and `attrs` as attributes. */
export function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

export function button(text, onClick, attrs = {}) {
  const b = el("button", text, { type: "button", ...attrs });
  b.addEventListener("click", onClick);
  return b;
}

/** A pager's buttons (see pages.js): `go(p)` shows page p; the current one is marked. */
export function pagerButtons(current, total, go) {
  return pageWindow(current, total).map((p) => p === null
    ? el("span", "…", { class: "pager-gap" })
    : button(`${p + 1}`, () => go(p), p === current ? { "aria-current": "page" } : {}));
}

/** Sets a node's text only when it changed (so that a refresh disturbs nothing). */
export function setText(node, text) {
  const value = String(text ?? "");
  if (node.textContent !== value) node.textContent = value;
}

/** Asks in the page's own dialog (no window.confirm); resolves to true for "yes". */
export function confirmAction(message, yes = "Yes") {
  const dialog = $("confirm");
  $("confirm-text").textContent = message;
  $("confirm-yes").textContent = yes;
  return new Promise((resolve) => {
    const done = (answer) => {
      $("confirm-yes").onclick = $("confirm-no").onclick = dialog.onclose = null;
      if (dialog.open) dialog.close();
      resolve(answer);
    };
    $("confirm-yes").onclick = () => done(true);
    $("confirm-no").onclick = () => done(false);
    dialog.onclose = () => done(false);
    dialog.showModal();
    $("confirm-no").focus();
  });
}
