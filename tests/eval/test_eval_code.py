"""Code extraction from answers."""

from __future__ import annotations

from moa.eval.code import extract_code


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


def test_raw_python_and_prose() -> None:
    """Raw text is used when it parses as Python; prose gives None."""
    assert extract_code("def f(x):\n    return x\n") == "def f(x):\n    return x"
    assert extract_code("I think the answer is \\d yes.") is None
