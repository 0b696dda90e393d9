// Flags: the live table (/admin/flags), an editor that saves through PUT /admin/flags/NAME
// (the API validates: its reason is shown as is), and the "who gets it" preview.
import { api, el, setText } from "./api.js";

let wired = false;
let table = { version: 0, flags: {} };
const $ = (id) => document.getElementById(id);

function normalized(def) {
  return typeof def === "boolean" ? { enabled: def } : { ...def };
}

function summary(def) {
  const parts = [];
  if (def.countries) parts.push(`countries ${def.countries.join(", ")}`);
  if (def.headers) parts.push(`headers ${Object.keys(def.headers).join(", ")}`);
  if (def.claims) parts.push(`claims ${Object.keys(def.claims).join(", ")}`);
  return parts.join(" · ") || "everyone";
}

function parseJson(id, what) {
  const text = $(id).value.trim();
  if (!text) return undefined;
  try { return JSON.parse(text); } catch { throw new Error(`${what} is not valid JSON`); }
}

// The definition in the editor, as the API takes it.
function draft() {
  const def = { enabled: $("f-enabled").checked, rollout: Number($("f-rollout").value) };
  const countries = $("f-countries").value.split(",").map((c) => c.trim()).filter(Boolean);
  if (countries.length) def.countries = countries;
  const headers = parseJson("f-headers", "Headers");
  if (headers !== undefined) def.headers = headers;
  const claims = parseJson("f-claims", "Claims");
  if (claims !== undefined) def.claims = claims;
  return def;
}

function edit(name) {
  const def = normalized(table.flags[name]);
  $("f-name").value = name;
  $("f-enabled").checked = def.enabled !== false;
  $("f-rollout").value = def.rollout ?? 100;
  setText($("f-rollout-out"), $("f-rollout").value);
  $("f-countries").value = (def.countries || []).join(", ");
  $("f-headers").value = def.headers ? JSON.stringify(def.headers) : "";
  $("f-claims").value = def.claims ? JSON.stringify(def.claims) : "";
  setText($("flag-error"), "");
  $("f-name").focus();
}

async function save(name, def, out) {
  try {
    const doc = await api(`/admin/flags/${encodeURIComponent(name)}`, { method: "PUT", body: def });
    out.className = "result good";
    setText(out, `Saved '${name}' (table version ${doc.version}).`);
    return true;
  } catch (err) {
    out.className = "result bad error";
    setText(out, err.message);
    return false;
  } finally {
    await refresh();
  }
}

async function toggle(name, enabled) {
  const def = { ...normalized(table.flags[name]), enabled };
  await save(name, def, $("flags-result"));
}

async function submitFlag(event) {
  event.preventDefault();
  let def;
  try { def = draft(); } catch (err) { setText($("flag-error"), err.message); return; }
  if (await save($("f-name").value.trim(), def, $("flag-error"))) {
    setText($("flags-result"), $("flag-error").textContent);
    setText($("flag-error"), "");
  }
}

async function remove() {
  const name = $("f-name").value.trim();
  try {
    await api(`/admin/flags/${encodeURIComponent(name)}`, { method: "DELETE" });
    setText($("flags-result"), `Deleted '${name}'.`);
    setText($("flag-error"), "");
  } catch (err) {
    setText($("flag-error"), err.message);
  }
  await refresh();
}

async function runPreview(event) {
  event.preventDefault();
  const out = $("preview-result");
  try {
    const body = { key: $("p-key").value, country: $("p-country").value.trim() };
    const headers = parseJson("p-headers", "Request headers");
    if (headers !== undefined) body.headers = headers;
    const claims = parseJson("p-claims", "Claims");
    if (claims !== undefined) body.claims = claims;
    if ($("f-name").value.trim()) {
      body.name = $("f-name").value.trim();
      body.definition = draft();
    }
    const doc = await api("/admin/preview/flags", { method: "POST", body });
    const items = Object.entries(doc.flags).map(([name, r]) =>
      el("li", { "data-flag": name }, el("strong", { text: `${name}: ${r.on ? "on" : "off"}` }),
        el("span", { class: "muted small", text: ` — ${r.reason}` })));
    out.className = "result";
    out.replaceChildren(el("ul", {}, ...items),
      el("p", {}, el("code", { text: `x-edgegw-flags: ${doc["x-edgegw-flags"]}` })));
  } catch (err) {
    out.className = "result bad";
    out.replaceChildren(el("span", { text: err.message }));
  }
}

export function init() {
  if (wired) return;
  wired = true;
  $("flag-form").addEventListener("submit", submitFlag);
  $("preview-form").addEventListener("submit", runPreview);
  $("f-delete").addEventListener("click", remove);
  $("f-rollout").addEventListener("input", () => setText($("f-rollout-out"), $("f-rollout").value));
}

export async function refresh() {
  table = await api("/admin/flags");
  setText($("flags-version"), `table version ${table.version}`);
  const tbody = document.querySelector("#flags-table tbody");
  const names = Object.keys(table.flags).sort();
  for (const tr of [...tbody.children]) if (!names.includes(tr.dataset.flag)) tr.remove();
  for (const name of names) {
    const def = normalized(table.flags[name]);
    let tr = tbody.querySelector(`tr[data-flag="${CSS.escape(name)}"]`);
    if (!tr) {
      const box = el("input", { type: "checkbox", "aria-label": `${name} enabled`, class: "enabled" });
      box.addEventListener("change", () => toggle(name, box.checked));
      const button = el("button", { type: "button", class: "secondary", text: "Edit" });
      button.setAttribute("aria-label", `Edit ${name}`);
      button.addEventListener("click", () => edit(name));
      tr = el("tr", { "data-flag": name }, el("th", { scope: "row", text: name }), el("td", {}, box),
        el("td", { class: "rollout" }), el("td", { class: "targeting" }), el("td", {}, button));
      tbody.append(tr);
    }
    tr.querySelector("input.enabled").checked = def.enabled !== false;
    setText(tr.querySelector(".rollout"), `${def.rollout ?? 100}%`);
    setText(tr.querySelector(".targeting"), summary(def));
  }
}
