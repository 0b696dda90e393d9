// Sparklines as inline SVG of a fixed size: updating one never moves the layout.
const NS = "http://www.w3.org/2000/svg";
const W = 120, H = 28;

export function sparkline(label) {
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("class", "spark");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const base = document.createElementNS(NS, "line");
  for (const [k, v] of Object.entries({ x1: 0, y1: H - 1, x2: W, y2: H - 1 })) base.setAttribute(k, v);
  const line = document.createElementNS(NS, "polyline");
  svg.append(base, line);
  return svg;
}

// values: numbers or null (no data in that window), oldest first; the last 60 are drawn.
export function draw(svg, values) {
  const shown = values.slice(-60);
  const max = Math.max(0, ...shown.filter((v) => v !== null));
  const step = W / 59;
  const offset = 60 - shown.length;
  const points = shown.map((v, i) => {
    const y = max > 0 && v !== null ? H - 2 - ((H - 4) * v) / max : H - 2;
    return `${((offset + i) * step).toFixed(1)},${y.toFixed(1)}`;
  });
  svg.querySelector("polyline").setAttribute("points", points.join(" "));
}
