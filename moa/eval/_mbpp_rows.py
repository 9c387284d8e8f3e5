"""MBPP rows: the original's task in ``text`` or the sanitized set's in ``prompt``, its ``test_list``
of assert lines, and the setup each test runs after."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from moa.eval._row_fields import (
    RowFields,
    RowProblem,
    opt_str,
    prompt_text,
    required_str,
    str_list,
    test_code,
)

__all__ = ["MBPP_TESTS_LINE", "is_mbpp_row", "read_mbpp_row"]

#: what MBPP's prompt says before its tests (the benchmark's own wording, Austin et al. 2021)
MBPP_TESTS_LINE = "Your code should pass these tests:"


def is_mbpp_row(row: Mapping[str, Any]) -> bool:
    """An MBPP row: its task in `text` (the original) or `prompt` (sanitized), its `test_list`."""
    return "test_list" in row and ("text" in row or "prompt" in row)


def read_mbpp_row(row: Mapping[str, Any]) -> RowFields:
    """An MBPP row: the task, then its tests, as MBPP's prompt shows them (the tests name the function
    to write); each test runs with the row's setup (`test_setup_code`, sanitized MBPP's
    `test_imports`) before it. `challenge_test_list` is not run, as MBPP's own scoring does not."""
    key = "text" if row.get("prompt") is None else "prompt"
    task = prompt_text(required_str(row, key), key)
    tests = str_list(row, "test_list") or []
    if not tests:
        raise RowProblem("`test_list` is empty: there is nothing to run the answers against")
    for i, line in enumerate(tests):
        test_code(line, f"test_list[{i}]")
    setup = [opt_str(row, "test_setup_code") or "", *(str_list(row, "test_imports") or [])]
    prelude = "\n".join(line for line in setup if line.strip())
    shown = "\n".join(tests)
    return RowFields(
        input=f"{task.strip()}\n{MBPP_TESTS_LINE}\n\n{shown}",
        tests=[f"{prelude}\n{t}" if prelude else t for t in tests],
    )
