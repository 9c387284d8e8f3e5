"""Code extraction from answers."""

from __future__ import annotations

import ast
from typing import Any

import pytest

from moa.eval.code import extract_code
from tests.probe import run_python


def test_prefers_longest_python_block() -> None:
    """The longest python-tagged block wins over longer untagged text."""
    answer = "```text\n" + "x" * 200 + "\n```\n```py\na = 1\n```\n```python\ndef f():\n    return 2\n```"
    assert extract_code(answer) == "def f():\n    return 2"


def test_untagged_block_before_other_kinds() -> None:
    """An untagged block is used when no python block exists."""
    assert extract_code("see\n```\nprint(1)\n```\n```output\n1111111111\n```") == "print(1)"


def test_tilde_fence_and_unterminated_final_fence() -> None:
    """~~~ fences and an unterminated last fence are read."""
    assert extract_code("~~~python\nx = 1\n~~~") == "x = 1"
    assert extract_code("Here:\n```python\ny = 2\nprint(y)") == "y = 2\nprint(y)"


@pytest.mark.parametrize(
    "answer",
    [
        "\ufeff```python\ndef f(x):\n    return x\n```",
        "```python\n\ufeffdef f(x):\n    return x\n```",
        "\ufeffdef f(x):\n    return x\n",
    ],
    ids=["before-the-fence", "opening-the-block", "unfenced"],
)
@pytest.mark.parametrize("entry_point", [None, "f"])
def test_a_byte_order_mark_is_dropped(answer: str, entry_point: str | None) -> None:
    """A BOM opening the answer hid its fence ("no code found"), and one opening the code failed to
    compile ("invalid non-printable character U+FEFF"); Python skips one opening a file."""
    assert extract_code(answer, entry_point=entry_point) == "def f(x):\n    return x"


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\x0c", "\x85", "\x1e"])
def test_a_line_separator_inside_the_code_stays_where_it_is(separator: str) -> None:
    """A string literal holding U+2028 (or a form feed, U+0085, ...) came back broken in two at it,
    as ``str.splitlines`` breaks lines: the answer, correct, failed with a syntax error. Only
    ``\\n``, ``\\r\\n`` and ``\\r`` end a line of code."""
    code = f"def f():\n    return '{separator}'"
    assert extract_code(f"```python\n{code}\n```", entry_point="f") == code
    assert extract_code(f"```python\r\n{code}\r\n```", entry_point="f") == code


def test_raw_python_and_prose() -> None:
    """Raw text is used when it parses as Python; prose gives None."""
    assert extract_code("def f(x):\n    return x\n") == "def f(x):\n    return x"
    assert extract_code("I think the answer is \\d yes.") is None


def test_entry_point_picks_the_last_block_defining_it() -> None:
    """With an entry point, the last block defining it wins over longer blocks that do not."""
    answer = (
        "```python\ndef f(x):\n    raise NotImplementedError\n```\n"
        "```python\ndef f(x):\n    return x\n```\n```python\n" + "print('demo')\n" * 20 + "```"
    )
    assert extract_code(answer, entry_point="f") == "def f(x):\n    return x"


def test_entry_point_joins_blocks_of_definitions_it_uses() -> None:
    """Blocks holding only imports or helpers the entry point uses (transitively) are joined in order."""
    answer = (
        "```python\nimport math\n```\n```python\ndef g(x):\n    return math.sqrt(x)\n```\n"
        "```python\ndef unused():\n    pass\n```\n```python\nprint(f(4))\n```\n"
        "```python\ndef f(x):\n    return g(x)\n```"
    )
    assert extract_code(answer, entry_point="f") == (
        "import math\n\ndef g(x):\n    return math.sqrt(x)\n\ndef f(x):\n    return g(x)"
    )


def test_entry_point_keeps_unfenced_bodies_and_cut_off_code() -> None:
    """Unfenced: an indented body and code cut off mid-way are code; leading prose is dropped."""
    assert extract_code("    return x + 1\n", entry_point="f") == "    return x + 1"
    assert extract_code("from typing import List\n\ndef f(x: List[int]", entry_point="f") == (
        "from typing import List\n\ndef f(x: List[int]"
    )
    assert (
        extract_code("Here it is:\ndef f(x):\n    return x\n", entry_point="f") == "def f(x):\n    return x"
    )
    assert extract_code("I do not know.", entry_point="f") is None


FUNCTION = "def f(x):\n    if x:\n        return x\n    return 0"

# (answer, the code extract_code(answer, entry_point="f") must return)
SHAPES = [
    ("1. Write it:\n   ```python\n   " + FUNCTION.replace("\n", "\n   ") + "\n   ```\n2. Done.", FUNCTION),
    ("1. Write it:\n\n    ```python\n    " + FUNCTION.replace("\n", "\n    ") + "\n    ```\n", FUNCTION),
    ("- Here:\n  ~~~py\n  " + FUNCTION.replace("\n", "\n  ") + "\n  ~~~", FUNCTION),
    (FUNCTION + "\n\nThis runs in O(1) time.", FUNCTION),
    (FUNCTION + "\n\nExplanation\n\nThe function returns x when it is truthy.", FUNCTION),
    (FUNCTION + "\n\nExample:\n\nprint(f(2))  # 2", FUNCTION),
    ("Here it is:\n" + FUNCTION + "\nThat is all.", FUNCTION),
    ("    return x + 1\n\nThis adds one to x.", "    return x + 1"),
    # what follows is code cut off by max_tokens, not prose: kept, so it fails as a syntax error
    (FUNCTION + "\n\ndef g(y):\n    return [", FUNCTION + "\n\ndef g(y):\n    return ["),
    ("    return g(x)\n\ndef g(y):\n    return [", "    return g(x)\n\ndef g(y):\n    return ["),
    # a fence line indented past the opening fence's 3-space allowance is the code's, not a close
    (
        '```python\ndef f(x):\n    """Markdown:\n\n    ```\n    """\n    return x\n```',
        'def f(x):\n    """Markdown:\n\n    ```\n    """\n    return x',
    ),
    # an unfenced function whose docstring holds a fenced example: the function, not the example
    (
        'def f(x):\n    """Return x.\n\n    ```\n    >>> f(1)\n    1\n    ```\n    """\n    return x\n',
        'def f(x):\n    """Return x.\n\n    ```\n    >>> f(1)\n    1\n    ```\n    """\n    return x',
    ),
]


def test_answer_shapes_give_the_code() -> None:
    """Fences indented in list items are dedented; prose after unfenced code is left out, code is not."""
    wrong = [
        (answer, got) for answer, want in SHAPES if (got := extract_code(answer, entry_point="f")) != want
    ]
    assert wrong == []


def test_a_fence_line_of_blanks_before_a_backtick_is_read_at_once() -> None:
    """A line opening with a fence, 160,000 blanks and a backtick (no fence: its info string holds a
    backtick) is read in linear time (a hang guard of 60 s for milliseconds; the fence regex
    backtracked over the blanks and took minutes)."""
    probe = (
        "from moa.eval.code import extract_code, fenced_blocks\n"
        "blanks = ' ' * 160_000\n"
        "for line in ('```' + blanks + '`', '```py' + blanks + '`x', '~~~' + blanks + '`'):\n"
        "    print(fenced_blocks(line + '\\n'), extract_code(line, entry_point='f'))\n"
    )
    assert run_python("-c", probe) == "[] None\n" * 3


def test_prose_words_after_long_code_are_cut_in_a_few_parses(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unfenced code ending in 30 lone words or 30 decorator lines is cut with a bounded number of
    parses of the whole code (each word once cost one: 21 parses, seconds over a long reply)."""
    code = "def f(x):\n    return x\n" + "".join(f"def g{i}(x):\n    return x + {i}\n" for i in range(2000))
    parses = 0
    parse = ast.parse

    def counted(source: str | bytes, *args: Any, **kwargs: Any) -> Any:
        nonlocal parses
        parses += 1
        return parse(source, *args, **kwargs)

    monkeypatch.setattr(ast, "parse", counted)
    assert extract_code(code + "Explanation\n" * 30, entry_point="f") == code.rstrip("\n")
    assert parses <= 6
    parses = 0
    assert extract_code(code + "@x\n" * 30, entry_point="f") is not None
    assert parses <= 10
