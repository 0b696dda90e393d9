// The admin API client: the token lives in this tab's sessionStorage and travels only in
// the Authorization header (never in a URL, so never in logs or history).
const KEY = "edgegw-admin-token";

export function token() { return sessionStorage.getItem(KEY) || ""; }
export function setToken(value) {
  if (value) sessionStorage.setItem(KEY, value); else sessionStorage.removeItem(KEY);
}

export class ApiError extends Error {
  constructor(status, doc) {
    super((doc && (doc.detail || doc.title)) || `HTTP ${status}`);
    this.status = status;
    this.doc = doc;
  }
}

export async function api(path, { method = "GET", body, auth = true } = {}) {
  const headers = { Accept: "application/json" };
  if (auth && token()) headers.Authorization = `Bearer ${token()}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, {
    method, headers, cache: "no-store", credentials: "omit",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  let doc = null;
  try { doc = await response.json(); } catch { doc = null; }
  if (!response.ok) throw new ApiError(response.status, doc);
  return doc;
}

// Small DOM helpers shared by the views.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

export function setText(node, text) {
  const value = String(text);
  if (node.textContent !== value) node.textContent = value;
}

export function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleTimeString() : "—";
}
