"""The report's quality sections, shared by report.md, report.html and the terminal notes: the pairwise
judge (win/tie/loss, judge score, Bradley–Terry), pass@k, failure reasons and power."""

from __future__ import annotations

from dataclasses import dataclass, field

from moa.experiment.summary import SetupSummary, Summary

__all__ = ["Section", "quality_notes", "quality_sections"]


@dataclass(frozen=True, slots=True)
class Section:
    """A titled table (``headers`` + ``rows``) and/or bullet lines."""

    title: str
    headers: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    bullets: list[str] = field(default_factory=list)


def _ci(v: list[float] | None, fmt: str = ".3f") -> str:
    return "—" if v is None else f"[{v[0]:{fmt}}, {v[1]:{fmt}}]"


def _bt(s: SetupSummary) -> str:
    if s.bt_rating is None:
        return "—"
    return f"{s.bt_rating:.0f} {_ci(s.bt_ci95, '.0f')}" + (" (anchor)" if s.is_baseline else "")


def _judge_section(summary: Summary) -> Section | None:
    if not any(s.judge is not None or s.bt_rating is not None for s in summary.setups):
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
            rows.append(
                [s.name, "—", "—", "—", "—", "0.500 (baseline)" if s.is_baseline else "—", _bt(s), "—"]
            )
            continue
        rows.append(
            [
                s.name,
                str(j.wins),
                str(j.ties) + (f" ({j.no_verdict} without a verdict)" if j.no_verdict else ""),
                str(j.losses),
                f"{j.win_rate:.3f}",
                f"{j.score:.3f} {_ci(j.score_ci95)}",
                _bt(s),
                f"{s.judge_cost_usd:.6f}",
            ]
        )
    bullets = [
        "Each setup's answer is judged against the baseline's on the same item in both orders; "
        "inconsistent verdicts count as a tie. Judge score: 1 = much better, 0.5 = parity, 0 = much worse.",
        "Bradley–Terry ratings (ties as half wins) on an Elo-like scale with the baseline at 1000; every "
        "setup is judged against the baseline only (a star design), so ratings between two setups rest "
        "on their comparisons with the baseline.",
    ]
    return Section(f"Judge (pairwise against `{summary.baseline}`)", headers, rows, bullets)


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
            out.append(
                f"{s.name} vs {summary.baseline} (judge): {j.wins} wins, {j.ties} ties"
                + (f" ({j.no_verdict} without a verdict)" if j.no_verdict else "")
                + f", {j.losses} losses; "
                f"judge score {j.score:.3f} {_ci(j.score_ci95)}; BT {_bt(s)}"
            )
        if s.pass_at_k and (s.samples > 1 or summary.evaluator.get("name") == "execution"):
            out.append(f"{s.name}: " + ", ".join(f"pass@{k} {v:.3f}" for k, v in s.pass_at_k.items()))
        if s.failure_reasons:
            out.append(
                f"{s.name}: failures: " + ", ".join(f"{f['reason']} ×{f['count']}" for f in s.failure_reasons)
            )
        if s.power_note:
            out.append(f"{s.name}: {s.power_note}")
    return out
