"""The execution evaluator: extract the answer's code, assemble it with the item's tests (see
``moa.eval.program`` for HumanEval items), run it in the sandbox, and say whose fault a failure is.

Items route by ``Item.language``: Python (or none) runs here; C, C++, Go, Java, JavaScript, Rust and
TypeScript are compiled and run by ``moa.eval.languages``, the compile step under its own limits.
"""

from __future__ import annotations

import asyncio
import os
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from moa._loops import PerLoop
from moa.eval._verdict import MAX_TESTS
from moa.eval.code import extract_code
from moa.eval.datasets import Item
from moa.eval.languages.build import RunLimits
from moa.eval.languages.evaluate import score_in_language
from moa.eval.languages.names import LANGUAGES, canonical_language
from moa.eval.program import AnswerProgram, assemble
from moa.eval.sandbox import run_python_async
from moa.eval.types import Score

__all__ = [
    "ExecutionConfig",
    "ExecutionEvaluator",
    "build_test_program",
    "score_execution",
    "score_execution_async",
]

#: the ``__name__`` answers run under, so their ``if __name__ == "__main__":`` demos do not run
RUN_NAME = "__moa_solution__"


class ExecutionConfig(BaseModel):
    """Configuration of the ``execution`` evaluator (sandbox limits)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Literal["execution"] = "execution"
    timeout_s: float = Field(default=10, gt=0, allow_inf_nan=False)
    """Wall-clock limit of one run."""
    cpu_s: int = Field(default=10, ge=1)
    """CPU-seconds limit of one run."""
    memory_mb: int = Field(default=512, ge=64)
    """Address-space limit."""
    file_size_mb: int = Field(default=16, ge=0)
    """Largest file the program may write."""
    max_procs: int = Field(default=64, ge=1)
    """RLIMIT_NPROC (not enforced for root; fork is refused anyway)."""
    output_limit: int = Field(default=10_000, ge=0)
    """Bytes kept of stdout and of stderr."""
    compile_timeout_s: float = Field(default=60, gt=0, allow_inf_nan=False)
    """Wall-clock limit of one compile (C, C++, Go, Java, Rust, TypeScript)."""
    compile_memory_mb: int = Field(default=1536, ge=128)
    """Address-space limit of the compiler (Java: javac's heap, plus the JVM's reservations)."""
    html_timeout_s: float = Field(default=15, gt=0, allow_inf_nan=False)
    """HTML pages: how long the page may take to load (and then to be photographed)."""
    isolation: Literal["auto", "bwrap", "fallback"] = "auto"
    """The sandbox: bubblewrap, the weaker fallback, or bwrap when it works here (see
    ``moa.eval.isolation``)."""


def build_test_program(code: str, item: Item) -> AnswerProgram | str | None:
    """The answer's code with the item's tests; a line naming the answer's fault when it cannot
    run; ``None`` when the item has no tests.

    HumanEval (``test`` and ``entry_point``): see ``moa.eval.program.assemble``. Assert lines
    (``tests``): the code, with the lines as ``AnswerProgram.tests``, which the sandbox runs as
    steps of its own; a harness pasted after the code would look its names (``exec``, ``print``,
    ...) up in the answer's globals, where the answer could replace them and switch the tests off.
    """
    if item.test is not None and item.entry_point:
        prompt = str(item.meta.get("prompt", item.input))
        return assemble(code, prompt, item.entry_point, item.test)
    if item.tests:
        return AnswerProgram(code, 1, code.count("\n") + 1, tuple(item.tests))
    if item.test is not None:
        return AnswerProgram(f"{code}\n\n{item.test}\n", 1, code.count("\n") + 1)
    return None


_SANDBOX_SYNTAX = re.compile(r"^syntax error: line (\d+): (.*)$", re.DOTALL)
_FAILED_STEP = re.compile(r"^(tests failed|error): test (\d+) of (\d+): ")


def _reason(reason: str, program: AnswerProgram) -> str:
    """The sandbox's reason, a syntax error counted in the answer's lines when it lies there, a
    failed assert line quoted."""
    failed = _FAILED_STEP.match(reason)
    if failed is not None and 1 <= int(failed.group(2)) <= len(program.tests):
        quoted = " ".join(program.tests[int(failed.group(2)) - 1].split())
        return f"{reason[: failed.end() - 2]} `{quoted}`: {reason[failed.end() :]}"
    m = _SANDBOX_SYNTAX.match(reason)
    if m is None:
        return reason
    line = program.answer_line(int(m.group(1)))
    if line is None:
        return f"the item's tests do not compile: {reason}"
    return f"the answer's code does not compile: line {line}: {m.group(2)}"


# the limits only compiled languages use; run_python_async takes the others
_LANGUAGE_ONLY = ("compile_timeout_s", "compile_memory_mb", "html_timeout_s", "artefacts_dir")


def _run_limits(limits: dict[str, Any]) -> RunLimits:
    keys = (
        "timeout_s",
        "cpu_s",
        "memory_mb",
        "max_procs",
        "output_limit",
        "compile_timeout_s",
        "compile_memory_mb",
    )
    chosen = {k: limits[k] for k in keys if k in limits}
    return RunLimits(
        **chosen,
        file_size_mb=int(limits.get("file_size_mb", 16)),
        isolation=str(limits.get("isolation", "auto")),
    )


def renders_page(item: Item) -> bool:
    """Whether ``item`` is an HTML item: its answer is rendered, not tested."""
    return item.language is not None and canonical_language(item.language) == "html"


def too_many_tests(item: Item) -> bool:
    """Whether ``item``'s Python assert lines are more than the sandbox runs in one go: each answer
    would be paid for and then score 0."""
    python = item.language is None or canonical_language(item.language) == "python"
    return python and not (item.test is not None and item.entry_point) and len(item.tests or ()) > MAX_TESTS


def can_execute(item: Item) -> bool:
    """Whether the execution evaluator has something to run ``item``'s answer against: tests, or a
    page to render."""
    return item.test is not None or bool(item.tests) or renders_page(item)


async def score_execution_async(answer: str, item: Item, **limits: Any) -> Score:
    """1.0 when the code in ``answer`` passes all the item's tests, else 0 with the reason."""
    language = canonical_language(item.language) if item.language else "python"
    if language is None:
        runs = ", ".join(LANGUAGES)
        return Score(0.0, f"no runner for language `{item.language}` (moa runs {runs})")
    if language == "html":
        return await _score_page(answer, item, limits)
    if language != "python":
        async with _program_slot():
            return await score_in_language(answer, item, language, _run_limits(limits))
    limits = {k: v for k, v in limits.items() if k not in _LANGUAGE_ONLY}
    humaneval = item.test is not None and bool(item.entry_point)
    code = extract_code(answer, entry_point=item.entry_point if humaneval else None)
    if code is None:
        return Score(0.0, "no code found in the answer")
    program = build_test_program(code, item)
    if program is None:
        return Score(0.0, "item has no tests")
    if isinstance(program, str):
        return Score(0.0, program)
    if len(program.tests) > MAX_TESTS:
        return Score(
            0.0, f"the item has {len(program.tests)} assert lines; the sandbox runs at most {MAX_TESTS}"
        )
    async with _program_slot():
        result = await run_python_async(program.source, run_name=RUN_NAME, tests=program.tests, **limits)
    return Score(1.0 if result.passed else 0.0, _reason(result.reason, program))


def _cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# one limit per event loop (a Semaphore belongs to its loop), forgotten with it: each
# Experiment.run is a loop, and every one whose scoring queued was kept for good
_programs: PerLoop[asyncio.Semaphore] = PerLoop()


def _per_loop(slots: PerLoop[asyncio.Semaphore], size: int) -> asyncio.Semaphore:
    loop = asyncio.get_running_loop()
    slot = slots.get(loop)
    return slot if slot is not None else slots.set(loop, asyncio.Semaphore(size))


def _program_slot() -> asyncio.Semaphore:
    """At most one sandboxed program (or compile and run) per usable core at once; its time limits
    start when it starts. An experiment scores ``concurrency`` answers at once (8 by default): on
    two cores, eight correct answers whose tests need 3 CPU-seconds each all ended as
    ``timeout after 10.0s``, each given a quarter of a core."""
    return _per_loop(_programs, _cores())


#: HTML renders at once: each is a whole Chromium (150-300 MB, a core for a second or two)
_PAGES = 2
# one limit per event loop, as `_programs`
_page_slots: PerLoop[asyncio.Semaphore] = PerLoop()


async def _score_page(answer: str, item: Item, limits: dict[str, Any]) -> Score:
    """An HTML answer rendered in headless Chromium: 1 when it loads with no console error, blocked
    request or uncaught exception; the screenshot is kept under ``artefacts_dir`` when given."""
    from moa.eval.hashing import canonical_hash
    from moa.eval.html import extract_html, html_score, render_html

    page = extract_html(answer)
    if page is None:
        return Score(0.0, "no HTML page found in the answer")
    folder = limits.get("artefacts_dir")
    slots = _per_loop(_page_slots, _PAGES)
    async with slots:
        outcome = await render_html(
            page,
            artefacts_dir=Path(folder) / "html" if folder else None,
            name=f"{item.id}-{canonical_hash(answer)[:12]}",
            timeout_s=float(limits.get("html_timeout_s", 15.0)),
        )
    value, detail = html_score(outcome)
    return Score(value, detail)


def score_execution(answer: str, item: Item, **limits: Any) -> Score:
    """Synchronous ``score_execution_async`` (not from inside a running event loop)."""
    return asyncio.run(score_execution_async(answer, item, **limits))


class ExecutionEvaluator:
    """Runs the answer's code against the item's tests in the sandbox."""

    name = "execution"

    def __init__(self, config: ExecutionConfig | None = None) -> None:
        self.config = config or ExecutionConfig()
        #: where artefacts (HTML screenshots) go; an experiment points it into its --out folder
        self.artefacts_dir: Path | None = None

    async def score(self, item: Item, answer: str) -> Score:
        limits = self.config.model_dump(exclude={"name"})
        if self.artefacts_dir is not None:
            limits["artefacts_dir"] = str(self.artefacts_dir)
        return await score_execution_async(answer, item, **limits)
