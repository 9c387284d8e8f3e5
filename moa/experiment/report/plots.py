"""The report's plot: ``pareto.png``, cost (x) against quality (y) with the Pareto front. matplotlib
is optional (the ``report`` extra): without it the plot is skipped with a note."""

from __future__ import annotations

from pathlib import Path

from moa.experiment.analysis.summary import Summary

__all__ = ["pareto_png"]


def pareto_png(summary: Summary, path: Path) -> str | None:
    """Draw cost ratio (x) vs quality (y) with CI bars; ``None`` when done, else a one-line note."""
    try:
        # imported here, not at the top: matplotlib is optional and slow to import
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
