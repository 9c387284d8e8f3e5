"""``moa compare`` and ``moa report``. Only argparse at the top: the experiment machinery (asyncio,
pydantic, SQLite, the topology loader) is imported when a command runs, so ``moa --help`` and the
other commands do not pay for it."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

from moa._argtypes import usd

__all__ = ["add_parsers"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _executor(text: str) -> str:
    from moa.experiment.executors.names import check_executor  # lazy: see the module docstring

    try:
        return check_executor(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _compare(args: argparse.Namespace) -> int:
    from moa.experiment.experiment import Experiment  # lazy: see the module docstring
    from moa.gc_tuning import tune_gc_for_long_runs

    exp = Experiment.from_file(
        args.experiment,
        out=args.out,
        progress=not args.no_progress,
        echo=True,
        concurrency=args.concurrency,
        limit=args.limit,
        budget_usd=args.budget_usd,
        samples=args.samples,
        executor=args.executor,
    )
    if args.tune_cascade is not None:
        from moa.experiment.tune import tune_override

        exp.spec = tune_override(exp.spec, args.tune_cascade)
    if args.dry_run:
        print("\n".join(exp.plan().lines()))
        return 0
    terminated: list[int] = []
    try:
        # tuned once the experiment file and its topologies are loaded, so they are frozen too
        with tune_gc_for_long_runs(), _sigterm_as_interrupt(terminated):
            summary = exp.run()
    except KeyboardInterrupt:
        _say(
            f"moa: {'terminated' if terminated else 'interrupted'}; finished pairs are kept in {exp.out}: "
            "run the same command to resume",
            "compare.interrupted",
            out=str(exp.out),
        )
        return 143 if terminated else 130
    # pareto.png is drawn only with matplotlib (the `report` extra): name what is there
    written = [f for f in _REPORT_FILES if (Path(exp.out) / f).is_file()]
    _say(
        f"moa: reports written to {exp.out}/ ({', '.join(written)})",
        "compare.reports",
        out=str(exp.out),
        files=written,
    )
    return 0 if summary.complete else 1


@contextlib.contextmanager
def _sigterm_as_interrupt(seen: list[int]) -> Iterator[None]:
    """SIGTERM (``kill``, ``timeout``, a container or a batch job stopped) stops the run as Ctrl-C
    does: its calls cut off in flight are booked at their worst case and the stop is one line. Left
    to its default, it ended the process at once, silently, and a resumed budget missed those calls."""

    def stop(signum: int, frame: FrameType | None) -> None:
        seen.append(signum)
        on_int = signal.getsignal(signal.SIGINT)  # asyncio's own while the loop runs: it cancels
        if callable(on_int):
            on_int(signal.SIGINT, frame)
        else:  # Ctrl-C ignored (a job started with `&`): interrupt all the same
            raise KeyboardInterrupt

    try:
        before = signal.signal(signal.SIGTERM, stop)
    except ValueError:  # not the main thread (`main()` called from a thread): left as it is
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


def _say(line: str, event: str, **fields: Any) -> None:
    """A closing line on stderr, or, with moa's logging on (``--log json``), one more event in the
    log's format: a plain line among the JSON events breaks every reader of JSON lines."""
    from moa import log

    lg = log.info_logger()
    if lg is None:
        print(line, file=sys.stderr)
    else:
        lg.info(event, **fields)


_REPORT_FILES = ("report.md", "report.html", "pareto.png", "summary.json", "results.jsonl")


def _report(args: argparse.Namespace) -> int:
    # lazy: see the module docstring
    import asyncio

    from moa.errors import BaselineFailed, UserError
    from moa.experiment.analysis.summary import baseline_problem
    from moa.experiment.experiment import rebuild_report
    from moa.experiment.report.text import print_table

    summary = asyncio.run(rebuild_report(args.dir))
    print_table(summary)
    problem = baseline_problem(summary)
    if problem:
        # as `moa compare` ends on the same store: a line saying why, and exit 1 when the runs failed
        base = summary.setup(summary.baseline)
        raise (BaselineFailed if base.runs and base.errors >= base.runs else UserError)(
            f"{args.dir}: {problem}"
        )
    return 0


def add_parsers(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Add ``compare`` and ``report`` to the ``moa`` command."""
    c = subparsers.add_parser(
        "compare",
        help="run setups and a baseline over a dataset; resumable; writes the report",
        description="Run every (setup, item) pair of an experiment file, score the answers, and compare "
        "each setup with the baseline. Re-running with the same --out resumes without resending requests.",
    )
    c.add_argument("experiment", metavar="EXPERIMENT.yaml", help="the experiment file")
    c.add_argument("--out", metavar="DIR", help="output folder (default: moa-results/<name>)")
    c.add_argument("--concurrency", type=_positive_int, metavar="N", help="runs in flight at once")
    c.add_argument("--limit", type=_positive_int, metavar="N", help="use only the first N items")
    c.add_argument("--budget-usd", type=usd, metavar="X", help="hard cap on the experiment's spend")
    c.add_argument(
        "--samples", type=_positive_int, metavar="K", help="runs per (setup, item) pair; reports pass@1..K"
    )
    c.add_argument(
        "--executor",
        type=_executor,
        metavar="WHERE",
        help="where local-model runs and execution scoring run: local, dask (a cluster on this machine) "
        "or tcp://HOST:PORT; API calls stay here",
    )
    c.add_argument(
        "--tune-cascade",
        metavar="SETUP",
        help="sweep cascade SETUP's accept threshold on a dev split; report the cheapest settings "
        "reaching 50/80/95%% of the mixture's gain on the rest (tune.json)",
    )
    c.add_argument(
        "--dry-run",
        action="store_true",
        help="check everything a run checks and print what it would send (items, evaluator, calls per "
        "setup, the first prompt); no call, no store",
    )
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.set_defaults(func=_compare)
    r = subparsers.add_parser(
        "report",
        help="rebuild the report from a stored experiment",
        description="Rebuild summary.json, results.jsonl, report.md, report.html and pareto.png from "
        "DIR/experiment.sqlite alone (no model call).",
    )
    r.add_argument("dir", metavar="DIR", help="an experiment output folder")
    r.set_defaults(func=_report)
