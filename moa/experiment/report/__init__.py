"""The report phase: the terminal table, ``report.md``, ``report.html`` and ``pareto.png`` from a
``Summary``, and every file of the experiment folder.

``text`` (tables and text in every format), ``plots`` (the optional matplotlib plot), ``outputs``
(writing the folder's files).
"""

from __future__ import annotations

from moa.experiment.report.outputs import write_outputs, write_results
from moa.experiment.report.plots import pareto_png
from moa.experiment.report.text import (
    format_table,
    html_report,
    markdown_report,
    print_notes,
    print_table,
    quality_notes,
    quality_sections,
)

__all__ = [
    "format_table",
    "html_report",
    "markdown_report",
    "pareto_png",
    "print_notes",
    "print_table",
    "quality_notes",
    "quality_sections",
    "write_outputs",
    "write_results",
]
