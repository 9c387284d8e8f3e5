"""HumanEval-layout items scored as the official harness and evalplus score them: every shape of a
correct answer passes, every shape of a wrong one fails, and a failure names the answer's fault."""

from __future__ import annotations

import ast
import json
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from moa.eval.datasets import Item, load_dataset
from moa.eval.execution import score_execution_async

FIXTURE = Path(__file__).parent / "fixtures" / "humaneval" / "problems.jsonl"
ROWS: list[dict[str, Any]] = [json.loads(line) for line in FIXTURE.read_text().splitlines()]
ITEMS: dict[str, Item] = {item.id: item for item in load_dataset(FIXTURE, format="humaneval")}
LIMITS: dict[str, Any] = {"timeout_s": 10, "cpu_s": 5, "memory_mb": 256}


def _entry_def(row: dict[str, Any]) -> tuple[str, ast.FunctionDef]:
    """The prompt's lines of the entry point (decorators, signature, docstring) and its node."""
    tree = ast.parse(row["prompt"])
    node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == row["entry_point"])
    start = min([node.lineno, *(d.lineno for d in node.decorator_list)])
    lines = row["prompt"].splitlines(keepends=True)[start - 1 : node.end_lineno]
    return "".join(lines), node


def _function(row: dict[str, Any], body: str) -> str:
    """Only the entry-point function, as a chat answer writes it: no imports, no prompt helpers."""
    return _entry_def(row)[0] + body


def _chat(row: dict[str, Any], body: str, tag: str = "python") -> str:
    return (
        "Sure! Here is an implementation:\n\n"
        f"```{tag}\n{_function(row, body)}```\n\n"
        "It walks the input once, so it runs in linear time."
    )


def _several(row: dict[str, Any], body: str) -> str:
    """A discarded draft, the final function, a shell block and an output block: the last block
    defining the entry point is the answer."""
    draft = _entry_def(row)[0] + "    raise NotImplementedError\n"
    return (
        f"A first sketch:\n```python\n{draft}```\nBetter:\n```python\n{_function(row, body)}```\n"
        "Run it with\n```bash\npython solution.py\n```\nwhich prints\n```text\nok\n```\n"
    )


def _joined(row: dict[str, Any], body: str) -> str:
    """The work in a helper defined in its own block, the entry point in another."""
    head, node = _entry_def(row)
    params = ", ".join(a.arg for a in node.args.args)
    signature = head.split('"""')[0]  # decorators and the def line
    helper = f"def _solve({params}):\n{body}"
    main = f"{signature}    return _solve({params})\n"
    return f"A helper first:\n```python\n{helper}```\nthen the function:\n```python\n{main}```\n"


def _in_list_item(row: dict[str, Any], body: str, indent: int) -> str:
    """The fenced function inside a numbered list item, fence and code indented by ``indent``."""
    block = textwrap.indent(f"```python\n{_function(row, body)}```\n", " " * indent)
    return f"1. Implement it:\n\n{block}2. Run the tests.\n"


def _cut(text: str, parses: Callable[[str], bool]) -> str:
    """``text`` cut off (as by ``max_tokens``) at the first point past its middle where it no
    longer parses."""
    return next(text[:k] for k in range(len(text) // 2, len(text)) if not parses(text[:k]))


def _parses(source: str) -> bool:
    try:
        ast.parse(source)
    except SyntaxError:
        return False
    return True


SHAPES: dict[str, Callable[[dict[str, Any], str], str]] = {
    "completion": lambda row, body: body,
    "prompt+body": lambda row, body: row["prompt"] + body,
    "chat": _chat,
    "chat-python3": lambda row, body: _chat(row, body, "python3"),
    "chat-py": lambda row, body: _chat(row, body, "py"),
    "chat-untagged": lambda row, body: _chat(row, body, ""),
    "several-blocks": _several,
    "joined-blocks": _joined,
    "list-item-3": lambda row, body: _in_list_item(row, body, 3),
    "list-item-4": lambda row, body: _in_list_item(row, body, 4),
    "unfenced-then-prose": lambda row, body: _function(row, body) + "\nThis runs in linear time.\n",
    "completion-then-prose": lambda row, body: body + "\nThis walks the input once.\n",
}

TRUNCATED: dict[str, Callable[[dict[str, Any], str], str]] = {
    "completion": lambda row, body: _cut(body, lambda b: _parses(row["prompt"] + b)),
    "prompt+body": lambda row, body: _cut(row["prompt"] + body, _parses),
    "chat": lambda row, body: "Here:\n```python\n" + _cut(_function(row, body), _parses),
}


def _cases() -> list[Any]:
    return [
        pytest.param(row["task_id"], shape, id=f"{row['task_id']}-{shape}")
        for row in ROWS
        for shape in SHAPES
    ]


def test_fixture_is_humaneval_shaped() -> None:
    """The fixture holds at least 20 problems with imports, prompt helpers and typed signatures."""
    assert len(ROWS) >= 20 and len(ITEMS) == len(ROWS)
    assert sum("import" in r["prompt"] for r in ROWS) >= 15
    helpers = [
        r for r in ROWS if len([n for n in ast.parse(r["prompt"]).body if isinstance(n, ast.FunctionDef)]) > 1
    ]
    assert len(helpers) >= 4


@pytest.mark.parametrize(("task_id", "shape"), _cases())
async def test_correct_answer_passes_in_every_shape(task_id: str, shape: str) -> None:
    """A correct solution passes whatever shape the answer gives it."""
    row = next(r for r in ROWS if r["task_id"] == task_id)
    score = await score_execution_async(
        SHAPES[shape](row, row["canonical_solution"]), ITEMS[task_id], **LIMITS
    )
    assert (score.value, score.detail) == (1.0, "passed")


@pytest.mark.parametrize(("task_id", "shape"), _cases())
async def test_wrong_answer_fails_in_every_shape(task_id: str, shape: str) -> None:
    """A wrong solution fails in every shape, with the failed assertion as the reason."""
    row = next(r for r in ROWS if r["task_id"] == task_id)
    score = await score_execution_async(SHAPES[shape](row, row["wrong_solution"]), ITEMS[task_id], **LIMITS)
    assert score.value == 0.0 and (score.detail or "").startswith("tests failed: AssertionError"), score


@pytest.mark.parametrize("shape", list(TRUNCATED))
@pytest.mark.parametrize("task_id", [r["task_id"] for r in ROWS])
async def test_cut_off_answer_is_a_syntax_error_of_the_answer(task_id: str, shape: str) -> None:
    """Code cut off by max_tokens fails as the answer's syntax error, not as "no code found"."""
    row = next(r for r in ROWS if r["task_id"] == task_id)
    score = await score_execution_async(
        TRUNCATED[shape](row, row["canonical_solution"]), ITEMS[task_id], **LIMITS
    )
    assert score.value == 0.0 and (score.detail or "").startswith(
        "the answer's code does not parse: line "
    ), score


ROW = ROWS[0]  # sum_even(numbers: List[int]) -> int, after `from typing import List`
ITEM = ITEMS[ROW["task_id"]]


async def test_syntax_error_is_counted_in_the_answers_lines() -> None:
    """The line of a syntax error is the line of the answer's code, not of the assembled program."""
    answer = "```python\ndef sum_even(numbers):\n    total = 0\n    for n in numbers\n        total += n\n```"
    score = await score_execution_async(answer, ITEM, **LIMITS)
    assert (score.detail or "").startswith("the answer's code does not parse: line 3: "), score
    body = "    total = 0\n    return total +\n"
    score = await score_execution_async(body, ITEM, **LIMITS)
    assert (score.detail or "").startswith("the answer's code does not parse: line 2: "), score


async def test_undefined_name_is_the_answers_fault() -> None:
    """A name the answer uses and nobody defines fails with the NameError naming it."""
    answer = "```python\ndef sum_even(numbers: List[int]) -> int:\n    return foo(numbers)\n```"
    score = await score_execution_async(answer, ITEM, **LIMITS)
    assert (score.value, score.detail) == (0.0, "error: NameError: name 'foo' is not defined")


async def test_answer_defining_another_function_says_so() -> None:
    """Code that never defines the entry point fails naming the missing function."""
    score = await score_execution_async("```python\ndef total(xs):\n    return sum(xs)\n```", ITEM, **LIMITS)
    assert (score.value, score.detail) == (0.0, "the answer's code does not define `sum_even`")


async def test_prose_without_code() -> None:
    """An answer without code scores 0 as having no code."""
    score = await score_execution_async("I would add up the even numbers.", ITEM, **LIMITS)
    assert (score.value, score.detail) == (0.0, "no code found in the answer")


async def test_unindented_body_in_a_fence_is_indented() -> None:
    """A body written at column 0 in a fence runs as the function's body."""
    answer = "```python\nreturn sum(n for n in numbers if n % 2 == 0)\n```"
    score = await score_execution_async(answer, ITEM, **LIMITS)
    assert (score.value, score.detail) == (1.0, "passed")


async def test_prose_then_unfenced_function() -> None:
    """Prose followed by an unfenced function: the code from its definition on is run."""
    answer = (
        "Here is the function:\n\ndef sum_even(numbers):\n    return sum(n for n in numbers if n % 2 == 0)\n"
    )
    score = await score_execution_async(answer, ITEM, **LIMITS)
    assert (score.value, score.detail) == (1.0, "passed")


async def test_answer_redefining_a_prompt_helper_wins() -> None:
    """The answer's code runs after the prompt's preamble, so its own helper replaces the prompt's."""
    row = next(r for r in ROWS if r["entry_point"] == "count_primes")
    answer = (
        "```python\ndef is_prime(n):\n    return False\n\n\n"
        f"def count_primes(n: int) -> int:\n{row['canonical_solution']}```"
    )
    score = await score_execution_async(answer, ITEMS[row["task_id"]], **LIMITS)
    assert score.value == 0.0 and (score.detail or "").startswith("tests failed: AssertionError")


async def test_error_found_only_when_compiling_is_counted_in_the_answers_lines() -> None:
    """A compile-time error (parses, does not compile) names the answer's line, as a parse error does."""
    answer = "```python\ndef sum_even(numbers):\n    nonlocal total\n    return 0\n```"
    score = await score_execution_async(answer, ITEM, **LIMITS)
    assert score.value == 0.0
    assert (score.detail or "").startswith("the answer's code does not compile: line 2: "), score


async def test_broken_tests_are_the_items_fault() -> None:
    """Tests that do not compile are blamed on the item, not on the answer."""
    item = ITEM.model_copy(update={"test": "def check(candidate):\n    nonlocal x\n"})
    score = await score_execution_async(ROW["canonical_solution"], item, **LIMITS)
    assert score.value == 0.0 and (score.detail or "").startswith("the item's tests do not compile: "), score


async def test_hostile_answer_shapes_end_in_one_line() -> None:
    """Thousands of fenced blocks and code nested past the parser's limits each end in one clear line."""
    blocks = "".join(f"```python\ndef h{i}(x):\n    return h{i + 1}(x)\n```\n" for i in range(3000))
    many = blocks + "```python\ndef sum_even(numbers):\n    return h0(numbers)\n```"
    score = await score_execution_async(many, ITEM, **LIMITS)
    assert score.value == 0.0 and "\n" not in (score.detail or "")
    deep = "```python\ndef sum_even(numbers):\n    return " + "(" * 100_000 + "\n```"
    score = await score_execution_async(deep, ITEM, **LIMITS)
    assert score.value == 0.0 and (score.detail or "").startswith("the answer's code does not parse: ")


@pytest.mark.parametrize(
    ("answer", "passes"),
    [
        ("  total = 0\n  for n in numbers:\n    if n % 2 == 0:\n      total += n\n  return total\n", True),
        ("\ttotal = 0\n\tfor n in numbers:\n\t\tif n % 2 == 0:\n\t\t\ttotal += n\n\treturn total\n", True),
        ("```python\n  return sum(n for n in numbers if n % 2 == 0)\n```", True),
        ("  total = 0\n  for n in numbers:\n    total += n\n  return total\n", False),
    ],
    ids=["two-spaces", "tabs", "fenced-two-spaces", "two-spaces-wrong"],
)
async def test_body_indented_its_own_way_runs_as_the_body(answer: str, passes: bool) -> None:
    """A function body indented with 2 spaces or tabs under a prompt indented with 4 is still the
    body (the official harness fails it on the prompt's indentation, not on the answer)."""
    score = await score_execution_async(answer, ITEM, **LIMITS)
    if passes:
        assert (score.value, score.detail) == (1.0, "passed")
    else:
        assert score.value == 0.0 and (score.detail or "").startswith("tests failed: AssertionError"), score


async def test_body_with_inconsistent_indentation_is_still_its_syntax_error() -> None:
    body = "    total = 0\n      return total\n"
    score = await score_execution_async(body, ITEM, **LIMITS)
    assert (score.detail or "").startswith("the answer's code does not parse: line 2: "), score
