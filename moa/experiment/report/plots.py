"""The report's plot: ``pareto.png``, cost (x) against quality (y) with the Pareto front. matplotlib
is optional (the ``report`` extra): without it the plot is skipped with a note.

The x axis is in the summary's cost basis (``cost × single``, or ``tokens × single`` when the baseline
cost $0) and starts at 0. Labels are placed one by one, each at the first offset from its point where
it overlaps no label placed before it, so setups at the same point stay readable.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from moa.experiment.analysis.summary import SetupSummary, Summary
from moa.experiment.report.files import replacing

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.backends.backend_agg import RendererAgg
    from matplotlib.figure import Figure
    from matplotlib.transforms import Bbox

__all__ = ["pareto_figure", "pareto_png"]

_MISSING = "matplotlib is not installed: pareto.png skipped (pip install 'moa-sdk[report]')"
#: vertical label offsets tried in turn (points from the marker): near first, then further away
_DY = [4.0 + 11.0 * ((k + 1) // 2) * (-1 if k % 2 else 1) for k in range(40)]


def _x_of(summary: Summary, points: Sequence[SetupSummary]) -> tuple[list[float], str]:
    """Each point's x and the axis label, in the summary's cost basis."""
    if summary.cost_basis == "tokens":
        if all(s.token_ratio is not None for s in points):
            return [s.token_ratio or 0.0 for s in points], "tokens × single (baseline = 1)"
        return [s.tokens_per_item or 0.0 for s in points], "tokens per item"
    if all(s.cost_ratio is not None for s in points):
        return [s.cost_ratio or 0.0 for s in points], "cost × single (baseline = 1)"
    return [s.cost_per_item_usd or 0.0 for s in points], "cost per item (USD)"


def pareto_figure(summary: Summary) -> Figure | str:
    """The plot as a matplotlib ``Figure`` (laid out, labels placed), or a one-line note saying why
    there is none."""
    try:
        # imported here, not at the top: matplotlib is optional and slow to import
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return _MISSING
    points = [s for s in summary.setups if s.quality is not None and s.quality_ci95 is not None]
    if not points:
        return "no setup has a quality yet: pareto.png skipped"
    xs, xlabel = _x_of(summary, points)
    fig = Figure(figsize=(6.4, 4.4), dpi=110)
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for s, x in zip(points, xs, strict=True):
        q = s.quality or 0.0
        lo, hi = s.quality_ci95 or [q, q]
        ax.errorbar(
            [x],
            [q],
            yerr=[[max(q - lo, 0.0)], [max(hi - q, 0.0)]],
            fmt="*" if s.is_baseline else "o",
            color="tab:red" if s.pareto else "tab:gray",
            capsize=3,
            markersize=12 if s.is_baseline else 7,
        )
    front = sorted((x, s.quality or 0.0) for s, x in zip(points, xs, strict=True) if s.pareto)
    if len(front) > 1:
        ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="tab:red", linewidth=1)
    top = max(xs)
    ax.set_xlim(0.0, top * 1.25 if top > 0 else 1.0)
    ax.set_xlabel(xlabel)
    # names are the user's, shown as written: "$...$" in one is a price, not mathtext (a bad formula
    # raised while drawing and took the whole report down)
    ax.set_ylabel(f"quality ({summary.evaluator.get('name')}) with 95% CI", parse_math=False)
    compared = summary.compared_items
    # an unfinished experiment's points rest on the items every setup ran: the title says how many
    part = (
        "" if compared is None or compared >= summary.n_items else f", {compared} of {summary.n_items} items"
    )
    ax.set_title(f"{summary.experiment} (red = Pareto-optimal{part})", parse_math=False)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    ax.set_ylim(ax.get_ylim())  # fixed before labels are measured against the data coordinates
    _place_labels(ax, canvas.get_renderer(), points, xs)  # type: ignore[no-untyped-call]
    return fig


def _place_labels(
    ax: Axes, renderer: RendererAgg, points: Sequence[SetupSummary], xs: Sequence[float]
) -> None:
    """Annotate each point with its setup's name at the first offset where the label stays inside
    the figure and overlaps no label placed before it; a label moved away from its point gets a
    thin line to it."""
    from matplotlib.text import Text

    fig_box = ax.figure.bbox
    mid = sum(ax.get_xlim()) / 2
    placed: list[Bbox] = []
    order = sorted(range(len(points)), key=lambda i: (xs[i], -(points[i].quality or 0.0)))
    for i in order:
        s, x = points[i], xs[i]
        xy = (x, s.quality or 0.0)
        left = x > mid  # labels of points on the right half go to their left, inside the axes
        dx = -8.0 if left else 8.0
        text = s.name + (" (baseline)" if s.is_baseline else "")
        style = {
            "textcoords": "offset points",
            "ha": "right" if left else "left",
            "fontsize": 8,
            "parse_math": False,
        }
        probe = ax.annotate(text, xy, xytext=(dx, _DY[0]), **style)  # type: ignore[arg-type]
        for dy in _DY:
            probe.xyann = (dx, dy)
            probe.update_positions(renderer)  # the text's place follows xyann only once updated
            box = Text.get_window_extent(probe, renderer)
            inside = (
                fig_box.x0 <= box.x0
                and box.x1 <= fig_box.x1
                and fig_box.y0 <= box.y0
                and box.y1 <= fig_box.y1
            )
            if inside and not any(box.overlaps(b) for b in placed):
                break
        placed.append(box)
        if probe.xyann[1] != _DY[0]:
            probe.remove()
            ax.annotate(
                text,
                xy,
                xytext=(dx, dy),
                arrowprops={"arrowstyle": "-", "color": "0.6", "linewidth": 0.6, "shrinkA": 1, "shrinkB": 4},
                **style,  # type: ignore[arg-type]
            )


def pareto_png(summary: Summary, path: Path) -> str | None:
    """Draw cost (x, from 0) vs quality (y) with CI bars to ``path``; ``None`` when done, else a
    one-line note. A plot that cannot be drawn removes the one already at ``path``: it is an earlier
    report's, and beside this report it would show another run's figures."""
    fig = pareto_figure(summary)
    if isinstance(fig, str):
        try:
            path.unlink()
        except FileNotFoundError:
            return fig
        return f"{fig}; the {path.name} of an earlier report was removed"
    with replacing(path, binary=True) as f:
        fig.savefig(f, format="png")
    return None
