"""The outputs of an experiment folder: ``summary.json``, ``results.jsonl``, ``report.md``, a
self-contained ``report.html`` and ``pareto.png`` (matplotlib, imported only here), plus the table
printed to the terminal."""

from __future__ import annotations

import base64
import html
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from moa.experiment.report_sections import quality_notes, quality_sections
from moa.experiment.store import Store
from moa.experiment.summary import SetupSummary, Summary

__all__ = ["format_table", "markdown_report", "pareto_png", "print_notes", "print_table", "write_outputs"]

HEADERS = [
    "Setup",
    "cost × single",
    "quality Δ [95% CI]",
    "latency ×",
    "$ per correct answer",
    "quality",
    "p (Holm)",
]


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


def _p(s: SetupSummary) -> str:
    if s.p_value is None:
        return "—"
    holm = f" ({s.p_value_holm:.3g})" if s.p_value_holm is not None else ""
    return f"{s.p_value:.3g}{holm}"


def table_rows(summary: Summary) -> list[list[str]]:
    """One row per setup, the baseline first; a Pareto-optimal setup is marked with ``*``."""
    rows = []
    for s in summary.setups:
        name = s.name + (" *" if s.pareto else "")
        quality = "—" if s.quality is None else f"{s.quality:.3f}"
        rows.append(
            [
                name,
                _x(s.cost_ratio),
                _delta(s),
                _x(s.latency_ratio),
                _usd(s.cost_per_correct_usd),
                quality,
                _p(s),
            ]
        )
    return rows


def format_table(summary: Summary) -> str:
    """The terminal table (plain text, aligned)."""
    rows = [HEADERS, *table_rows(summary)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADERS))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def _footer(summary: Summary) -> list[str]:
    out = [
        f"{summary.experiment}: {summary.n_items} items, evaluator `{summary.evaluator.get('name')}`, "
        f"baseline `{summary.baseline}`; * = Pareto-optimal (cost vs quality); {summary.scoring_rule}.",
    ]
    for s in summary.setups:
        if s.errors:
            first = s.error_examples[0]["error"] if s.error_examples else ""
            out.append(f"{s.name}: {s.errors} of {s.n * s.samples} runs failed; most frequent: {first}")
        if s.unknown_usage_attempts:
            out.append(
                f"{s.name}: cost ${s.cost_usd:.6f} known, up to ${s.cost_usd_max:.6f}: "
                f"{s.unknown_usage_attempts} attempt(s) reached the provider with unknown usage "
                "(timeouts, cancellations); the provider may bill them"
            )
    base = next((s for s in summary.setups if s.is_baseline), None)
    if base is not None and base.cost_usd == 0:
        # a free baseline (the embedded model, or unpriced models) has no cost ratio: tokens stand in
        ratios = ", ".join(
            f"{s.name} {s.token_ratio:.2f}×" for s in summary.setups if not s.is_baseline and s.token_ratio
        )
        out.append(
            "cost × single is undefined: the baseline cost $0 (local-compute or unpriced models)"
            + (f"; tokens × single: {ratios}" if ratios else "")
        )
    out.extend(summary.notes)
    return out


def print_notes(summary: Summary) -> list[str]:
    """The footer plus the quality notes (judge, pass@k, failure reasons, power) for the terminal."""
    return [*_footer(summary), *quality_notes(summary)]


def print_table(summary: Summary) -> None:
    print(format_table(summary))
    for line in print_notes(summary):
        print(line)


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    esc = [[c.replace("|", "\\|") for c in r] for r in rows]
    return [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
        *("| " + " | ".join(r) + " |" for r in esc),
    ]


def _ci(v: list[float] | None) -> str:
    return "—" if v is None else f"[{v[0]:.3f}, {v[1]:.3f}]"


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


def markdown_report(summary: Summary, *, png: str | None = "pareto.png") -> str:
    lines = [f"# {summary.experiment}", ""]
    lines += _md_table(HEADERS, table_rows(summary))
    lines += ["", *(f"- {n}" for n in _footer(summary)), "", "## Details", ""]
    lines += _md_table(DETAIL_HEADERS, _detail_rows(summary))
    for sec in quality_sections(summary):
        lines += ["", f"## {sec.title}", ""]
        if sec.headers:
            lines += [*_md_table(sec.headers, sec.rows), ""]
        lines += [f"- {b}" for b in sec.bullets]
    headers, rows = _category_rows(summary)
    if rows:
        lines += ["", "## Per category", "", *_md_table(headers, rows)]
    failing = [s for s in summary.setups if s.error_examples]
    if failing:
        lines += ["", "## Errors", ""]
        for s in failing:
            for e in s.error_examples:
                lines.append(f"- `{s.name}` ×{e['count']}: {e['error']}")
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
        _html_table(HEADERS, table_rows(summary)),
        "<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in _footer(summary)) + "</ul>",
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


def pareto_png(summary: Summary, path: Path) -> str | None:
    """Draw cost ratio (x) vs quality (y) with CI bars; ``None`` when done, else a one-line note."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: pareto.png skipped (pip install 'moa[report]')"
    points = [s for s in summary.setups if s.quality is not None and s.quality_ci95 is not None]
    if not points:
        return "no setup has a quality yet: pareto.png skipped"
    use_ratio = all(s.cost_ratio is not None for s in points)
    fig, ax = plt.subplots(figsize=(6.4, 4.4), dpi=110)
    try:
        for s in points:
            x = (s.cost_ratio if use_ratio else s.cost_per_item_usd) or 0.0
            q = s.quality or 0.0
            lo, hi = s.quality_ci95 or [q, q]
            color = "tab:red" if s.pareto else "tab:gray"
            marker = "*" if s.is_baseline else "o"
            ax.errorbar(
                [x],
                [q],
                yerr=[[q - lo], [hi - q]],
                fmt=marker,
                color=color,
                capsize=3,
                markersize=12 if s.is_baseline else 7,
            )
            ax.annotate(
                s.name + (" (baseline)" if s.is_baseline else ""),
                (x, q),
                textcoords="offset points",
                xytext=(6, 4),
                fontsize=8,
            )
        front = sorted(
            ((s.cost_ratio if use_ratio else s.cost_per_item_usd) or 0.0, s.quality or 0.0)
            for s in points
            if s.pareto
        )
        if len(front) > 1:
            ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="tab:red", linewidth=1)
        ax.set_xlabel("cost × baseline" if use_ratio else "cost per item (USD)")
        ax.set_ylabel(f"quality ({summary.evaluator.get('name')}) with 95% CI")
        ax.set_title(summary.experiment)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
    return None


def write_results(store: Store, manifest: dict[str, Any], path: Path) -> None:
    """``results.jsonl``: one row per stored (setup, item) pair, read lazily from the store."""
    items = set(manifest["item_ids"])
    tmp = path.with_suffix(".jsonl.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for s in manifest["setups"]:
            for r in store.iter_runs(s["name"], s["hash"], manifest["evaluator_id"]):
                if r.item_id not in items:
                    continue
                score = 0.0 if r.error is not None else r.score
                row = {
                    "setup": r.setup,
                    "item_id": r.item_id,
                    "sample": r.sample,
                    "answer": r.answer,
                    "score": score,
                    "score_detail": r.detail,
                    "cost_usd": r.cost_usd,
                    "cost_usd_max": r.cost_usd_max,
                    "unknown_usage_attempts": r.unknown_usage_attempts,
                    "latency_s": r.latency_s,
                    "tokens": r.tokens,
                    "calls": r.n_calls,
                    "error": r.error,
                }
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    tmp.replace(path)


def write_outputs(out: Path, summary: Summary, store: Store, manifest: dict[str, Any]) -> list[str]:
    """Write every output file; returns the notes it added to ``summary.notes`` (e.g. no matplotlib)."""
    out.mkdir(parents=True, exist_ok=True)
    png_path = out / "pareto.png"
    note = pareto_png(summary, png_path)
    added = [note] if note else []
    summary.notes.extend(added)
    png = png_path.read_bytes() if note is None and png_path.exists() else None
    write_results(store, manifest, out / "results.jsonl")
    (out / "summary.json").write_text(json.dumps(summary.to_dict(), indent=2) + "\n", encoding="utf-8")
    (out / "report.md").write_text(
        markdown_report(summary, png="pareto.png" if png else None), encoding="utf-8"
    )
    (out / "report.html").write_text(html_report(summary, png), encoding="utf-8")
    return added
