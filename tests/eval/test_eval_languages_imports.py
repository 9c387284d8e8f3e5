"""JavaScript and TypeScript items and answers that take ``assert`` by an ``import`` statement
(``import * as assert from 'assert'``, ``import assert from 'assert'``, ``import { strict as
assert } from 'node:assert'``) rather than MultiPL-E's ``require``: a correct answer passes, a
wrong one fails, and an answer cannot hand the tests a fake ``assert`` through the ``require``
the import would otherwise compile to.

Under the real sandbox; a language whose toolchain is missing here is skipped with the reason.
"""

from __future__ import annotations

import pytest

from moa.eval.datasets import Item
from moa.eval.execution import score_execution_async
from moa.eval.languages.toolchains import find_toolchain

LIMITS = {"timeout_s": 20.0, "memory_mb": 256}

IMPORTS = (
    "import * as assert from 'assert';",
    "import assert from 'assert';",
    "import { strict as assert } from 'node:assert';",
    'import * as assert from "node:assert";',
)

_ANSWERS = {
    "correct": "function gcd(a: number, b: number): number {\n  return b === 0 ? a : gcd(b, a % b);\n}",
    "wrong": "function gcd(a: number, b: number): number {\n  return a + b;\n}",
}


def _skip_without(language: str) -> None:
    found = find_toolchain(language)
    if isinstance(found, str):
        pytest.skip(found)


def _answer(language: str, code: str) -> str:
    if language == "javascript":
        code = code.replace(": number", "")
    return f"```\n{code}\n```"


def _item(language: str, head: str) -> Item:
    # a MultiPL-E test program, importing assert as other converters of HumanEval write it
    test = f"{head}\n\nfunction test() {{\n  let candidate = gcd;\n  assert.deepEqual(candidate(12, 18), 6);\n}}\n\ntest();\n"
    return Item(id="gcd", input="Write gcd(a, b).", language=language, test=test)


@pytest.mark.parametrize("language", ["javascript", "typescript"])
@pytest.mark.parametrize("head", IMPORTS)
async def test_tests_that_import_assert_score_answers_right(language: str, head: str) -> None:
    """Tests importing `assert`: TypeScript's did not compile (`Cannot find name 'assert'`: no
    `@types/node`), and JavaScript's made the program an ES module whose end the harness did not
    see (`exited with code 0 before the end of the tests`): a correct answer scored 0."""
    _skip_without(language)
    item = _item(language, head)
    right = await score_execution_async(_answer(language, _ANSWERS["correct"]), item, **LIMITS)
    assert (right.value, right.detail) == (1.0, "passed")
    wrong = await score_execution_async(_answer(language, _ANSWERS["wrong"]), item, **LIMITS)
    assert wrong.value == 0.0 and wrong.detail.startswith("tests failed: AssertionError"), wrong


@pytest.mark.parametrize("language", ["javascript", "typescript"])
@pytest.mark.parametrize("head", IMPORTS)
async def test_an_answer_that_imports_assert_itself_passes(language: str, head: str) -> None:
    """A correct answer with its own `import ... from 'assert'` (a check of its input) passes
    MultiPL-E's `require` tests."""
    _skip_without(language)
    code = f"{head}\n{_ANSWERS['correct'].replace('{', '{ assert.ok(b >= 0);', 1)}"
    item = Item(
        id="gcd", input="Write gcd(a, b).", language=language, tests=["assert.strictEqual(gcd(12, 18), 6);"]
    )
    score = await score_execution_async(_answer(language, code), item, **LIMITS)
    assert (score.value, score.detail) == (1.0, "passed")


@pytest.mark.parametrize("language", ["javascript", "typescript"])
async def test_an_answer_cannot_hand_importing_tests_a_fake_assert(language: str) -> None:
    """Compiled to CommonJS, the tests' import is a call of the module's `require`, which the
    answer may reassign before the tests run: the tests' imports reach `assert` through the
    harness's own, which the answer cannot reach."""
    _skip_without(language)
    fake = "require = (() => ({ deepEqual() {}, strict: { deepEqual() {} } })) as any;"
    code = f"{fake}\n{_ANSWERS['wrong']}"
    if language == "javascript":
        code = code.replace(" as any", "")
    score = await score_execution_async(_answer(language, code), _item(language, IMPORTS[0]), **LIMITS)
    assert score.value == 0.0 and score.detail.startswith("tests failed: AssertionError"), score
