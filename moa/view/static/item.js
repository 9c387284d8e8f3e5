// moa view: one item. Its input and target, every setup's answer beside the baseline's with score and
// reason, each run's topology with every node's prompt, reply and account, and the judge's verdicts.
"use strict";

(() => {
  const { h, api, link, go, fmt, pre, section, table, enc } = MOA;
  const plural = (n, word) => `${fmt.int(n)} ${word}${n === 1 ? "" : "s"}`;

  function input(item) {
    const turns = item.turns && item.turns.length > 1 ? item.turns : null;
    const parts = [];
    if (turns) {
      parts.push(h("ol", { class: "turns" }, turns.map((t, i) => h("li", null, h("div", { class: "label" }, `User, turn ${i + 1}`), pre(t, "input")))));
    } else {
      parts.push(pre(item.input, "input"));
    }
    const ref = item.target ?? (item.meta && item.meta.reference);
    // a QA item's every accepted answer (NQ-open, TriviaQA, SQuAD): any of them scores
    const accepted = item.meta && Array.isArray(item.meta.answers) && item.meta.answers.length > 1 ? item.meta.answers : null;
    if (accepted) parts.push(h("div", { class: "label" }, "Accepted answers"), pre(accepted.join("\n"), "target"));
    else if (ref !== undefined && ref !== null) parts.push(h("div", { class: "label" }, "Target"), pre(Array.isArray(ref) ? ref.join("\n\n") : ref, "target"));
    if (item.test || (item.tests && item.tests.length)) {
      parts.push(h("details", null, h("summary", null, "Tests"), pre(item.test || item.tests.join("\n"), "code")));
    }
    return parts;
  }

  /** A run's score as the summary and the items list count it: under a judge the stored one, a
   * failed run's too (a tie, 0.5, when the baseline's run failed as well); otherwise 0 for a failed
   * run. null while unscored. */
  function scoreOf(run, d) {
    if (!run) return null;
    const v = run.score ? run.score.value : null;
    return run.error && !d.pairwise ? 0 : v;
  }

  function outcomeOf(entry, d) {
    const run = entry.run;
    if (!run || entry.is_baseline) return null;
    const v = scoreOf(run, d);
    if (v === null) return null;
    let delta;
    if (d.pairwise) delta = v - 0.5;
    else {
      const base = d.runs.find((e) => e.is_baseline);
      const bv = base ? scoreOf(base.run, d) : null;
      if (bv === null) return null;
      delta = v - bv;
    }
    return delta > 1e-9 ? "win" : delta < -1e-9 ? "loss" : "tie";
  }

  function answerCard(entry, d) {
    const run = entry.run;
    const head = h("h3", null, entry.setup, entry.is_baseline ? h("span", { class: "badge" }, "baseline") : null);
    if (!run) return h("div", { class: "answer-card missing", "data-setup": entry.setup }, head, h("p", { class: "muted" }, "Not run (yet) on this item."));
    const out = outcomeOf(entry, d);
    const score = scoreOf(run, d);
    const scoreLine = h("div", { class: "score-line" },
      h("span", { class: `score ${out || ""}` }, score === null ? "unscored" : fmt.num(score, 3)),
      out ? h("span", { class: `outcome ${out}` }, { win: "better than the baseline", loss: "worse than the baseline", tie: "same as the baseline" }[out]) : null,
      run.score && run.score.turn_scores ? h("span", { class: "muted" }, ` turns: ${run.score.turn_scores.map((v) => fmt.num(v, 2)).join(" · ")}`) : null);
    const reasonLabel = d.code ? "Execution result" : d.pairwise ? "Judge" : "Reason";
    const reason = run.score && run.score.detail ? [h("div", { class: "label" }, reasonLabel), pre(run.score.detail, "detail")] : [];
    const answer = run.turns && run.turns.length > 1
      ? run.turns.map((t, i) => [h("div", { class: "label" }, `Answer, turn ${i + 1}`), pre(t, "answer")])
      : [h("div", { class: "label" }, "Answer"), run.answer === null ? h("p", { class: "muted" }, "No answer: the run failed.") : pre(run.answer, d.code ? "answer code" : "answer")];
    return h("div", { class: "answer-card" + (entry.is_baseline ? " base" : ""), "data-setup": entry.setup },
      head,
      scoreLine,
      run.error ? h("div", { class: "error-box" }, run.error) : null,
      ...reason,
      ...answer,
      // an attempt that reached the provider with no usage back may be billed up to its worst case
      h("div", { class: "metrics" }, `${fmt.usd(run.cost_usd)}${run.cost_usd_max > run.cost_usd ? ` (known; up to ${fmt.usd(run.cost_usd_max)})` : ""} · ${fmt.int(run.prompt_tokens)} + ${fmt.int(run.completion_tokens)} tokens · ${fmt.sec(run.latency_s)} · ${plural(run.n_calls, "call")}`));
  }

  function messages(list) {
    if (!list) return h("p", { class: "muted" }, "Not stored (the experiment ran with store_text: false).");
    return h("div", { class: "messages" }, list.map((m) => h("div", { class: `msg role-${String(m.role).replace(/[^a-z]/g, "")}` }, h("div", { class: "role" }, m.role), pre(m.content))));
  }

  /** An attempt's own bill: unknown when no readable reply came back (the provider may still bill
   * it), — when its store predates attempts keeping their cost (not $0: nobody knows it was free). */
  function attemptCost(a) {
    if (!a.usage) return "unknown";
    return typeof a.cost_usd === "number" ? fmt.usd(a.cost_usd) : "—";
  }

  function attempts(log) {
    if (!log || !log.length) return null;
    // a tier column only when some attempt's reply named one (OpenAI's flex, default, priority)
    const tiers = log.some((a) => a.service_tier);
    const headers = ["attempt", "status", "latency", "tokens", "cost", ...(tiers ? ["tier"] : []), "error"];
    return table(headers, log.map((a, i) => [String(i + 1), a.status, fmt.sec(a.latency_s), a.usage ? `${fmt.int(a.usage.prompt_tokens)} + ${fmt.int(a.usage.completion_tokens)}` : "unknown", attemptCost(a), ...(tiers ? [a.service_tier || ""] : []), a.error || ""]), { class: "grid small attempts" });
  }

  /** The part of a call's prompt its provider read from or wrote to its prompt cache. */
  function promptCache(c) {
    const parts = [c.cached_tokens ? `${fmt.int(c.cached_tokens)} read from cache` : "", c.cache_write_tokens ? `${fmt.int(c.cache_write_tokens)} written to it` : ""].filter(Boolean);
    return parts.length ? ` (${parts.join(", ")})` : "";
  }

  function callView(c, label) {
    const flags = [c.cached ? h("span", { class: "badge" }, "cached") : null, c.error ? h("span", { class: "badge bad" }, "failed") : null];
    return h("div", { class: "call" },
      h("div", { class: "call-head" }, label ? `${label} · ` : "", h("code", null, c.node), ` · ${c.model}`, c.requested_model && c.requested_model !== c.model ? ` (asked ${c.requested_model})` : "", ...flags),
      h("div", { class: "figs" }, `${fmt.int(c.prompt_tokens)} prompt${promptCache(c)} + ${fmt.int(c.completion_tokens)} completion tokens${c.service_tier ? ` (${c.service_tier} tier)` : ""} · ${fmt.usd(c.cost_usd)} · ${fmt.sec(c.latency_s)} · started at ${fmt.sec(c.started_s)} · ${c.attempts} attempt${c.attempts === 1 ? "" : "s"}`),
      c.error ? h("div", { class: "error-box" }, c.error) : null,
      attempts(c.attempt_log),
      h("div", { class: "label" }, "Prompt"),
      messages(c.messages),
      h("div", { class: "label" }, "Reply"),
      c.reply === null || c.reply === undefined ? h("p", { class: "muted" }, c.error ? "No reply." : "Not stored.") : pre(c.reply, "reply"));
  }

  function trace(entry) {
    const run = entry.run;
    if (!run || !run.calls.length) return null;
    const detail = h("div", { class: "node-detail", "aria-live": "polite" });
    const turns = run.turns && run.turns.length > 1 ? run.turns.length : 0;
    const g = MOA.charts.topology(run.graph, run.calls, (node) => {
      const calls = node.calls.map((i) => run.calls[i]);
      // a multi-turn run calls each node once per turn, in turn order
      const label = (i) => (turns && calls.length === turns ? `Turn ${i + 1}` : calls.length > 1 ? `Call ${i + 1} of ${calls.length}` : "");
      detail.replaceChildren(
        h("h4", null, "Node ", h("code", null, node.id), node.output ? h("span", { class: "badge" }, "output") : null),
        ...(calls.length ? calls.map((c, i) => callView(c, label(i))) : [h("p", { class: "muted" }, "This node made no model call (a fan-in such as a majority vote).")]));
    });
    const where = run.graph.source === "topology" ? "edges from the setup's topology file" : "edges inferred from the prompts (the topology file was not found); layers by start time";
    const pane = h("div", { class: "trace", "data-setup": entry.setup }, h("p", { class: "muted small" }, `${plural(run.calls.length, "call")}; ${where}. Click or focus a node (Enter) for its prompt, reply and account.`), g.node, detail);
    const out = run.graph.nodes.find((n) => n.output) || run.graph.nodes[run.graph.nodes.length - 1];
    return { setup: entry.setup, node: pane, init: () => out && g.select(out.id) };
  }

  /** One tab per setup's trace: the setups' graphs one at a time. */
  function traceTabs(traces, first) {
    if (!traces.length) return null;
    const tabs = traces.map((t) =>
      h("button", { type: "button", class: "tab", role: "tab", "data-setup": t.setup, onclick: () => show(t.setup) }, t.setup));
    const show = (setup) => {
      traces.forEach((t) => (t.node.hidden = t.setup !== setup));
      tabs.forEach((b) => b.setAttribute("aria-selected", String(b.dataset.setup === setup)));
    };
    show(traces.some((t) => t.setup === first) ? first : traces[0].setup);
    return section("Traces", h("div", { class: "tabs", role: "tablist" }, tabs), traces.map((t) => t.node));
  }

  const VERDICT_WORDS = { "A>>B": "A much better", "A>B": "A better", "A=B": "a tie", "B>A": "B better", "B>>A": "B much better" };

  function judge(entry, d) {
    const run = entry.run;
    if (!run || !run.judgments.length) return null;
    const cards = run.judgments.map((j) => {
      const first = j.position === "a";
      const last = j.calls.length ? j.calls[j.calls.length - 1] : null;
      let said = "no verdict";
      if (j.verdict) {
        const setupSide = first ? "A" : "B";
        const better = j.verdict.startsWith(setupSide) ? entry.setup : d.baseline;
        // names apart from the words around them: each is a text of its own (see MOA.h)
        said = j.verdict === "A=B" ? "[[A=B]]: a tie" : [`[[${j.verdict}]] ${VERDICT_WORDS[j.verdict] || ""}: `, better, " better"];
      }
      return h("div", { class: "judgment", "data-position": j.position, "data-turn": j.turn },
        h("div", { class: "call-head" }, j.turn ? `Turn ${j.turn} · ` : "", first ? [entry.setup, " shown first (A), ", d.baseline, " second (B)"] : [d.baseline, " shown first (A), ", entry.setup, " second (B)"]),
        h("div", { class: "figs" }, said, j.value === null ? "" : [" → ", entry.setup, ` scores ${fmt.num(j.value, 2)}`], ` · ${fmt.usd(j.cost_usd)}`),
        j.error ? h("div", { class: "error-box" }, j.error) : null,
        h("div", { class: "label" }, "Reasoning"),
        last && last.reply !== null ? pre(last.reply, "reply") : h("p", { class: "muted" }, "Not stored."),
        last ? h("details", null, h("summary", null, "The judge's prompt"), messages(last.messages)) : null);
    });
    const summary = run.score && run.score.detail ? h("p", null, "Combined: ", h("code", null, run.score.detail)) : null;
    const sec = section(["Judge: ", entry.setup, " against ", d.baseline], summary, h("div", { class: "judgments" }, cards));
    sec.classList.add("judge");
    sec.dataset.setup = entry.setup;
    return sec;
  }

  MOA.pages.item = async ({ key, parts, params }) => {
    const id = parts[3];
    const list = MOA.listParams(params);
    const q = new URLSearchParams(list);
    q.set("id", id);
    if (params.get("sample")) q.set("sample", params.get("sample"));
    const d = await api(`/api/e/${enc(key)}/item?${q}`);
    const nav = d.nav;
    const toItem = (other) => link(["e", key, "item", other], list);
    const back = link(["e", key, "items"], list);
    const prev = nav.prev ? toItem(nav.prev) : null;
    const next = nav.next ? toItem(nav.next) : null;
    const outcome = list.get("outcome");
    const listName = nav.filtered && (outcome || list.get("q") || list.get("category")) ? `of the filtered list` : "of all items";
    const header = h("div", { class: "item-head" },
      h("a", { href: back, class: "btn" }, "← items"),
      h("h1", null, "Item ", h("code", null, d.item.id)),
      d.item.category ? h("span", { class: "badge" }, d.item.category) : null,
      h("span", { class: "spacer" }),
      prev ? h("a", { class: "btn", href: prev, id: "prev-item", title: "previous (k or ←)" }, "‹ prev") : h("span", { class: "btn off" }, "‹ prev"),
      h("span", { class: "muted", id: "position" }, nav.position ? `${fmt.int(nav.position)} / ${fmt.int(nav.total)} ${listName}` : ""),
      next ? h("a", { class: "btn", href: next, id: "next-item", title: "next (j or →)" }, "next ›") : h("span", { class: "btn off" }, "next ›"));
    const samples = d.samples.length > 1
      ? h("div", { class: "samples" }, "Sample: ", d.samples.map((s) => {
        const p = new URLSearchParams(list);
        p.set("sample", s);
        return h("a", { class: "btn" + (s === d.sample ? " on" : ""), href: link(["e", key, "item", id], p) }, String(s));
      }))
      : null;
    const base = d.runs.filter((e) => e.is_baseline);
    const others = d.runs.filter((e) => !e.is_baseline);
    const answers = h("div", { class: "answers" }, [...base, ...others].map((e) => answerCard(e, d)));
    answers.style.setProperty("--cols", String(Math.min(d.runs.length, 4)));
    const traces = d.runs.map(trace).filter(Boolean);
    const judges = d.runs.map((e) => judge(e, d)).filter(Boolean);
    const node = h("div", { class: "item-page" },
      header,
      samples,
      section("Input", ...input(d.item)),
      section(`Answers${d.code ? " and execution results" : ""}`, answers),
      traceTabs(traces, (others[0] || {}).setup),
      ...judges);
    return {
      title: `item ${d.item.id}`,
      node,
      keys: {
        j: () => next && go(next), ArrowRight: () => next && go(next),
        k: () => prev && go(prev), ArrowLeft: () => prev && go(prev),
        u: () => go(back), Escape: () => go(back),
      },
      help: [["j / →", "next item"], ["k / ←", "previous item"], ["u / Esc", "back to the items list"], ["Tab, Enter", "focus a trace's tab or node, show it"]],
      mounted() {
        traces.forEach((t) => t.init());
        window.scrollTo(0, 0);
      },
    };
  };
})();
