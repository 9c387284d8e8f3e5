"""The report's tables and text, from a ``Summary``: the terminal table and its notes, ``report.md``
and a self-contained ``report.html`` (the plot comes in as PNG bytes). Every format shows the same
content: the main table, the footer, the details, the quality sections (the pairwise judge with
Bradley–Terry, people's votes, pass@k, failure reasons, power), categories and errors."""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from moa._wording import counted
from moa.experiment.analysis.costs import all_failed
from moa.experiment.analysis.summary import JudgeSummary, SetupSummary, Summary
from moa.experiment.config import describe_evaluator

__all__ = [
    "Section",
    "format_table",
    "headline_findings",
    "html_report",
    "markdown_report",
    "print_notes",
    "print_table",
    "quality_notes",
    "quality_sections",
    "table_headers",
    "table_rows",
]

HEADERS = [
    "Setup",
    "cost × single",
    "quality Δ [95% CI]",
    "latency ×",
    "$ per correct answer",
    "$ per correct × single",
    "quality",
    "p (Holm)",
]
"""The main table's headers on the USD basis; ``table_headers`` gives them for a summary."""

TOKEN_HEADERS = [
    "Setup",
    "tokens × single",
    "quality Δ [95% CI]",
    "latency ×",
    "tokens per correct answer",
    "tokens per correct × single",
    "quality",
    "p (Holm)",
]
"""The same on the token basis (a $0 baseline: local-compute or unpriced models)."""


def table_headers(summary: Summary) -> list[str]:
    """The main table's headers in the summary's cost basis."""
    return TOKEN_HEADERS if summary.cost_basis == "tokens" else HEADERS


def _x(v: float | None) -> str:
    return "—" if v is None else f"{v:.2f}×"


def _usd(v: float | None) -> str:
    if v is None:
        return "—"
    return f"${v:.4f}" if v >= 0.0001 or v == 0 else f"${v:.2e}"


def _delta(s: SetupSummary) -> str:
    if s.is_baseline:
        return "baseline"
    if s.delta_vs_baseline is None or s.delta_ci95 is None:
        return "—"
    lo, hi = s.delta_ci95
    return f"{s.delta_vs_baseline:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def _pv(p: float) -> str:
    # an exact test's p is never 0; a float 0 is an underflow below the smallest double
    return f"{p:.3g}" if p > 0 else "<1e-300"


def _p(s: SetupSummary) -> str:
    if s.p_value is None:
        return "—"
    holm = f" ({_pv(s.p_value_holm)})" if s.p_value_holm is not None else ""
    return f"{_pv(s.p_value)}{holm}"


def _tokens(v: float | None) -> str:
    return "—" if v is None else f"{v:,.0f}"


def table_rows(summary: Summary) -> list[list[str]]:
    """One row per setup, the baseline first; a Pareto-optimal setup is marked with ``*``. Cost
    columns are in the summary's cost basis (``table_headers``)."""
    tokens = summary.cost_basis == "tokens"
    rows = []
    for s in summary.setups:
        name = s.name + (" *" if s.pareto else "")
        quality = "—" if s.quality is None else f"{s.quality:.3f}"
        rows.append(
            [
                name,
                _x(s.token_ratio if tokens else s.cost_ratio),
                _delta(s),
                _x(s.latency_ratio),
                _tokens(s.tokens_per_correct) if tokens else _usd(s.cost_per_correct_usd),
                _x(s.tokens_per_correct_ratio if tokens else s.cost_per_correct_ratio),
                quality,
                _p(s),
            ]
        )
    return rows


def _footer(summary: Summary) -> list[str]:
    basis = "tokens" if summary.cost_basis == "tokens" else "cost"
    out = [
        f"{summary.experiment}: {counted(summary.n_items, 'item')}, evaluator `{describe_evaluator(summary.evaluator)}`, "
        f"baseline `{summary.baseline}`; * = Pareto-optimal ({basis} vs quality: nothing else costs no "
        f"more and scores no less); latency × is the median wall time over the baseline's, on the runs "
        f"both answered (failed runs left out); {summary.scoring_rule}.",
    ]
    compared = summary.compared_items
    for s in summary.setups:
        if compared is not None and s.delta_n is not None and min(s.n, s.delta_n) < compared:
            # a judge that failed on some items (or an evaluator not run yet) leaves them unscored
            out.append(
                f"{s.name}: of the {compared} items compared, quality rests on the {s.n} it has a "
                f"score on, quality Δ and p on the {s.delta_n} it and the baseline both have one on"
            )
        if s.errors:
            first = s.error_examples[0]["error"] if s.error_examples else ""
            out.append(f"{s.name}: {s.errors} of {s.runs} runs failed; most frequent: {first}")
        if s.unknown_usage_attempts:
            out.append(
                f"{s.name}: cost ${s.cost_usd:.6f} known, up to ${s.cost_usd_max:.6f}: "
                f"{s.unknown_usage_attempts} attempt(s) reached the provider with unknown usage "
                "(timeouts, cancellations); the provider may bill them"
            )
        if s.usage_estimated_calls:
            out.append(
                f"{s.name}: {s.usage_estimated_calls} call(s) got no usage from the provider; their "
                f"{basis} counts moa's own estimate of the text sent and received, not a bill"
                f" (the budget counted their worst case; cost up to ${s.cost_usd_max:.6f})"
            )
    if summary.cost_basis == "tokens":
        # a free baseline (the embedded model, or unpriced models) has no cost ratio: tokens stand in
        ratios = ", ".join(
            f"{s.name} {s.token_ratio:.2f}×" for s in summary.setups if not s.is_baseline and s.token_ratio
        )
        base = next((s for s in summary.setups if s.is_baseline), None)
        if base is not None and base.cost_per_item_usd is None:
            why = "the baseline has no stored run" + (
                " (the budget stopped the experiment first)"
                if any("budget" in n for n in summary.notes)
                else ""
            )
        elif base is not None and all_failed(base):
            # failed before any priced reply: $0 says the baseline never answered, not that it is free
            why = "every run of the baseline failed and cost $0"
        else:
            why = "the baseline cost $0 (local-compute or unpriced models)"
        out.append(
            f"cost × single is undefined: {why}, so cost is counted in tokens: "
            "tokens × single, tokens per correct answer and the Pareto front use them"
            + (f"; tokens × single: {ratios}" if ratios else "")
        )
    out.extend(summary.notes)
    return out


#: where an HTML tag, comment or declaration could open (``<img``, ``</div``, ``<!--``)
_TAG_OPENING = re.compile(r"<(?=[A-Za-z/!?])")


def _one_line(text: str) -> str:
    """``text`` on one line, no HTML in it: a line break in a dataset's category or a provider's
    error message would end a markdown table row or bullet and start a heading or table of its own,
    and a tag in them (an nginx 502 page, ``<img onerror=...>``) is laid out, or run, by a renderer
    of report.md that passes HTML through. CommonMark shows ``\\<`` as ``<``; ``<1e-300`` is left."""
    return _TAG_OPENING.sub(r"\\<", " ".join(text.splitlines()))


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    esc = [[_one_line(c).replace("|", "\\|") for c in r] for r in rows]
    return [
        "| " + " | ".join(_one_line(h).replace("|", "\\|") for h in headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
        *("| " + " | ".join(r) + " |" for r in esc),
    ]


def _ci(v: list[float] | None, fmt: str = ".3f") -> str:
    return "—" if v is None else f"[{v[0]:{fmt}}, {v[1]:{fmt}}]"


def _f(v: float | None, fmt: str = ".3f") -> str:
    return "—" if v is None else format(v, fmt)


DETAIL_HEADERS = [
    "Setup",
    "n",
    "quality",
    "quality 95% CI",
    "test",
    "cost USD",
    "tokens",
    "tokens ×",
    "latency p50 s",
    "latency p95 s",
    "p95 ×",
    "calls/item",
    "errors",
    "items for 80% power",
]


def _detail_rows(summary: Summary) -> list[list[str]]:
    return [
        [
            s.name,
            str(s.n),
            _f(s.quality),
            _ci(s.quality_ci95),
            s.test or "—",
            f"{s.cost_usd:.6f}",
            str(s.tokens),
            _x(s.token_ratio),
            _f(s.latency_p50_s),
            _f(s.latency_p95_s),
            _x(s.latency_p95_ratio),
            _f(s.calls_per_item, ".2f"),
            str(s.errors),
            "—" if s.power_n is None else str(s.power_n),
        ]
        for s in summary.setups
    ]


def _category_rows(summary: Summary) -> tuple[list[str], list[list[str]]]:
    cats = sorted({c for s in summary.setups for c in s.categories})
    headers = ["Category", *(s.name for s in summary.setups)]
    rows = []
    for c in cats:
        row = [c]
        for s in summary.setups:
            cs = s.categories.get(c)
            if cs is None or cs.quality is None:
                row.append("—")
            elif s.is_baseline or cs.delta_vs_baseline is None:
                row.append(f"{cs.quality:.3f} (n={cs.n})")
            else:
                row.append(f"{cs.quality:.3f} (Δ {cs.delta_vs_baseline:+.3f} {_ci(cs.delta_ci95)}, n={cs.n})")
        rows.append(row)
    return headers, rows


# -- quality sections: the judge, pass@k, failure reasons, power -----------------------------------


@dataclass(frozen=True, slots=True)
class Section:
    """A titled table (``headers`` + ``rows``) and/or bullet lines."""

    title: str
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    bullets: list[str] = field(default_factory=list)


def _bt(s: SetupSummary) -> str:
    if s.bt_rating is None:
        return "—"
    return f"{s.bt_rating:.0f} {_ci(s.bt_ci95, '.0f')}" + (" (anchor)" if s.is_baseline else "")


def _forced_ties(j: JudgeSummary) -> str | None:
    """The judged runs forced to a tie, in runs: with samples an item holds several, so these are
    not counted among the items' wins, ties and losses."""
    parts = []
    if j.no_verdict:
        parts.append(f"{j.no_verdict} judged run{'s' if j.no_verdict != 1 else ''} without a verdict")
    if j.inconsistent:
        parts.append(f"{j.inconsistent} with orders that disagree")
    return ", ".join(parts) + " (each scored a tie)" if parts else None


def headline_findings(summary: Summary) -> list[str]:
    """The lines under report.md's main table past its legend: failed runs, costs known only up to
    a bound, estimated usage, the token basis, forced ties and the summary's notes (``moa view``
    shows them under its own table)."""
    return _headline_notes(summary)[1:]


def _headline_notes(summary: Summary) -> list[str]:
    """The footer of the report's main table, plus the judged runs forced to a tie per setup: its
    quality Δ counts them as parity, so a reader of the Δ sees them there, not only in the Judge
    section (the terminal's quality notes already name them)."""
    forced = [
        f"`{s.name}`: quality Δ counts {text}"
        for s in summary.setups
        if s.judge is not None and (text := _forced_ties(s.judge))
    ]
    return [*_footer(summary), *forced]


def _items_note(s: SetupSummary) -> str:
    return f" over items (each the mean of its {s.samples} samples)" if s.samples > 1 else ""


def _judge_section(summary: Summary) -> Section | None:
    # a judge paid for pairs that all failed (a budget stopping its second orders) has no verdict
    # to show, but its cost is still what was paid
    if not any(s.judge is not None or s.bt_rating is not None or s.judge_cost_usd for s in summary.setups):
        return None
    headers = [
        "Setup",
        "wins",
        "ties",
        "losses",
        "win rate",
        "judge score [95% CI]",
        "BT rating [95% CI]",
        "judge USD",
    ]
    rows = []
    for s in summary.setups:
        j = s.judge
        if j is None:
            paid = "—" if s.is_baseline else f"{s.judge_cost_usd:.6f}"
            rows.append(
                [s.name, "—", "—", "—", "—", "0.500 (baseline)" if s.is_baseline else "—", _bt(s), paid]
            )
            continue
        rows.append(
            [
                s.name,
                str(j.wins),
                str(j.ties),
                str(j.losses),
                f"{j.win_rate:.3f}",
                f"{j.score:.3f} {_ci(j.score_ci95)}",
                _bt(s),
                f"{s.judge_cost_usd:.6f}",
            ]
        )
    sampled = max(s.samples for s in summary.setups) > 1
    bullets = [
        "Each setup's answer is judged against the baseline's on the same item in both orders; "
        "inconsistent verdicts count as a tie. Judge score: 1 = much better, 0.5 = parity, 0 = much worse.",
        *(
            ["Wins, ties and losses count items, each scored by the mean over its samples."]
            if sampled
            else []
        ),
        *(
            f"`{s.name}`: {forced}"
            for s in summary.setups
            if s.judge is not None and (forced := _forced_ties(s.judge))
        ),
        "Bradley–Terry ratings (ties as half wins) on an Elo-like scale with the baseline at 1000; every "
        "setup is judged against the baseline only (a star design), so ratings between two setups rest "
        "on their comparisons with the baseline.",
    ]
    return Section(f"Judge (pairwise against `{summary.baseline}`)", headers, rows, bullets)


def _human_bt(s: SetupSummary) -> str:
    h = s.human
    if h is None or h.bt_rating is None:
        return "—"
    return f"{h.bt_rating:.0f} {_ci(h.bt_ci95, '.0f')}" + (" (anchor)" if s.is_baseline else "")


def _human_section(summary: Summary) -> Section | None:
    voted = [(s, s.human) for s in summary.setups if s.human is not None]
    if not voted:
        return None
    judged = any(s.judge is not None or s.bt_rating is not None for s in summary.setups)
    rater = "judge" if judged else f"`{summary.evaluator.get('name')}`"
    headers = ["Setup", "votes", "voters", "wins", "ties", "losses", "people's BT [95% CI]"]
    headers += ["judge's BT [95% CI]"] if judged else []
    headers += [f"agreement with {rater}", "Cohen's κ"]
    rows = []
    for s, h in voted:
        row = [s.name, str(h.votes), str(h.voters), str(h.wins), str(h.ties), str(h.losses), _human_bt(s)]
        row += [_bt(s)] if judged else []
        if s.is_baseline or h.agreement is None:
            row += ["—", "—"]
        else:
            row += [f"{h.agreement:.2f} (n={h.agreement_n})", _f(h.kappa, ".2f")]
        rows.append(row)
    bullets = [
        "Blind A/B votes by people (`moa view --vote`): each pair shows two setups' answers to the same "
        "item on randomised sides, names hidden until voted. Wins, ties and losses count each setup's "
        "votes from its side.",
        "People's Bradley–Terry ratings (ties as half wins, items resampled for the 95% interval) on the "
        f"judge's scale: `{summary.baseline}` anchored at 1000.",
        f"Agreement: the share of votes against `{summary.baseline}` whose direction (better, tie, worse) "
        f"matches the {rater}'s on the same pair; Cohen's κ corrects it for chance over those three "
        "classes (1 = always agree, 0 = chance, — = undefined).",
    ]
    return Section("Human votes", headers, rows, bullets)


def _cascade_section(summary: Summary) -> Section | None:
    shown = [s for s in summary.setups if s.stage_shares]
    if not shown:
        return None
    n = max(int(k) for s in shown for k in s.stage_shares or {})
    rows = [
        [
            s.name,
            _f(s.escalation_rate, ".3f"),
            *(f"{(s.stage_shares or {}).get(str(k), 0.0):.3f}" for k in range(1, n + 1)),
            _f(s.calls_per_item, ".2f"),
            _x(s.cost_ratio),
        ]
        for s in shown
    ]
    note = (
        "Cascades: the first stage whose accept rule holds answers, the last always does. Escalation "
        "rate: the share of answered runs a later stage than the first answered; the stage columns "
        "are each stage's share; the cost ratio is against the baseline."
    )
    stages = [f"stage {k}" for k in range(1, n + 1)]
    headers = ["Setup", "escalation rate", *stages, "calls/item", "cost ratio"]
    return Section("Cascade", headers, rows, [note])


def _language_section(summary: Summary) -> Section | None:
    langs = sorted({lang for s in summary.setups for lang in s.languages})
    if not langs:
        return None
    rows = []
    for lang in langs:
        for s in summary.setups:
            ls = s.languages.get(lang)
            if ls is None:
                continue
            delta = (
                "baseline"
                if s.is_baseline
                else (
                    "—"
                    if ls.delta_vs_baseline is None
                    else f"{ls.delta_vs_baseline:+.3f} {_ci(ls.delta_ci95)}"
                )
            )
            passes = ", ".join(f"pass@{k} {v:.3f}" for k, v in (ls.pass_at_k or {}).items()) or "—"
            bt = "—" if ls.bt_rating is None else f"{ls.bt_rating:.0f} {_ci(ls.bt_ci95, '.0f')}"
            rows.append([lang, s.name, str(ls.n), _f(ls.quality), delta, passes, bt])
    note = "Each language's items only (BigCodeArena's same-language mode); BT ratings under a judge."
    return Section(
        "Per language",
        ["Language", "Setup", "n", "quality", "Δ [95% CI]", "pass@k", "BT rating"],
        rows,
        [note],
    )


def _turn_section(summary: Summary) -> Section | None:
    shown = [s for s in summary.setups if s.turn_scores]
    if not shown:
        return None
    n = max(len(s.turn_scores or ()) for s in shown)
    rows = [
        [s.name, *(f"{v:.3f}" for v in s.turn_scores or ()), *(["—"] * (n - len(s.turn_scores or ())))]
        for s in shown
    ]
    note = (
        "Multi-turn items: turn k ran with the setup's own earlier answers as history and was judged on "
        "the conversation up to it (1 = much better than the baseline, 0.5 = parity)."
    )
    return Section("Per turn", ["Setup", *(f"turn {k}" for k in range(1, n + 1))], rows, [note])


def _pass_section(summary: Summary) -> Section | None:
    shown = [s for s in summary.setups if s.pass_at_k]
    sampled = any(s.samples > 1 for s in summary.setups)
    if not shown or not (sampled or summary.evaluator.get("name") == "execution"):
        return None
    ks = sorted({int(k) for s in shown for k in s.pass_at_k or {}})
    rows = [
        [s.name, *((f"{v:.3f}" if (v := (s.pass_at_k or {}).get(str(k))) is not None else "—") for k in ks)]
        for s in shown
    ]
    note = (
        f"{max(s.samples for s in summary.setups)} samples per item; unbiased estimator (Chen et al. 2021)."
    )
    return Section("pass@k", ["Setup", *(f"pass@{k}" for k in ks)], rows, [note])


def _failure_section(summary: Summary) -> Section | None:
    bullets = [
        f"`{s.name}`: " + ", ".join(f"{f['reason']} ×{f['count']}" for f in s.failure_reasons)
        for s in summary.setups
        if s.failure_reasons
    ]
    return Section("Why answers failed", bullets=bullets) if bullets else None


def _power_section(summary: Summary) -> Section | None:
    bullets = [f"`{s.name}`: {s.power_note}" for s in summary.setups if s.power_note]
    if not bullets:
        return None
    bullets.append("Sample sizes from the observed variance of the paired differences (two-sided, α = 0.05).")
    return Section("Power", bullets=bullets)


def quality_sections(summary: Summary) -> list[Section]:
    """The sections that apply to this summary, in report order."""
    found = (
        _judge_section(summary),
        _human_section(summary),
        _cascade_section(summary),
        _turn_section(summary),
        _language_section(summary),
        _pass_section(summary),
        _failure_section(summary),
        _power_section(summary),
    )
    return [s for s in found if s is not None]


def quality_notes(summary: Summary) -> list[str]:
    """One line per setup and finding, for the terminal (under the table)."""
    out: list[str] = []
    for s in summary.setups:
        if s.judge is not None:
            j = s.judge
            forced = _forced_ties(j)
            out.append(
                f"{s.name} vs {summary.baseline} (judge): {j.wins} wins, {j.ties} ties, {j.losses} losses"
                f"{_items_note(s)}; judge score {j.score:.3f} {_ci(j.score_ci95)}; BT {_bt(s)}"
                + (f"; {forced}" if forced else "")
            )
        if s.human is not None and not s.is_baseline:
            h = s.human
            agree = "" if h.agreement is None else f"; agreement {h.agreement:.2f} (n={h.agreement_n})"
            out.append(
                f"{s.name} (people): {h.votes} votes, {h.wins} wins, {h.ties} ties, {h.losses} losses; "
                f"BT {_human_bt(s)}{agree}"
            )
        if s.stage_shares and s.escalation_rate is not None:
            shares = ", ".join(f"stage {k} {v:.3f}" for k, v in s.stage_shares.items())
            out.append(f"{s.name} (cascade): escalation rate {s.escalation_rate:.3f}; answered by {shares}")
        if s.pass_at_k and (s.samples > 1 or summary.evaluator.get("name") == "execution"):
            out.append(f"{s.name}: " + ", ".join(f"pass@{k} {v:.3f}" for k, v in s.pass_at_k.items()))
        if s.failure_reasons:
            out.append(
                f"{s.name}: failures: " + ", ".join(f"{f['reason']} ×{f['count']}" for f in s.failure_reasons)
            )
        if s.power_note:
            out.append(f"{s.name}: {s.power_note}")
    return out


# -- the formats -----------------------------------------------------------------------------------


def format_table(summary: Summary) -> str:
    """The terminal table (plain text, aligned)."""
    headers = table_headers(summary)
    rows = [headers, *table_rows(summary)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(headers))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def print_notes(summary: Summary) -> list[str]:
    """The footer plus the quality notes (judge, pass@k, failure reasons, power) for the terminal."""
    return [*_footer(summary), *quality_notes(summary)]


def print_table(summary: Summary) -> None:
    print(format_table(summary))
    for line in print_notes(summary):
        print(line)


def markdown_report(summary: Summary, *, png: str | None = "pareto.png") -> str:
    lines = [f"# {_one_line(summary.experiment)}", ""]
    lines += _md_table(table_headers(summary), table_rows(summary))
    lines += ["", *(f"- {_one_line(n)}" for n in _headline_notes(summary)), "", "## Details", ""]
    lines += _md_table(DETAIL_HEADERS, _detail_rows(summary))
    for sec in quality_sections(summary):
        lines += ["", f"## {sec.title}", ""]
        if sec.headers:
            lines += [*_md_table(sec.headers, sec.rows), ""]
        lines += [f"- {_one_line(b)}" for b in sec.bullets]
    headers, rows = _category_rows(summary)
    if rows:
        lines += ["", "## Per category", "", *_md_table(headers, rows)]
    failing = [s for s in summary.setups if s.error_examples]
    if failing:
        lines += ["", "## Errors", ""]
        for s in failing:
            for e in s.error_examples:
                lines.append(f"- `{s.name}` ×{e['count']}: {_one_line(str(e['error']))}")
    if png:
        lines += ["", "## Cost and quality", "", f"![cost ratio vs quality]({png})"]
    return "\n".join(lines) + "\n"


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def html_report(summary: Summary, png: bytes | None) -> str:
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(summary.experiment)}</title><style>",
        "body{font-family:system-ui,sans-serif;margin:2em;max-width:75em}table{border-collapse:collapse;margin:1em 0}",
        "td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left}th{background:#f4f4f4}",
        "</style></head><body>",
        f"<h1>{html.escape(summary.experiment)}</h1>",
        _html_table(table_headers(summary), table_rows(summary)),
        "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in _headline_notes(summary)) + "</ul>",
        "<h2>Details</h2>",
        _html_table(DETAIL_HEADERS, _detail_rows(summary)),
    ]
    for sec in quality_sections(summary):
        parts.append(f"<h2>{html.escape(sec.title)}</h2>")
        if sec.headers:
            parts.append(_html_table(sec.headers, sec.rows))
        if sec.bullets:
            parts.append("<ul>" + "".join(f"<li>{html.escape(b)}</li>" for b in sec.bullets) + "</ul>")
    headers, rows = _category_rows(summary)
    if rows:
        parts += ["<h2>Per category</h2>", _html_table(headers, rows)]
    errs = [(s.name, e) for s in summary.setups for e in s.error_examples]
    if errs:
        parts.append("<h2>Errors</h2><ul>")
        parts += [
            f"<li><code>{html.escape(n)}</code> ×{e['count']}: {html.escape(str(e['error']))}</li>"
            for n, e in errs
        ]
        parts.append("</ul>")
    if png is not None:
        data = base64.b64encode(png).decode()
        parts.append(
            f"<h2>Cost and quality</h2><img alt='cost ratio vs quality' src='data:image/png;base64,{data}'>"
        )
    parts.append("</body></html>")
    return "\n".join(parts)
