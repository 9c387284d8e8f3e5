// moa view: the list of experiments and an experiment's overview (headline table, Pareto chart,
// judge and people, categories, costs per node and per model).
"use strict";

(() => {
  const { h, api, link, fmt, table, section, enc } = MOA;

  MOA.pages.home = async ({ cfg }) => {
    const rows = cfg.experiments.map((e) => [
      h("td", null, h("a", { href: link(["e", e.key, cfg.mode === "vote" ? "vote" : "overview"]) }, e.name || e.key)),
      e.error ? h("td", { class: "bad" }, e.error) : fmt.int(e.n_items),
      (e.setups || []).join(", "),
      e.evaluator || "—",
      h("td", { class: "muted" }, e.folder),
    ]);
    return {
      title: "experiments",
      node: h("div", null, h("h1", null, "Experiments"), section(`${cfg.experiments.length} experiment folders`, table(["Experiment", "items", "setups", "evaluator", "folder"], rows, { class: "grid" }))),
    };
  };

  function headline(summary, key) {
    const tokens = summary.cost_basis === "tokens";
    const headers = ["Setup", tokens ? "tokens × single" : "cost × single", "quality Δ [95% CI]", "latency ×", tokens ? "tokens per correct" : "$ per correct", "× single", "quality", "p (Holm)"];
    const rows = summary.setups.map((s) => {
      let delta = h("td", { class: "muted" }, "baseline");
      if (!s.is_baseline) {
        const ci = s.delta_ci95;
        const cls = ci && ci[0] > 0 ? "good" : ci && ci[1] < 0 ? "bad" : "";
        delta = h("td", { class: cls }, s.delta_vs_baseline === null ? "—" : `${fmt.signed(s.delta_vs_baseline)} ${fmt.ci(ci)}`);
      }
      const p = s.p_value === null ? "—" : `${fmt.p(s.p_value)}${s.p_value_holm !== null ? ` (${fmt.p(s.p_value_holm)})` : ""}`;
      return [
        h("td", null, h("a", { href: link(["e", key, "items"], s.is_baseline ? {} : { setup: s.name }) }, s.name), s.pareto ? h("span", { class: "star", title: "Pareto-optimal: nothing else costs no more and scores no less" }, " ★") : null),
        fmt.x(tokens ? s.token_ratio : s.cost_ratio),
        delta,
        fmt.x(s.latency_ratio),
        tokens ? fmt.int(s.tokens_per_correct) : fmt.usd(s.cost_per_correct_usd),
        fmt.x(tokens ? s.tokens_per_correct_ratio : s.cost_per_correct_ratio),
        fmt.num(s.quality),
        p,
      ];
    });
    return table(headers, rows, { class: "grid headline" });
  }

  function judgeAndPeople(summary, votes) {
    const out = [];
    const judged = summary.setups.some((s) => s.judge || s.bt_rating !== null);
    if (judged) {
      const rows = summary.setups.map((s) => {
        const j = s.judge;
        const bt = s.bt_rating === null ? "—" : `${fmt.num(s.bt_rating, 0)} ${fmt.range(s.bt_ci95)}${s.is_baseline ? " (anchor)" : ""}`;
        if (!j) return [s.name, "—", "—", "—", s.is_baseline ? "0.500 (baseline)" : "—", bt];
        return [s.name, String(j.wins), String(j.ties), String(j.losses), `${fmt.num(j.score)} ${fmt.range(j.score_ci95, 3)}`, bt];
      });
      out.push(section(["Judge against ", summary.baseline], table(["Setup", "wins", "ties", "losses", "judge score [95% CI]", "BT rating [95% CI]"], rows, { class: "grid" })));
    }
    if (votes && votes.votes) {
      const rows = summary.setups
        .filter((s) => votes.setups[s.name])
        .map((s) => {
          const v = votes.setups[s.name];
          const bt = v.bt_rating === null ? "—" : `${fmt.num(v.bt_rating, 0)} ${fmt.range(v.bt_ci95)}${s.is_baseline ? " (anchor)" : ""}`;
          const agree = s.is_baseline || v.agreement === null ? "—" : `${fmt.pct(v.agreement)} (n=${v.agreement_n})`;
          return [s.name, String(v.votes), String(v.wins), String(v.ties), String(v.losses), bt, agree, v.kappa === null || s.is_baseline ? "—" : fmt.num(v.kappa, 2)];
        });
      out.push(
        section(
          `Human votes: ${votes.votes} by ${votes.voters} voter(s)`,
          table(["Setup", "votes", "wins", "ties", "losses", "people's BT [95% CI]", `agreement with ${judged ? "the judge" : "the evaluator"}`, "Cohen's κ"], rows, { class: "grid" }),
          h("p", { class: "muted" }, "Live from the store; the report shows them from its last writing (`moa report DIR`)."),
        ),
      );
    }
    return out;
  }

  function categories(summary) {
    const cats = [...new Set(summary.setups.flatMap((s) => Object.keys(s.categories || {})))].sort();
    if (!cats.length) return null;
    const rows = cats.map((c) => [
      c,
      ...summary.setups.map((s) => {
        const cs = (s.categories || {})[c];
        if (!cs || cs.quality === null) return "—";
        if (s.is_baseline || cs.delta_vs_baseline === null) return `${fmt.num(cs.quality)} (n=${cs.n})`;
        const ci = cs.delta_ci95;
        const cls = ci && ci[0] > 0 ? "good" : ci && ci[1] < 0 ? "bad" : "";
        return h("td", { class: cls }, `${fmt.num(cs.quality)} · Δ ${fmt.signed(cs.delta_vs_baseline)} ${fmt.ci(ci)} · n=${cs.n}`);
      }),
    ]);
    return section("Per category", table(["Category", ...summary.setups.map((s) => s.name)], rows, { class: "grid" }));
  }

  function share(v, total) {
    const p = total > 0 ? v / total : 0;
    const bar = h("span", { class: "bar" });
    bar.style.width = `${Math.round(p * 60)}px`;
    return h("td", { class: "share" }, bar, ` ${fmt.pct(p)}`);
  }

  function costs(summary, all) {
    const cards = summary.setups.map((s) => {
      const c = all[s.name];
      if (!c) return null;
      const total = c.nodes.reduce((t, r) => t + r.cost_usd, 0);
      const totalTokens = c.nodes.reduce((t, r) => t + r.prompt_tokens + r.completion_tokens, 0);
      const byUsd = total > 0;
      const weight = (r) => (byUsd ? r.cost_usd : r.prompt_tokens + r.completion_tokens);
      const denom = byUsd ? total : totalTokens;
      const nodeRows = c.nodes.map((r) => [h("td", null, h("code", null, r.name)), h("td", null, h("code", null, r.models.join(", "))), fmt.int(r.calls), fmt.usd(r.cost_usd), share(weight(r), denom), fmt.int(r.prompt_tokens), fmt.int(r.completion_tokens), fmt.sec(r.mean_latency_s), r.errors ? h("td", { class: "bad" }, String(r.errors)) : "0"]);
      const modelRows = c.models.map((r) => [h("td", null, h("code", null, r.name)), fmt.int(r.calls), fmt.usd(r.cost_usd), share(weight(r), denom), fmt.int(r.prompt_tokens), fmt.int(r.completion_tokens)]);
      const judge = c.judge.length
        ? [h("h4", null, "Judge calls on its answers (not in its cost)"), table(["Model", "calls", "USD", "tokens in", "tokens out"], c.judge.map((r) => [h("td", null, h("code", null, r.model)), fmt.int(r.calls), fmt.usd(r.cost_usd), fmt.int(r.prompt_tokens), fmt.int(r.completion_tokens)]), { class: "grid small" })]
        : [];
      return h(
        "div",
        { class: "cost-card", "data-setup": s.name },
        h("h3", null, s.name, s.is_baseline ? h("span", { class: "badge" }, "baseline") : null, h("span", { class: "muted" }, ` ${fmt.usd(total)} · ${fmt.int(totalTokens)} tokens · ${fmt.num(s.calls_per_item, 2)} calls per item`)),
        h("div", { class: "cost-tables" },
          h("div", null, h("h4", null, "By node"),
            table(["Node", "model", "calls", "USD", byUsd ? "share of $" : "share of tokens", "tokens in", "tokens out", "mean latency", "failed"], nodeRows, { class: "grid small" })),
          h("div", null, h("h4", null, "By model"),
            table(["Model", "calls", "USD", byUsd ? "share of $" : "share of tokens", "tokens in", "tokens out"], modelRows, { class: "grid small" })),
          judge.length ? h("div", null, ...judge) : null),
      );
    });
    return section("Costs per node and per model", h("div", { class: "cost-grid" }, cards));
  }

  MOA.pages.overview = async ({ key }) => {
    const d = await api(`/api/e/${enc(key)}/overview`);
    const s = d.summary;
    const notes = d.notes.length ? section("Notes", h("ul", null, d.notes.map((n) => h("li", null, n)))) : null;
    const chart = section(
      "Cost and quality",
      h("p", { class: "muted" }, `One point per setup (bars: quality's 95% CI). ★ and the line: the Pareto front. Hover or focus a point for its figures. Dashed: the baseline's cost.`),
      MOA.charts.pareto(s),
    );
    const node = h(
      "div",
      { class: "overview" },
      h("h1", null, d.experiment),
      h("p", { class: "sub" }, `${fmt.int(s.n_items)} items · evaluator `, h("code", null, s.evaluator.name || "?"), ` · baseline `, h("code", null, s.baseline), d.samples > 1 ? ` · ${d.samples} samples per item` : "", ` · ${d.summary_source}`, s.complete ? "" : h("span", { class: "bad" }, " · incomplete")),
      section("Headline", headline(s, key), h("p", { class: "muted" }, `Ratios are per item against the baseline${s.cost_basis === "tokens" ? "; the baseline cost $0, so cost is counted in tokens" : ""}. ★ Pareto-optimal. Scoring: ${s.scoring_rule}.`)),
      notes,
      chart,
      ...judgeAndPeople(s, d.votes),
      categories(s),
      costs(s, d.costs),
    );
    return {
      title: d.experiment,
      node,
    };
  };
})();
