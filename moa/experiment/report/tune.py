"""The "Cascade tuning" section of ``report.md`` and its terminal table, from ``tune.json``.

The section is the report's last: ``add_tune_section`` replaces an earlier one rather than adding a
second, so the tuning (which runs after the report is written) and ``moa report`` (which rewrites
the report from the store) leave one section, whichever wrote last.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from moa.experiment.analysis.tuning import Choice, TuneResult
from moa.experiment.report.files import replacing

__all__ = ["TITLE", "add_tune_section", "format_tune_table", "read_tune", "tune_markdown"]

TITLE = "## Cascade tuning"
_HEADERS = ("target", "setting", "quality [95% CI]", "vs mixture", "cost/item", "saving vs MoA", "escalated")


def _pct(v: float | None) -> str:
    return "—" if v is None else f"{100 * v:.0f}%"


def _ci(v: Sequence[float] | None, fmt: str) -> str:
    return "—" if v is None else f"[{v[0]:{fmt}}, {v[1]:{fmt}}]"


def _cost(known: float, bound: float | None) -> str:
    """A cost, with its bound when calls of unknown usage (cut off after they were sent) may add to it."""
    text = f"${known:.6f}"
    if bound is not None and bound > known * (1 + 1e-9) + 1e-12:
        text += f" (up to ${bound:.6f})"
    return text


def _choice_row(c: Choice) -> list[str]:
    saving = "—" if c.cost_saving is None else f"{100 * c.cost_saving:.0f}%"
    if c.cost_saving_ci95 is not None:
        lo, hi = c.cost_saving_ci95
        saving += f" [{100 * lo:.0f}, {100 * hi:.0f}]"
    return [
        f"{_pct(c.share)} of gain" + ("" if c.reached else " (not reached)"),
        c.label,
        f"{c.quality:.3f} {_ci(c.quality_ci95, '.3f')}",
        f"{c.delta_vs_mixture:+.3f} {_ci(c.delta_vs_mixture_ci95, '+.3f')}",
        _cost(c.cost_usd, c.cost_usd_max),
        saving,
        _pct(c.escalation_rate),
    ]


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    esc = [[c.replace("|", "\\|") for c in r] for r in rows]
    return [
        "| " + " | ".join(headers) + " |",
        "|" + "|".join("---" for _ in headers) + "|",
        *("| " + " | ".join(r) + " |" for r in esc),
    ]


def _intro(t: TuneResult) -> str:
    return (
        f"`{t.setup}`, stage 1 {t.stage} (as written: {t.current}): chosen on {t.dev_items} dev items, "
        f"judged on {t.test_items} held-out items (split seed {t.seed}). Held-out quality of the single "
        f"model `{t.baseline}` {t.single_quality['test']:.3f}, of the mixture (always escalating) "
        f"{t.mixture_quality['test']:.3f}; always-MoA (the later stages alone, as the cascade runs "
        f"them) costs {_cost(t.mixture_cost_usd, t.mixture_cost_usd_max)} per item. Quality intervals are bootstrap 95% CIs; "
        "`vs mixture` is paired with always escalating. The tuning's own calls (the stages the "
        f"comparison's runs never reached) cost {_cost(t.paid_usd, t.paid_usd_max)}, in no setup's cost."
    )


def tune_markdown(t: TuneResult) -> list[str]:
    """The section's lines: the chosen settings, then the whole sweep."""
    lines = [TITLE, "", _intro(t), "", *_md_table(_HEADERS, [_choice_row(c) for c in t.choices]), ""]
    sweep = [
        [
            s.label + (" (as written)" if s.current else ""),
            f"{s.dev.quality:.3f}",
            _cost(s.dev.cost_usd, s.dev.cost_usd_max),
            f"{s.test.quality:.3f}",
            _cost(s.test.cost_usd, s.test.cost_usd_max),
            _pct(s.test.escalation_rate),
        ]
        for s in t.settings
    ]
    headers = ("setting", "dev quality", "dev cost", "held-out quality", "held-out cost", "escalated")
    lines += _md_table(headers, sweep)
    # a note may name an item, and a hostile id's line break would start a heading of its own: the
    # next rewrite then cut the section there and left its tail behind
    lines += [f"- {' '.join(n.splitlines())}" for n in t.notes]
    return lines


def format_tune_table(t: TuneResult) -> str:
    """The chosen settings as an aligned plain-text table, under a one-line title."""
    rows = [list(_HEADERS), *(_choice_row(c) for c in t.choices)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEADERS))]
    lines = [" | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "-+-".join("-" * w for w in widths))
    title = (
        f"cascade tuning of `{t.setup}` ({t.test_items} held-out items; single "
        f"{t.single_quality['test']:.3f}, mixture {t.mixture_quality['test']:.3f}; "
        f"its own calls cost {_cost(t.paid_usd, t.paid_usd_max)})"
    )
    return "\n".join([title, *lines])


def read_tune(out: Path, manifest: Mapping[str, Any]) -> TuneResult | None:
    """``out/tune.json`` if it is there, reads, and tuned a setup the manifest still holds as it is."""
    path = out / "tune.json"
    if not path.is_file():
        return None
    try:
        t = TuneResult.model_validate_json(path.read_bytes())
    except (ValidationError, OSError):
        return None  # a stale or foreign file must not break the report
    held = {(s["name"], s["hash"]) for s in manifest.get("setups", [])}
    return t if (t.setup, t.setup_hash) in held else None


def add_tune_section(report: Path, t: TuneResult) -> None:
    """Append the section to ``report`` (``report.md``), replacing one already there."""
    text = report.read_text(encoding="utf-8") if report.is_file() else ""
    start = text.find("\n" + TITLE + "\n")
    if start != -1:
        end = text.find("\n## ", start + len(TITLE) + 2)
        text = text[: start + 1] + (text[end + 1 :] if end != -1 else "")
    body = text.rstrip("\n") + "\n\n" if text.strip() else ""
    with replacing(report) as f:
        f.write(body + "\n".join(tune_markdown(t)) + "\n")
