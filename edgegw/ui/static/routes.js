// Routes: each route as a pipeline, match -> filters in order (with on_error) -> targets.
import { el } from "./api.js";

let drawn = null;

export function init() {}

function stage(kind, cls, ...body) {
  return el("li", { class: `stage ${cls}` }, el("span", { class: "kind", text: kind }), ...body);
}

function matchText(match) {
  const parts = [];
  for (const key of ["prefix", "path", "regex"]) if (match[key]) parts.push(`${key} ${match[key]}`);
  if (match.methods && match.methods.length) parts.push(match.methods.join(" "));
  if (match.hosts && match.hosts.length) parts.push(`host ${match.hosts.join(", ")}`);
  for (const key of Object.keys(match)) {
    if (!["prefix", "path", "regex", "methods", "hosts"].includes(key) && match[key] !== null) {
      const v = match[key];
      if (v && (typeof v !== "object" || Object.keys(v).length)) parts.push(`${key} ${JSON.stringify(v)}`);
    }
  }
  return parts.join(" · ") || "any request";
}

function targets(route) {
  if (route.aggregate) {
    const items = route.aggregate.backends.map((b) =>
      el("li", { text: `${b.group || b.backend}: ${b.backend} ${b.path || ""}${b.required === false ? " (optional)" : ""}` }));
    return stage("aggregate", "target", el("ul", {}, ...items));
  }
  if (route.split) {
    const items = Object.entries(route.split.backends || {}).map(([value, backend]) =>
      el("li", { text: `${value} → ${backend}` }));
    if (route.split.default) items.push(el("li", { text: `default → ${route.split.default}` }));
    return stage(`split on ${route.split.header || route.split.cookie || ""}`, "target", el("ul", {}, ...items));
  }
  const strip = route.strip_prefix ? el("span", { class: "muted small", text: " prefix stripped" }) : null;
  return stage("backend", "target", el("strong", { text: route.backend || "—" }), strip);
}

export async function refresh(ctx) {
  if (drawn === ctx.config) return; // redrawn only when the config changes
  drawn = ctx.config;
  const list = document.getElementById("route-list");
  list.replaceChildren();
  for (const route of ctx.config.routes) {
    const steps = [stage("match", "match", el("span", { text: matchText(route.match || {}) }))];
    for (const name of route.filters || []) {
      const spec = (ctx.config.filters || {})[name] || {};
      steps.push(stage("filter", "filter", el("strong", { text: name }),
        el("span", { class: "muted small", text: ` on_error: ${spec.on_error || "fail_closed"}` })));
    }
    steps.push(targets(route));
    const pipeline = el("ol", { class: "pipeline", "aria-label": `pipeline of route ${route.name}` });
    steps.forEach((s, i) => {
      if (i) pipeline.append(el("li", { class: "arrow", "aria-hidden": "true", text: "→" }));
      pipeline.append(s);
    });
    list.append(el("li", { "data-route": route.name }, el("h3", { text: route.name }), pipeline));
  }
}
