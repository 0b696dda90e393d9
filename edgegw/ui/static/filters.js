// Filters: what each worker loaded (sha256, size, when, generation, last error), the
// calls and failures per filter, and a reload button with the result or the rejection.
import { api, ApiError, el, setText, when } from "./api.js";

let wired = false;

export function init(ctx) {
  if (wired) return;
  wired = true;
  document.getElementById("reload").addEventListener("click", () => reload(ctx));
}

async function reload(ctx) {
  const button = document.getElementById("reload");
  const out = document.getElementById("reload-result");
  button.disabled = true;
  out.className = "result";
  setText(out, "Reloading…");
  try {
    const doc = await api("/admin/reload", { method: "POST" });
    const gens = doc.workers.map((w) => w.generation).join(", ");
    out.className = "result good";
    setText(out, `Reloaded (${doc.workers[0] ? doc.workers[0].last_result : "ok"}): generation ${gens}`);
    await ctx.refreshConfig();
  } catch (err) {
    out.className = "result bad";
    const what = err instanceof ApiError && err.status === 422 ? "Rejected, the previous config keeps serving" : "Failed";
    setText(out, `${what}: ${err.message}`);
  } finally {
    button.disabled = false;
    await refresh(ctx);
  }
}

function fillRows(tbody, keyed) {
  // Rows are reused by key, so a refresh never rebuilds (or moves) the table.
  const seen = new Set();
  for (const [key, cells] of keyed) {
    seen.add(key);
    let tr = tbody.querySelector(`tr[data-key="${CSS.escape(key)}"]`);
    if (!tr) {
      tr = el("tr", { "data-key": key });
      cells.forEach((_, i) => tr.append(el(i ? "td" : "th", i ? { class: `c${i}` } : { scope: "row" })));
      tbody.append(tr);
    }
    cells.forEach((cell, i) => {
      const td = tr.children[i];
      const text = typeof cell === "object" ? cell.text : cell;
      setText(td, text);
      if (typeof cell === "object") {
        td.title = cell.title || "";
        td.className = cell.class || "";
      }
    });
  }
  for (const tr of [...tbody.children]) if (!seen.has(tr.dataset.key)) tr.remove();
}

export async function refresh(ctx) {
  const [status, live] = await Promise.all([api("/admin/status"), api("/admin/live")]);
  fillRows(document.querySelector("#workers-table tbody"), status.workers.map((w) => [
    String(w.pid),
    [String(w.pid), { text: String(w.generation), class: "generation" }, when(w.loaded_at),
      { text: w.last_result, class: w.last_result === "error" ? "bad-text" : "" },
      { text: w.last_error || "—", title: w.last_error || "", class: "wrap last-error" }],
  ]));
  const worker = status.workers[0] || { filters: {} };
  const specs = ctx.config.filters || {};
  const names = [...new Set([...Object.keys(specs), ...Object.keys(worker.filters)])];
  fillRows(document.querySelector("#filters-table tbody"), names.map((name) => {
    const f = worker.filters[name] || {};
    const spec = specs[name] || {};
    const calls = live.filter_calls[name] || 0;
    const errors = status.workers.map((w) => (w.filters[name] || {}).last_error).filter(Boolean);
    return [name, [
      name, { text: spec.wasm || "", title: spec.wasm || "" },
      { text: f.sha256 ? `${f.sha256.slice(0, 12)}…` : "—", title: f.sha256 || "" },
      f.size ? `${(f.size / 1024).toFixed(1)} KiB` : "—", when(f.loaded_at), spec.on_error || "",
      String(calls), String(live.filter_failures[name] || 0),
      { text: errors[0] || "—", title: errors[0] || "", class: "wrap last-error" },
    ]];
  }));
}
