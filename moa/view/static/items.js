// moa view: the items table. The server filters, sorts and pages; the hash holds the query, so a
// filtered list is a link, and the item page steps through the same list.
"use strict";

(() => {
  const { h, api, link, go, fmt, enc } = MOA;

  const LIST_KEYS = ["setup", "outcome", "category", "q", "sort", "order", "offset", "limit"];
  const OUTCOME_LABEL = { all: "All", win: "Wins", loss: "Losses", tie: "Ties", disagree: "Disagree", error: "Errors" };
  const SORT_LABEL = { order: "dataset order", id: "item id", category: "category", delta: "Δ vs baseline", score: "score", cost: "cost", latency: "latency" };

  /** The list's query from a hash's parameters (only the keys the list reads). */
  MOA.listParams = (params) => {
    const out = new URLSearchParams();
    for (const k of LIST_KEYS) if (params.get(k)) out.set(k, params.get(k));
    return out;
  };

  function scoreCell(cell, pairwise, isBase, samples) {
    // the score a failed run counts for: 0, or under a judge 0.5 when the baseline's run failed too
    const said = cell.score === null ? "the run failed" : `a run failed; the item scores ${fmt.num(cell.score, 2)}`;
    // with several samples the item's score is their mean: one failed sample must not hide it
    if (cell.error && (samples <= 1 || cell.score === null)) return h("td", { class: "cell error", title: said }, "failed");
    if (cell.score === null) return h("td", { class: "cell muted" }, "—");
    if (isBase && pairwise) return h("td", { class: "cell muted" }, "—");
    const text = fmt.num(cell.score, 2);
    const delta = cell.delta === null || isBase ? null : h("span", { class: "delta" }, ` ${fmt.signed(cell.delta, 2)}`);
    const failed = cell.error ? h("span", { class: "badge bad" }, "failed") : null;
    const title = [cell.error ? said : "", cell.outcome ? `${cell.outcome} against the baseline` : ""].filter(Boolean).join("; ");
    return h("td", { class: `cell ${cell.outcome || ""}`, title }, text, delta, failed);
  }

  MOA.pages.items = async ({ key, params }) => {
    const q = MOA.listParams(params);
    const d = await api(`/api/e/${enc(key)}/items?${q}`);
    const here = (change) => {
      const next = new URLSearchParams(q);
      for (const [k, v] of Object.entries(change)) {
        if (v === null || v === "" || v === undefined) next.delete(k);
        else next.set(k, String(v));
      }
      if (!("offset" in change)) next.delete("offset");
      return link(["e", key, "items"], next);
    };
    const outcome = q.get("outcome") || "all";
    const sort = q.get("sort") || "order";
    const desc = q.get("order") === "desc";
    const offset = d.offset, limit = d.limit;

    // -- the filter bar
    const setupSelect = h("select", { id: "f-setup", "aria-label": "setup compared with the baseline", onchange: (ev) => go(here({ setup: ev.target.value })) },
      d.setups.filter((s) => s !== d.baseline || d.setups.length === 1).map((s) => h("option", { value: s, selected: s === d.setup }, s)));
    const outcomes = h("div", { class: "seg", role: "group", "aria-label": "outcome" },
      d.outcomes.map((o) => h("a", { href: here({ outcome: o === "all" ? null : o }), class: "seg-btn" + (o === outcome ? " on" : "") + ` o-${o}`, "data-outcome": o }, `${OUTCOME_LABEL[o]} `, h("span", { class: "count" }, fmt.int(d.counts[o])))));
    const catSelect = h("select", { id: "f-category", "aria-label": "category", onchange: (ev) => go(here({ category: ev.target.value })) },
      h("option", { value: "" }, "all categories"), d.categories.map((c) => h("option", { value: c, selected: c === q.get("category") }, c)));
    let timer = null;
    const search = h("input", { id: "f-search", type: "search", placeholder: "search the input ( / )", value: q.get("q") || "", "aria-label": "search the input",
      oninput: (ev) => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          MOA.state.focusSearch = true;
          go(here({ q: ev.target.value }));
        }, 280);
      } });
    const sortSelect = h("select", { id: "f-sort", "aria-label": "sort", onchange: (ev) => go(here({ sort: ev.target.value === "order" ? null : ev.target.value })) },
      d.sorts.map((s) => h("option", { value: s, selected: s === sort }, `sort: ${SORT_LABEL[s]}`)));
    const orderBtn = h("a", { class: "btn", href: here({ order: desc ? null : "desc" }), title: "reverse the order" }, desc ? "↓ descending" : "↑ ascending");
    const bar = h("div", { class: "filters" },
      h("label", null, "compare ", setupSelect, " with ", h("code", null, d.baseline)), outcomes, catSelect, search, sortSelect, orderBtn);

    // -- the table
    const setupHead = (s) => {
      if (s === d.baseline) return h("th", { class: "num" }, s, h("span", { class: "muted" }, " (baseline)"));
      const active = sort === "score" && s === d.setup;
      return h("th", { class: "num" + (s === d.setup ? " compared" : "") }, h("a", { href: here({ setup: s, sort: "score", order: active && !desc ? "desc" : null }), title: "sort by this setup's score" }, s, active ? (desc ? " ↓" : " ↑") : ""));
    };
    // under a pairwise judge the baseline has no score of its own: each setup's is against it
    const shown = (s) => !(d.pairwise && s === d.baseline);
    const rows = d.rows.map((r, i) => {
      const href = link(["e", key, "item", r.id], q);
      const tr = h("tr", { class: "row", "data-id": r.id, "data-index": i, tabindex: -1 },
        h("td", { class: "num muted" }, fmt.int(offset + i + 1)),
        h("td", null, h("a", { href, class: "item-link" }, r.id)),
        h("td", { class: "muted" }, r.category || ""),
        h("td", { class: "preview" }, r.preview),
        r.cells.filter((c) => shown(c.setup)).map((c) => scoreCell(c, d.pairwise, c.setup === d.baseline, d.samples)),
        h("td", null, r.disagree ? h("span", { class: "badge warn", title: "the setups do not all score this item the same" }, "≠") : ""));
      tr.addEventListener("click", (ev) => {
        if (!(ev.target instanceof HTMLAnchorElement)) go(href);
      });
      return tr;
    });
    const head = h("tr", null, h("th", { class: "num" }, "#"), h("th", null, "item"), h("th", null, "category"), h("th", null, "input"), d.setups.filter(shown).map(setupHead), h("th", null, ""));
    const tableEl = h("table", { class: "grid items" }, h("thead", null, head), h("tbody", null, rows));
    const last = Math.min(offset + limit, d.total);
    const pageSize = h("select", { "aria-label": "items per page", onchange: (ev) => go(here({ limit: ev.target.value, offset: 0 })) }, [25, 50, 100, 200].map((n) => h("option", { value: n, selected: n === limit }, `${n} per page`)));
    const prevHref = offset > 0 ? here({ offset: Math.max(0, offset - limit) }) : null;
    const nextHref = offset + limit < d.total ? here({ offset: offset + limit }) : null;
    const pager = h("div", { class: "pager" },
      h("span", { id: "showing" }, d.total ? `${fmt.int(offset + 1)}–${fmt.int(last)} of ${fmt.int(d.total)}` : "no item matches"),
      prevHref ? h("a", { class: "btn", href: prevHref, id: "prev-page" }, "‹ previous") : h("span", { class: "btn off" }, "‹ previous"),
      nextHref ? h("a", { class: "btn", href: nextHref, id: "next-page" }, "next ›") : h("span", { class: "btn off" }, "next ›"),
      pageSize);
    const what = d.pairwise
      ? ["Scores are the judge's against ", d.baseline, " (0.5 = a tie); the number after is the distance from a tie."]
      : ["The number after a score is the difference from ", d.baseline, "'s score on the item."];
    const node = h("div", { class: "items-page" }, h("h1", null, "Items"), bar, h("p", { class: "muted small" }, what), d.rows.length ? tableEl : h("p", { class: "empty" }, "No item matches these filters."), pager);

    let sel = -1;
    const select = (i) => {
      if (!rows.length) return;
      sel = Math.max(0, Math.min(rows.length - 1, i));
      rows.forEach((r, k) => r.classList.toggle("selected", k === sel));
      rows[sel].scrollIntoView({ block: "nearest" });
    };
    const open = () => sel >= 0 && go(link(["e", key, "item", d.rows[sel].id], q));
    const keys = {
      j: () => select(sel + 1), ArrowDown: () => select(sel + 1),
      k: () => select(sel - 1), ArrowUp: () => select(sel - 1),
      Enter: open, o: open,
      ArrowRight: () => nextHref && go(nextHref), l: () => nextHref && go(nextHref),
      ArrowLeft: () => prevHref && go(prevHref), h: () => prevHref && go(prevHref),
      "/": () => search.focus(),
    };
    return {
      title: "items",
      node,
      keys,
      help: [["j / ↓, k / ↑", "next / previous row"], ["Enter or o", "open the selected item"], ["→ / l, ← / h", "next / previous page"], ["/", "search the input"]],
      mounted() {
        if (MOA.state.focusSearch) {
          MOA.state.focusSearch = false;
          search.focus();
          search.setSelectionRange(search.value.length, search.value.length);
        }
      },
    };
  };
})();
