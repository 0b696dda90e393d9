// Overview: per route, req/s, 5xx rate and p50/p99 of each window of the last minute.
import { api, el, setText } from "./api.js";
import { draw, sparkline } from "./charts.js";

const rows = new Map();
const METRICS = [
  ["rps", "req/s", (v) => v.toFixed(1)],
  ["error_rate", "5xx share", (v) => `${(v * 100).toFixed(1)}%`],
  ["p50_ms", "p50", (v) => `${v.toFixed(1)} ms`],
  ["p99_ms", "p99", (v) => `${v.toFixed(1)} ms`],
];

export function init() {}

function row(name) {
  let r = rows.get(name);
  if (r) return r;
  const tr = el("tr", { "data-route": name }, el("th", { scope: "row", text: name }));
  r = { tr, cells: {} };
  for (const [key, label] of METRICS) {
    const value = el("span", { class: "num value", text: "—" });
    const chart = sparkline(`${label} of route ${name}, last minute`);
    tr.append(el("td", { class: key.replace("_", "-") }, el("div", { class: "metric" }, value, chart)));
    r.cells[key] = { value, chart };
  }
  document.querySelector("#overview-table tbody").append(tr);
  rows.set(name, r);
  return r;
}

export async function refresh() {
  const live = await api("/admin/live");
  for (const [name, data] of Object.entries(live.routes)) {
    const r = row(name);
    const last = data.points[data.points.length - 1];
    for (const [key, , fmt] of METRICS) {
      const { value, chart } = r.cells[key];
      const v = last ? last[key] : null;
      setText(value, v === null || v === undefined ? "—" : fmt(v));
      // The whole minute (as far as this page has seen it) on hover.
      const whole = data.summary ? data.summary[key] : null;
      const title = whole === null || whole === undefined ? "" : `last minute: ${fmt(whole)}`;
      if (value.title !== title) value.title = title;
      draw(chart, data.points.map((p) => p[key]));
    }
  }
}
