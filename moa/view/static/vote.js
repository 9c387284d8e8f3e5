// moa view: blind A/B voting. The page gets a pair's token and its two answers, never the setup
// names; they are revealed by the server's answer to the vote.
"use strict";

(() => {
  const { h, api, post, link, fmt, pre, enc } = MOA;

  const CHOICES = [
    ["1", "A>>B", "A is much better"],
    ["2", "A>B", "A is better"],
    ["3", "A=B", "Tie"],
    ["4", "B>A", "B is better"],
    ["5", "B>>A", "B is much better"],
  ];
  const WORDS = Object.fromEntries(CHOICES.map(([, v, w]) => [v, w]));

  function side(label, s, item, code) {
    const turns = s.turns && s.turns.length > 1 ? s.turns : null;
    const body = turns
      ? turns.map((t, i) => [h("div", { class: "label" }, `User, turn ${i + 1}`), pre(item.turns ? item.turns[i] : "", "input small"), h("div", { class: "label" }, `Answer ${label}, turn ${i + 1}`), pre(t, "answer")])
      : [pre(s.answer, code ? "answer code" : "answer")];
    const ex = s.execution
      ? h("div", { class: "execution " + (s.execution.passed ? "passed" : "failed") },
        h("div", { class: "label" }, "Execution result: ", h("strong", null, s.execution.passed ? "passed" : "failed")),
        s.execution.detail ? pre(s.execution.detail, "detail") : null)
      : null;
    return h("div", { class: "side", "data-side": label }, h("h2", null, `Answer ${label}`), ...body, ex);
  }

  function revealBanner(r) {
    if (!r) return null;
    let judge = null;
    if (r.evaluator_says) {
      const said = r.evaluator_says === "tie" ? "a tie" : `${r.evaluator_says} better`;
      judge = h("span", { class: r.agree ? "good" : "bad" }, ` The ${r.evaluator === "judge" ? "judge" : `\`${r.evaluator}\` evaluator`} said ${said}: ${r.agree ? "you agree" : "you disagree"}.`);
    }
    return h("div", { class: "reveal", role: "status" },
      `You said: ${WORDS[r.verdict]}. A was `, h("code", null, r.a), ", B was ", h("code", null, r.b), ".", judge);
  }

  MOA.pages.vote = async ({ key, cfg }) => {
    if (cfg.mode !== "vote") {
      return {
        title: "vote",
        node: h("div", null, h("h1", null, "Vote"), h("p", null, "Voting is off in this viewer. Start it with ", h("code", null, "moa view DIR --vote --voter NAME"), " to vote on blind A/B pairs.")),
      };
    }
    const d = await api(`/api/e/${enc(key)}/vote/next`);
    const p = d.progress;
    const bar = h("div", { class: "progress", title: `${p.voted} of ${p.total}` }, h("span"));
    bar.firstChild.style.width = `${p.total ? (100 * p.voted) / p.total : 100}%`;
    const banner = revealBanner(MOA.state.lastReveal);
    MOA.state.lastReveal = null;
    const head = h("div", { class: "vote-head" }, h("h1", null, "Which answer is better?"), h("span", { class: "muted", id: "vote-progress" }, `${fmt.int(p.voted)} of ${fmt.int(p.total)} pairs voted by ${p.voter}`), bar,
      p.left_out ? h("p", { class: "error-box", id: "left-out" }, p.left_out) : null);
    if (!d.pair) {
      return {
        title: "vote",
        node: h("div", { class: "vote-page" }, head, banner, h("div", { class: "card done" }, h("h2", null, "All pairs voted. Thank you!"),
          h("p", null, "Your votes are in the experiment's store. ", h("code", null, "moa report DIR"), " adds them to the report: people's Bradley–Terry ratings next to the judge's, and how often you agree."),
          h("p", null, h("a", { href: link(["e", key, "overview"]) }, "See the overview")))),
      };
    }
    const pair = d.pair;
    const item = pair.item;
    let busy = false;
    const buttons = [];
    const cast = async (verdict) => {
      if (busy) return;
      busy = true;
      buttons.forEach((b) => (b.disabled = true));
      try {
        const r = await post(`/api/e/${enc(key)}/vote`, { token: pair.token, verdict });
        MOA.state.lastReveal = r.reveal;
      } catch (e) {
        MOA.state.lastReveal = null;
        alert(e.message);
      }
      MOA.route();
    };
    const skip = async () => {
      if (busy) return;
      busy = true;
      try {
        await post(`/api/e/${enc(key)}/vote/skip`, { token: pair.token });
      } catch (e) {
        // a token the server no longer knows (it was restarted): say so, then show its next pair
        alert(e.message);
      }
      MOA.route();
    };
    const undo = async () => {
      if (busy) return;
      busy = true;
      try {
        await post(`/api/e/${enc(key)}/vote/undo`, {});
      } catch (e) {
        busy = false;
        undoNote.textContent = e.message;
        return;
      }
      MOA.route();
    };
    for (const [k, verdict, words] of CHOICES) {
      buttons.push(h("button", { type: "button", class: "choice c" + k, "data-verdict": verdict, onclick: () => cast(verdict) }, h("kbd", null, k), ` ${words}`));
    }
    const undoNote = h("span", { class: "muted small" });
    const question = item.turns && item.turns.length > 1
      ? h("p", { class: "muted" }, `A conversation of ${item.turns.length} turns; each side shows it with its own answers.`)
      : pre(item.input, "input");
    const reference = item.target ? h("details", null, h("summary", null, "Reference answer"), pre(item.target, "target")) : null;
    const node = h("div", { class: "vote-page" },
      head,
      banner,
      h("section", { class: "card question" }, h("h2", null, "The question ", h("span", { class: "muted small" }, "(item ", item.id, ")")), question, reference),
      h("div", { class: "sides" }, side("A", pair.a, item, pair.code), side("B", pair.b, item, pair.code)),
      h("div", { class: "choices", role: "group", "aria-label": "your verdict" }, buttons),
      h("div", { class: "vote-tools" },
        h("button", { type: "button", class: "ghost", onclick: skip, id: "skip" }, h("kbd", null, "s"), " skip"),
        h("button", { type: "button", class: "ghost", onclick: undo, id: "undo" }, h("kbd", null, "u"), " undo the last vote"),
        undoNote),
      h("p", { class: "muted small" }, "The setups' names stay hidden until you vote; sides are drawn at random per pair (and stay the same if you come back)."));
    const keys = { s: skip, u: undo };
    for (const [k, verdict] of CHOICES) keys[k] = () => cast(verdict);
    return {
      title: "vote",
      node,
      keys,
      help: [["1 … 5", "A much better, A better, tie, B better, B much better"], ["s", "skip this pair (it comes back at the end)"], ["u", "undo your last vote"]],
    };
  };
})();
