"""Scoring an answer to an item in a compiled or non-Python language: find the toolchain, choose
the answer's code, assemble it with the item's tests (MultiPL-E or generic layout), compile and run
it in the sandbox, and turn the verdict into a ``Score``."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from moa.eval.datasets import Item
from moa.eval.languages.build import CompileLimitReached, RunLimits, compile_and_run
from moa.eval.languages.extract import extract_language_code
from moa.eval.languages.generic import assemble_generic
from moa.eval.languages.multiple import assemble_multiple
from moa.eval.languages.program import Program
from moa.eval.languages.toolchains import find_toolchain
from moa.eval.types import Score

__all__ = ["MULTIPLE", "language_program", "score_in_language"]

#: ``Item.meta["format"]`` of an item read from a MultiPL-E file
MULTIPLE = "multiple"

_log = logging.getLogger(__name__)
_warned: set[str] = set()


def language_program(answer: str, item: Item, language: str) -> Program | str | None:
    """The program running ``answer``'s code against ``item``'s tests; a line naming the answer's
    fault when it cannot run; ``None`` when the item has no tests."""
    if item.test is None and not item.tests:
        return None
    entry = item.entry_point
    code = extract_language_code(answer, language, entry_point=entry)
    if code is None:
        return "no code found in the answer"
    if item.test is not None and item.meta.get("format") == MULTIPLE:
        prompt = str(item.meta.get("prompt", item.input))
        stops = item.meta.get("stop_tokens") or ()
        stop_tokens: Sequence[str] = (
            [s for s in stops if isinstance(s, str)] if isinstance(stops, list) else ()
        )
        return assemble_multiple(language, code, prompt, item.test, stop_tokens, entry)
    if item.test is not None:
        return assemble_generic(language, code, program=item.test, entry=entry)
    return assemble_generic(language, code, lines=item.tests or (), entry=entry)


async def score_in_language(answer: str, item: Item, language: str, limits: RunLimits) -> Score:
    """1.0 when the answer's code in ``language`` passes the item's tests, else 0 with the reason;
    ``CompileLimitReached`` naming the item when its compile was stopped by the compile limits."""
    toolchain = find_toolchain(language)
    if isinstance(toolchain, str):
        if language not in _warned:
            _warned.add(language)
            _log.warning("execution: %s; every %s item scores 0", toolchain, language)
        return Score(0.0, toolchain)
    program = language_program(answer, item, language)
    if program is None:
        return Score(0.0, "item has no tests")
    if isinstance(program, str):
        return Score(0.0, program)
    try:
        verdict = await compile_and_run(program, toolchain, limits)
    except CompileLimitReached as e:
        raise CompileLimitReached(f"item `{item.id}`: {e}") from None
    return Score(1.0 if verdict.passed else 0.0, verdict.reason)
