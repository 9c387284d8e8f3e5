"""Cascade files name other files through their stages, and a stage runs one topology: a cascade
named as a stage (itself, or one naming it back) is refused as soon as it is read, in one line,
never a RecursionError."""

from __future__ import annotations

from pathlib import Path

import pytest

from moa import cli
from moa.errors import TopologyError
from moa.topology.loader import load

AGENTS = "agents: {m: {model: openai/gpt-4o-mini, temperature: 0.7}}\n"


def cascade(name: str, stage_ref: str) -> str:
    return (
        f"name: {name}\nkind: cascade\n{AGENTS}stages:\n"
        "  - {agent: m, samples: 2, accept: {agree: 2}}\n"
        f"  - {{topology: {stage_ref}}}\n"
    )


def test_a_cascade_naming_itself_is_one_line(tmp_path: Path) -> None:
    """`stages: [..., {topology: selfref.yaml}]` in selfref.yaml: the stage is a cascade."""
    f = tmp_path / "selfref.yaml"
    f.write_text(cascade("selfref", "selfref.yaml"))
    with pytest.raises(TopologyError) as info:
        load(f)
    assert info.value.lines() == [
        f"{f}: stages[1]: topology `selfref.yaml` is itself a cascade; a stage runs one topology"
    ]


def test_two_cascades_naming_each_other(tmp_path: Path) -> None:
    """a.yaml → b.yaml → a.yaml is refused at the first step: b.yaml, a cascade, is no stage."""
    (tmp_path / "a.yaml").write_text(cascade("a", "b.yaml"))
    (tmp_path / "b.yaml").write_text(cascade("b", "a.yaml"))
    with pytest.raises(TopologyError) as info:
        load(tmp_path / "a.yaml")
    (line,) = info.value.lines()
    assert line.endswith("stages[1]: topology `b.yaml` is itself a cascade; a stage runs one topology")


def test_a_long_chain_of_distinct_cascades_stops_at_the_first(tmp_path: Path) -> None:
    """Distinct cascades each naming the next stop at the first: no file is read past it."""
    n = 24
    for i in range(n):
        (tmp_path / f"c{i}.yaml").write_text(cascade(f"c{i}", f"c{i + 1}.yaml"))
    (tmp_path / f"c{n}.yaml").write_text(f"name: end\nkind: single\n{AGENTS}")
    with pytest.raises(TopologyError) as info:
        load(tmp_path / "c0.yaml")
    (line,) = info.value.lines()
    assert line.endswith("stages[1]: topology `c1.yaml` is itself a cascade; a stage runs one topology")


def test_validate_command_reports_the_loop_with_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`moa validate selfref.yaml` exits 2 with one line, no traceback."""
    f = tmp_path / "selfref.yaml"
    f.write_text(cascade("selfref", "selfref.yaml"))
    assert cli.main(["validate", str(f)]) == 2
    err = capsys.readouterr().err
    assert "is itself a cascade" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
