// moa view: the shared pieces. Every page builds DOM nodes with h()/svg(): text always goes in as a
// text node, never as HTML, because answers, prompts and dataset rows are model or user output.
"use strict";

const MOA = (() => {
  const SVGNS = "http://www.w3.org/2000/svg";

  function setAttrs(el, attrs) {
    if (!attrs) return;
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
      else if (k === "dataset") Object.assign(el.dataset, v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }

  // Bidi controls (U+202E and kin) in a name or an answer would reorder the words after it on the
  // line, e.g. swap "A was x, B was y" as read; text holding one goes in a <bdi>, which keeps them in.
  const BIDI = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/;

  function text(parent, s) {
    const node = document.createTextNode(s);
    if (!BIDI.test(s) || parent.namespaceURI === SVGNS) return node; // an SVG <text> is its own paragraph
    const iso = document.createElement("bdi");
    iso.append(node);
    return iso;
  }

  function append(el, kids) {
    for (const k of kids.flat(Infinity)) {
      if (k === null || k === undefined || k === false) continue;
      el.append(k instanceof Node ? k : text(el, String(k)));
    }
  }

  /** An HTML element; strings among the children become text nodes. */
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    append(el, kids);
    return el;
  }

  /** An SVG element, the same way. */
  function svg(tag, attrs, ...kids) {
    const el = document.createElementNS(SVGNS, tag);
    setAttrs(el, attrs);
    append(el, kids);
    return el;
  }

  class ApiError extends Error {
    constructor(message, status) {
      super(message);
      this.status = status;
    }
  }

  async function api(path, options) {
    const r = await fetch(path, options);
    let body;
    try {
      body = await r.json();
    } catch {
      body = { error: `HTTP ${r.status} from ${path}` };
    }
    if (!r.ok) throw new ApiError(body.error || `HTTP ${r.status}`, r.status);
    // numbers the server could not send (not finite in the store): the page says where they were
    if (Array.isArray(body.warnings)) state.warnings.push(...body.warnings);
    return body;
  }

  function post(path, data) {
    return api(path, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify(data || {}),
    });
  }

  const enc = encodeURIComponent;

  /** A hash link: path parts are encoded one by one, so any item id is safe in it. */
  function link(parts, params) {
    const qs = params ? new URLSearchParams(params).toString() : "";
    return "#/" + parts.map(enc).join("/") + (qs ? "?" + qs : "");
  }

  function go(href) {
    if (location.hash === href) route();
    else location.hash = href;
  }

  // -- formats ---------------------------------------------------------------------------------
  // Digits as report.md prints them (Python's format): a value exactly halfway rounds to the even
  // digit, where toFixed rounds up, so 5 of 16 (0.3125) read 0.313 here and 0.312 in the report.

  /** v with d decimals, Python's way. A double is halfway at d decimals only when v·2^(d+1) is an
   * odd integer (the product is exact); toFixed then went away from zero. */
  function fixed(v, d) {
    const s = v.toFixed(d);
    const twice = Math.abs(v) * 2 ** (d + 1);
    if (!Number.isInteger(twice) || twice % 2 !== 1) return s;
    const low = Math.floor(Math.abs(v) * 10 ** d);
    return (v < 0 ? "-" : "") + ((low % 2 === 0 ? low : low + 1) / 10 ** d).toFixed(d);
  }

  /** Python's format(v, `.${p}g`): p significant digits, trailing zeros dropped, an exponent of two
   * digits or more below 1e-4 (a p-value of 1e-5 reads 1e-05, as in the report). */
  function general(v, p) {
    if (v === 0) return "0";
    let exp = Math.floor(Math.log10(Math.abs(v)));
    let d = p - 1 - exp;
    if (d > 100) return v.toExponential(p - 1).replace(/\.?0+e/, "e").replace(/e([+-])(\d)$/, "e$10$2");
    let s = fixed(v, Math.max(d, 0));
    if (Math.abs(Number(s)) >= 10 ** (exp + 1)) {
      exp += 1; // rounding carried into the next power of ten (9.996 at three digits is 10.0)
      d -= 1;
      s = fixed(v, Math.max(d, 0));
    }
    if (exp < -4 || exp >= p) {
      const digits = s.replace(/[-.]/g, "").replace(/^0+/, "").slice(0, p).replace(/0+$/, "") || "0";
      const mant = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
      const e = Math.abs(exp) < 10 ? `0${Math.abs(exp)}` : String(Math.abs(exp));
      return `${v < 0 ? "-" : ""}${mant}e${exp < 0 ? "-" : "+"}${e}`;
    }
    return s.includes(".") ? s.replace(/\.?0+$/, "") : s;
  }

  const DASH = "—";
  const fmt = {
    fixed,
    x: (v) => (v === null || v === undefined ? DASH : `${fixed(v, 2)}×`),
    num: (v, d = 3) => (v === null || v === undefined ? DASH : fixed(v, d)),
    signed: (v, d = 3) => (v === null || v === undefined ? DASH : (v >= 0 ? "+" : "−") + fixed(Math.abs(v), d)),
    // tokens per correct answer can sit halfway (2,469 tokens over 2 answers): Python's rounding too
    int: (v) => (v === null || v === undefined ? DASH : Number(fixed(v, 0)).toLocaleString("en-US")),
    // a p-value as the report prints it: 0 is an underflow below the smallest double, not a certainty
    p: (v) => (v === null || v === undefined ? DASH : v > 0 ? general(v, 3) : "<1e-300"),
    usd: (v) => {
      if (v === null || v === undefined) return DASH;
      if (v === 0) return "$0";
      if (v >= 0.0001) return `$${fixed(v, 4)}`;
      const [m, e] = v.toExponential(2).split("e");
      return `$${m}e${e[0]}${e.slice(1).padStart(2, "0")}`;
    },
    sec: (v) => {
      if (v === null || v === undefined) return DASH;
      if (v < 0.001) return `${(v * 1e6).toFixed(0)} µs`;
      if (v < 1) return `${(v * 1000).toFixed(1)} ms`;
      return `${v.toFixed(2)} s`;
    },
    pct: (v) => (v === null || v === undefined ? DASH : `${(100 * v).toFixed(0)}%`),
    ci: (ci, d = 3) => (ci ? `[${fmt.signed(ci[0], d)}, ${fmt.signed(ci[1], d)}]` : ""),
    range: (ci, d = 0) => (ci ? `[${fixed(ci[0], d)}, ${fixed(ci[1], d)}]` : ""),
  };

  /** A table from headers and rows of cells (strings or nodes). */
  function table(headers, rows, attrs) {
    return h(
      "table",
      attrs || null,
      h("thead", null, h("tr", null, headers.map((c) => (c instanceof Node && c.tagName === "TH" ? c : h("th", null, c))))),
      h(
        "tbody",
        null,
        rows.map((r) => (r instanceof Node ? r : h("tr", null, r.map((c) => (c instanceof Node && c.tagName === "TD" ? c : h("td", null, c)))))),
      ),
    );
  }

  function section(title, ...kids) {
    return h("section", { class: "card" }, h("h2", null, title), ...kids);
  }

  /** A text block for untrusted text: kept as typed, wrapped, scrollable when long. */
  function pre(text, cls) {
    return h("pre", { class: "text " + (cls || "") }, text === null || text === undefined ? "" : String(text));
  }

  function errorBox(message) {
    return h("div", { class: "error-box", role: "alert" }, message);
  }

  // -- pages, keys, routing ---------------------------------------------------------------------
  const pages = {};
  const state = { config: null, lastReveal: null, focusSearch: false, warnings: [] };
  let keys = {};
  let helpLines = [];
  let renderCount = 0;

  const GLOBAL_HELP = [["?", "show or hide this help"], ["g o / g i", "overview / items"]];

  function showHelp(toggle) {
    const box = document.getElementById("help");
    if (toggle) box.hidden = !box.hidden;
    box.replaceChildren(
      h("h2", null, "Keyboard"),
      h("dl", null, [...helpLines, ...GLOBAL_HELP].map(([k, what]) => [h("dt", null, h("kbd", null, k)), h("dd", null, what)])),
      h("p", { class: "muted" }, "Esc closes this box."),
    );
  }

  let pendingG = false;
  document.addEventListener("keydown", (ev) => {
    if (ev.ctrlKey || ev.metaKey || ev.altKey) return;
    const t = ev.target;
    if (t instanceof HTMLElement && (t.matches("input, textarea, select") || t.isContentEditable)) {
      if (ev.key === "Escape") t.blur();
      return;
    }
    if (ev.key === "?") {
      showHelp(true);
      ev.preventDefault();
      return;
    }
    if (ev.key === "Escape" && !document.getElementById("help").hidden) {
      document.getElementById("help").hidden = true;
      ev.preventDefault();
      return;
    }
    if (pendingG) {
      pendingG = false;
      const p = parse();
      if (p.parts[0] === "e" && p.parts[1] && (ev.key === "o" || ev.key === "i")) {
        go(link(["e", p.parts[1], ev.key === "o" ? "overview" : "items"]));
        ev.preventDefault();
        return;
      }
    }
    const f = keys[ev.key];
    if (f) {
      ev.preventDefault();
      f(ev);
      return;
    }
    if (ev.key === "g") pendingG = true;
  });

  function parse() {
    const raw = location.hash.replace(/^#/, "") || "/";
    const q = raw.indexOf("?");
    const path = q < 0 ? raw : raw.slice(0, q);
    const params = new URLSearchParams(q < 0 ? "" : raw.slice(q + 1));
    const parts = path.split("/").filter(Boolean).map((p) => {
      try {
        return decodeURIComponent(p);
      } catch {
        return p;
      }
    });
    return { parts, params };
  }

  function nav(cfg, key, page) {
    const el = document.getElementById("nav");
    const items = [];
    if (cfg.experiments.length > 1) items.push(h("a", { href: "#/", class: page === "home" ? "on" : null }, "Experiments"));
    if (key) {
      const name = (cfg.experiments.find((e) => e.key === key) || {}).name || key;
      items.push(h("span", { class: "exp-name", title: key }, name));
      items.push(h("a", { href: link(["e", key, "overview"]), class: page === "overview" ? "on" : null }, "Overview"));
      items.push(h("a", { href: link(["e", key, "items"]), class: page === "items" || page === "item" ? "on" : null }, "Items"));
      if (cfg.mode === "vote") items.push(h("a", { href: link(["e", key, "vote"]), class: page === "vote" ? "on" : null }, "Vote"));
    }
    el.replaceChildren(...items);
    document.getElementById("who").textContent = cfg.mode === "vote" ? `voting as ${cfg.voter}` : "";
  }

  async function route() {
    const mine = ++renderCount;
    const app = document.getElementById("app");
    const { parts, params } = parse();
    // the list of experiments is read again on the home page: a run started since joins it
    if (!state.config || !parts.length) state.config = await api("/api/config");
    const cfg = state.config;
    let page = "home";
    let key = null;
    if (parts[0] === "e" && parts[1]) {
      key = parts[1];
      page = parts[2] || "overview";
    }
    if (page === "home" && cfg.experiments.length === 1) {
      // one experiment: its first page (voting when the viewer was started to vote)
      const only = cfg.experiments[0].key;
      location.replace(link(["e", only, cfg.mode === "vote" ? "vote" : "overview"]));
      return;
    }
    nav(cfg, key, page);
    const render = pages[page];
    state.warnings = [];
    let out;
    try {
      if (!render) throw new ApiError(`no page \`${page}\``, 404);
      out = await render({ key, parts, params, cfg });
    } catch (e) {
      out = { node: h("div", null, errorBox(e.message)), title: "error" };
    }
    if (mine !== renderCount) return; // a newer navigation won
    keys = out.keys || {};
    helpLines = out.help || [];
    document.title = `${out.title || "moa view"} — moa view`;
    app.replaceChildren(...state.warnings.map((w) => h("div", { class: "error-box warning", role: "alert" }, w)), out.node);
    if (!document.getElementById("help").hidden) showHelp(false);
    if (out.mounted) out.mounted();
    app.dataset.page = page;
    app.dataset.ready = String(mine);
  }

  return { h, svg, api, post, link, go, fmt, table, section, pre, errorBox, pages, state, route, parse, enc, showHelp };
})();
