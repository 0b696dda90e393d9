// Backends: every configured backend, its endpoints' state per worker (health, ejection:
// /admin/status), refusals by its circuit breakers, and the store's health (/readyz).
import { api, el, setText } from "./api.js";

export function init() {}

function badge(text, cls) {
  return el("span", { class: `badge ${cls}`, text });
}

export async function refresh(ctx) {
  const [status, live, ready] = await Promise.all([
    api("/admin/status"), api("/admin/live"),
    fetch("/readyz", { cache: "no-store" }).then((r) => r.json()).catch(() => ({ store: "unknown" })),
  ]);
  const store = document.getElementById("store-state");
  setText(store, ready.store || "unknown");
  store.className = `badge ${ready.store === "up" ? "ok" : "bad"}`;
  const rows = [];
  for (const [name, backend] of Object.entries(ctx.config.backends || {})) {
    const circuit = live.circuit_open[name] || 0;
    const circuitCell = circuit ? badge(`${circuit} refused`, "warn") : badge("no refusals", "ok");
    const reported = status.upstreams.flatMap((w) =>
      Object.entries(w.backends || {}).filter(([n]) => n === name).map(([, b]) => [w.pid, b]));
    if (!reported.length) {
      const url = backend.url || (backend.endpoints || []).map((e) => e.url || e).join(", ");
      rows.push(el("tr", { "data-backend": name }, el("th", { scope: "row", text: name }),
        el("td", { text: url || "—", title: url || "" }), el("td", {}, badge("not checked", "")),
        el("td", { text: "—" }), el("td", { text: "—" }), el("td", {}, circuitCell)));
      continue;
    }
    for (const [pid, b] of reported) {
      for (const ep of b.endpoints) {
        const cls = ep.state === "healthy" ? "ok" : ep.state === "ejected" ? "warn" : "bad";
        rows.push(el("tr", { "data-backend": name }, el("th", { scope: "row", text: name }),
          el("td", { text: ep.url || ep.address, title: ep.address || "" }),
          el("td", {}, badge(b.panic ? `${ep.state} (panic)` : ep.state, cls)),
          el("td", { text: String(ep.ejections) }), el("td", { text: String(pid) }),
          el("td", {}, circuitCell.cloneNode(true))));
      }
    }
  }
  const tbody = document.querySelector("#backends-table tbody");
  // Swap the rows in one step and only when something changed (no flicker, no jumps).
  const html = rows.map((r) => r.outerHTML).join("");
  if (tbody.dataset.html !== html) {
    tbody.replaceChildren(...rows);
    tbody.dataset.html = html;
  }
}
