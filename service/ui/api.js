// The page's API client: the key, requests, errors in words, paths, and images as blobs.
// The key lives in sessionStorage and travels only in the Authorization header, never in a
// URL; images are fetched with it and shown through blob URLs, all revoked on sign-out.

const KEY = "distill-key";
const MEANING = {
  400: "the request was not well-formed", 401: "the key was refused",
  404: "not found (for this key)", 409: "not possible in the resource's current state",
  413: "too large", 422: "a value is missing or invalid", 429: "too many images queued; retry later",
  500: "the service failed", 503: "the service is unavailable",
};

/** An API error: `message` is a sentence to show; `files` lists refused files. */
export class ApiError extends Error {
  constructor(message, status, detail) {
    super(message);
    this.status = status;
    this.detail = detail || {};
    this.files = Array.isArray(this.detail.files) ? this.detail.files : [];
  }
}

let onUnauthorized = () => {};
export function whenUnauthorized(handler) { onUnauthorized = handler; }

export function key() { return sessionStorage.getItem(KEY); }
export function setKey(value) { sessionStorage.setItem(KEY, value); }
export function clearKey() { sessionStorage.removeItem(KEY); }

/** fetch with the key; a 4xx/5xx becomes an ApiError worded from the body, never raw JSON. */
export async function api(path, options = {}) {
  const headers = { ...(options.headers || {}), Authorization: `Bearer ${key()}` };
  let resp;
  try {
    resp = await fetch(path, { ...options, headers });
  } catch (e) {
    throw new ApiError("the service cannot be reached (network error)", 0, null);
  }
  if (resp.status === 401) {
    onUnauthorized();
    throw new ApiError("signed out: the key was refused", 401, null);
  }
  if (!resp.ok) throw errorFrom(resp.status, await resp.text());
  return resp;
}

export async function apiJson(path, options) { return (await api(path, options)).json(); }

/** The ApiError for a status and a response body (the project's {"detail": {"message"}}). */
export function errorFrom(status, text) {
  let detail = null;
  try { detail = JSON.parse(text).detail; } catch (e) { /* not JSON: say the status */ }
  const message = detail && typeof detail.message === "string" ? detail.message
    : `the service answered ${status}: ${MEANING[status] || "an error"}`;
  return new ApiError(message, status, detail && typeof detail === "object" ? detail : null);
}

/** An error as one line of text (for status lines); ApiErrors keep their words. */
export function errorText(e) {
  return e instanceof ApiError ? e.message : `unexpected error: ${e && e.message ? e.message : e}`;
}

/** The URL of a job's or a dataset's resource: one place builds them. */
export function resourcePath(kind, name, what) {
  const base = kind === "job" ? `/jobs/${encodeURIComponent(name)}`
    : `/datasets/${encodeURIComponent(name)}`;
  return what ? `${base}/${what}` : base;
}

/** POST /annotate with upload progress (fetch reports none); resolves to the 202 body. */
export function uploadBatch(form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/annotate");
    xhr.setRequestHeader("Authorization", `Bearer ${key()}`);
    xhr.upload.onprogress = (e) => onProgress(e.total ? e.loaded / e.total : 0);
    xhr.onload = () => {
      if (xhr.status === 202) resolve(JSON.parse(xhr.responseText));
      else {
        if (xhr.status === 401) onUnauthorized();
        reject(errorFrom(xhr.status, xhr.responseText));
      }
    };
    xhr.onerror = () => reject(new ApiError("the upload was cut off (network error)", 0, null));
    xhr.send(form);
  });
}

// Blob URLs of images fetched with the key, by job/index/size (a promise each, so that
// two views asking at once fetch once); all revoked on sign-out.
const urls = new Map();

export function imageUrl(im, thumb) {
  const id = `${im.job}/${im.n}/${thumb ? "t" : "f"}`;
  if (!urls.has(id)) {
    const url = api(`/jobs/${im.job}/images/${im.n}${thumb ? "?thumb=true" : ""}`)
      .then((resp) => resp.blob()).then((blob) => {
        const made = URL.createObjectURL(blob);
        if (urls.get(id) !== url) {  // signed out while it loaded
          URL.revokeObjectURL(made);
          throw new ApiError("signed out", 401, null);
        }
        return made;
      });
    url.catch(() => urls.delete(id));
    urls.set(id, url);
  }
  return urls.get(id);
}

/** A decoded image element of `im` (full size or thumbnail). */
export async function loadImage(im, thumb) {
  const img = new Image();
  img.src = await imageUrl(im, thumb);
  await img.decode();
  return img;
}

export function revokeImages() {
  for (const url of urls.values()) url.then((u) => URL.revokeObjectURL(u), () => {});
  urls.clear();
}
