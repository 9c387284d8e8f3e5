// moa view: the two drawings, in inline SVG: the cost-quality chart (Pareto front, hover for a
// setup's figures) and a run's topology (nodes in layers, click a node for its calls).
"use strict";

MOA.charts = (() => {
  const { h, svg, fmt } = MOA;

  function niceStep(span, count) {
    const raw = span / Math.max(1, count);
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const norm = raw / mag;
    return (norm <= 1 ? 1 : norm <= 2 ? 2 : norm <= 5 ? 5 : 10) * mag;
  }

  function ticks(lo, hi, count) {
    const step = niceStep(hi - lo || 1, count);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toFixed(10));
    return out;
  }

  /** The tooltip of a chart: a box placed beside the pointer inside the chart's frame. */
  function tooltip(frame) {
    const tip = h("div", { class: "tip", role: "tooltip", hidden: true });
    frame.append(tip);
    return {
      show(lines, x, y) {
        tip.replaceChildren(...lines.map((l, i) => h(i === 0 ? "strong" : "div", null, l)));
        tip.hidden = false;
        const fw = frame.clientWidth;
        tip.style.left = `${Math.min(x + 14, fw - tip.offsetWidth - 4)}px`;
        tip.style.top = `${Math.max(0, y - tip.offsetHeight - 10)}px`;
      },
      hide() {
        tip.hidden = true;
      },
    };
  }

  /** Cost ratio (or token ratio at a $0 baseline) against quality, one point per setup. */
  function pareto(summary) {
    const tokens = summary.cost_basis === "tokens";
    const pts = summary.setups
      .map((s) => ({ s, x: tokens ? s.token_ratio : s.cost_ratio, y: s.quality }))
      .filter((p) => p.x !== null && p.x !== undefined && p.y !== null && p.y !== undefined);
    if (!pts.length) return h("p", { class: "muted" }, "No setup has both a cost ratio and a quality to plot yet.");
    const W = 620, H = 360, L = 58, R = 28, T = 18, B = 48;
    const xmax = Math.max(...pts.map((p) => p.x), 1) * 1.12;
    const ys = pts.flatMap((p) => [p.y, ...(p.s.quality_ci95 || [])]);
    let ylo = Math.min(...ys), yhi = Math.max(...ys);
    const pad = Math.max(0.05, (yhi - ylo) * 0.12);
    ylo -= pad;
    yhi += pad;
    if (Math.min(...ys) >= 0 && Math.max(...ys) <= 1) {
      ylo = Math.max(0, ylo);
      yhi = Math.min(1, yhi);
    }
    const sx = (v) => L + (v / xmax) * (W - L - R);
    const sy = (v) => T + (1 - (v - ylo) / (yhi - ylo || 1)) * (H - T - B);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart", role: "img", "aria-label": "cost against quality, one point per setup" });
    for (const t of ticks(0, xmax, 6)) {
      root.append(svg("line", { x1: sx(t), x2: sx(t), y1: T, y2: H - B, class: "grid" }));
      root.append(svg("text", { x: sx(t), y: H - B + 16, class: "tick", "text-anchor": "middle" }, `${t}×`));
    }
    for (const t of ticks(ylo, yhi, 5)) {
      root.append(svg("line", { x1: L, x2: W - R, y1: sy(t), y2: sy(t), class: "grid" }));
      root.append(svg("text", { x: L - 8, y: sy(t) + 4, class: "tick", "text-anchor": "end" }, t.toFixed(2)));
    }
    root.append(svg("line", { x1: L, x2: W - R, y1: H - B, y2: H - B, class: "axis" }));
    root.append(svg("line", { x1: L, x2: L, y1: T, y2: H - B, class: "axis" }));
    root.append(svg("text", { x: (L + W - R) / 2, y: H - 10, class: "axis-label", "text-anchor": "middle" }, tokens ? "tokens per item × single" : "cost per item × single"));
    root.append(svg("text", { x: 14, y: (T + H - B) / 2, class: "axis-label", "text-anchor": "middle", transform: `rotate(-90 14 ${(T + H - B) / 2})` }, "quality"));
    root.append(svg("line", { x1: sx(1), x2: sx(1), y1: T, y2: H - B, class: "baseline-line" }));
    const front = pts.filter((p) => p.s.pareto).sort((a, b) => a.x - b.x);
    if (front.length > 1) {
      root.append(svg("polyline", { points: front.map((p) => `${sx(p.x)},${sy(p.y)}`).join(" "), class: "front" }));
    }
    const frame = h("div", { class: "chart-frame" }, root);
    const tip = tooltip(frame);
    const placed = [];
    for (const p of pts) {
      const s = p.s;
      const cx = sx(p.x), cy = sy(p.y);
      const g = svg("g", { class: "point" + (s.pareto ? " pareto" : "") + (s.is_baseline ? " base" : ""), tabindex: 0, "data-setup": s.name, role: "button", "aria-label": `${s.name}: quality ${fmt.num(s.quality)}` });
      if (s.quality_ci95) g.append(svg("line", { x1: cx, x2: cx, y1: sy(s.quality_ci95[0]), y2: sy(s.quality_ci95[1]), class: "ci" }));
      g.append(svg("circle", { cx, cy, r: 14, class: "hit" }));
      g.append(svg("circle", { cx, cy, r: 6.5, class: "dot" }));
      // labels step down when they would sit on one already placed
      let ly = cy - 11;
      while (placed.some(([x, y]) => Math.abs(x - cx) < 90 && Math.abs(y - ly) < 14)) ly += 15;
      placed.push([cx, ly]);
      const right = cx < W - 140;
      g.append(svg("text", { x: right ? cx + 10 : cx - 10, y: ly, class: "point-label", "text-anchor": right ? "start" : "end" }, s.name + (s.pareto ? " ★" : "")));
      const lines = [
        [s.name, (s.is_baseline ? " (baseline)" : "") + (s.pareto ? " — Pareto-optimal" : "")],
        `quality ${fmt.num(s.quality)} ${s.quality_ci95 ? fmt.range(s.quality_ci95, 3) : ""}`,
        s.is_baseline ? "the baseline" : `Δ vs baseline ${fmt.signed(s.delta_vs_baseline)} ${fmt.ci(s.delta_ci95)}`,
        tokens ? `tokens × single ${fmt.x(s.token_ratio)} (${fmt.int(s.tokens_per_item)} per item)` : `cost × single ${fmt.x(s.cost_ratio)} (${fmt.usd(s.cost_per_item_usd)} per item)`,
        `latency × ${fmt.x(s.latency_ratio)} (p50 ${fmt.sec(s.latency_p50_s)})`,
        tokens ? `tokens per correct ${fmt.int(s.tokens_per_correct)}` : `$ per correct ${fmt.usd(s.cost_per_correct_usd)} (${fmt.x(s.cost_per_correct_ratio)})`,
        `${s.n} items, ${s.errors} failed runs`,
      ];
      const at = (ev) => {
        const r = frame.getBoundingClientRect();
        if (ev && ev.clientX !== undefined) return [ev.clientX - r.left, ev.clientY - r.top];
        const box = root.getBoundingClientRect();
        return [(cx / W) * box.width, (cy / H) * box.height];
      };
      g.addEventListener("mouseenter", (ev) => tip.show(lines, ...at(ev)));
      g.addEventListener("mousemove", (ev) => tip.show(lines, ...at(ev)));
      g.addEventListener("mouseleave", () => tip.hide());
      g.addEventListener("focus", () => tip.show(lines, ...at(null)));
      g.addEventListener("blur", () => tip.hide());
      root.append(g);
    }
    return frame;
  }

  /** A run's nodes in layers with their edges; onSelect(node) when one is chosen. */
  function topology(graph, calls, onSelect) {
    const NW = 168, NH = 54, GX = 64, GY = 18, PAD = 14;
    const layers = new Map();
    for (const n of graph.nodes) {
      if (!layers.has(n.layer)) layers.set(n.layer, []);
      layers.get(n.layer).push(n);
    }
    const depth = Math.max(0, ...layers.keys()) + 1;
    const tallest = Math.max(1, ...[...layers.values()].map((l) => l.length));
    const W = PAD * 2 + depth * NW + (depth - 1) * GX;
    const H = PAD * 2 + tallest * NH + (tallest - 1) * GY;
    const pos = new Map();
    for (const [layer, nodes] of layers) {
      const top = PAD + ((tallest - nodes.length) * (NH + GY)) / 2;
      nodes.forEach((n, i) => pos.set(n.id, [PAD + layer * (NW + GX), top + i * (NH + GY)]));
    }
    const id = "arrow-" + Math.random().toString(36).slice(2, 8);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: W, height: H, class: "graph", role: "group", "aria-label": "the run's topology" },
      svg("defs", null, svg("marker", { id, viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, svg("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow" }))));
    for (const e of graph.edges) {
      const a = pos.get(e.from), b = pos.get(e.to);
      if (!a || !b) continue;
      const x1 = a[0] + NW, y1 = a[1] + NH / 2, x2 = b[0], y2 = b[1] + NH / 2;
      const mx = (x1 + x2) / 2;
      root.append(svg("path", { d: `M ${x1} ${y1} C ${mx} ${y1}, ${mx} ${y2}, ${x2 - 2} ${y2}`, class: "edge" + (graph.source === "inferred" ? " inferred" : ""), "marker-end": `url(#${id})` }));
    }
    const groups = [];
    for (const n of graph.nodes) {
      const [x, y] = pos.get(n.id);
      const mine = n.calls.map((i) => calls[i]);
      const failed = mine.some((c) => c.error);
      const cost = mine.reduce((t, c) => t + c.cost_usd, 0);
      const lat = mine.reduce((t, c) => t + c.latency_s, 0);
      const model = mine.length ? mine[0].model : "no call (fan-in)";
      const g = svg("g", { class: "node" + (failed ? " failed" : "") + (mine.length ? "" : " nocall") + (n.output ? " output" : ""), tabindex: 0, role: "button", "data-node": n.id, "aria-label": `node ${n.id}` },
        svg("title", null, `${n.id}: ${model}`),
        svg("rect", { x, y, width: NW, height: NH, rx: 8 }),
        svg("text", { x: x + 10, y: y + 20, class: "node-id" }, n.id.length > 20 ? n.id.slice(0, 19) + "…" : n.id),
        svg("text", { x: x + 10, y: y + 36, class: "node-model" }, model.length > 24 ? "…" + model.slice(-23) : model),
        svg("text", { x: x + 10, y: y + 49, class: "node-figs" }, mine.length ? `${fmt.usd(cost)} · ${fmt.sec(lat)}${mine.length > 1 ? ` · ${mine.length} calls` : ""}` : ""),
      );
      const pick = () => {
        groups.forEach((o) => o.classList.toggle("selected", o === g));
        onSelect(n);
      };
      g.addEventListener("click", pick);
      g.addEventListener("keydown", (ev) => {
        if (ev.key === "Enter" || ev.key === " ") {
          ev.preventDefault();
          ev.stopPropagation();
          pick();
        }
      });
      groups.push(g);
      root.append(g);
    }
    return {
      node: h("div", { class: "graph-frame" }, root),
      select(nodeId) {
        const g = groups.find((o) => o.dataset.node === nodeId);
        if (g) g.dispatchEvent(new Event("click"));
      },
    };
  }

  return { pareto, topology };
})();
