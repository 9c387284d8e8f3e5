"""``run_isolated``, the language-agnostic sandbox: files in, files out, limits, modes and mistakes."""

from __future__ import annotations

from pathlib import Path

import pytest

from moa.eval.isolation import Limits, isolation_available, run_isolated

_BWRAP, _WHY = isolation_available()
MODES = [
    pytest.param("bwrap", marks=pytest.mark.skipif(not _BWRAP, reason=f"bubblewrap unavailable: {_WHY}")),
    "fallback",
]
LIMITS = Limits(timeout_s=30)


@pytest.mark.parametrize("mode", MODES)
async def test_files_go_in_and_kept_files_come_back(mode: str) -> None:
    """Files (in sub-directories, scripts executable) are in the cwd; ``keep`` reads outputs back,
    leaving out what is missing."""
    files = {"src/in.txt": b"hello\n", "run.sh": b"#!/bin/sh\ncat src/in.txt > out.txt\necho done\n"}
    outcome, kept = await run_isolated(
        ["./run.sh"], files=files, limits=LIMITS, isolation=mode, keep=["out.txt", "missing.bin"]
    )
    assert (outcome.returncode, outcome.stdout, outcome.isolation) == (0, "done\n", mode)
    assert kept == {"out.txt": b"hello\n"}


@pytest.mark.parametrize("mode", MODES)
async def test_kept_file_is_cut_at_the_file_size_limit(mode: str) -> None:
    """A program writing past ``max_file_mb`` leaves a file of exactly that size, read back as such."""
    _, kept = await run_isolated(
        ["/bin/sh", "-c", "head -c 3000000 /dev/zero > big; echo small > small"],
        files={},
        limits=Limits(timeout_s=30, max_file_mb=1),
        isolation=mode,
        keep=["big", "small"],
    )
    assert len(kept["big"]) == 1024 * 1024 and kept["small"] == b"small\n"


@pytest.mark.parametrize("mode", MODES)
async def test_stdin_and_environment(mode: str) -> None:
    """``stdin`` is fed; ``env`` adds variables and may replace PATH; the parent's do not leak."""
    outcome, _ = await run_isolated(
        ["/bin/sh", "-c", "cat; echo; echo $GOCACHE; echo $PATH; env | wc -l"],
        files={},
        limits=LIMITS,
        isolation=mode,
        stdin=b"from stdin",
        env={"GOCACHE": "/tmp/go", "PATH": "/usr/bin:/bin"},
    )
    lines = outcome.stdout.splitlines()
    assert lines[:3] == ["from stdin", "/tmp/go", "/usr/bin:/bin"]
    assert int(lines[3]) <= 6  # PATH, HOME, LANG, GOCACHE, PWD and what sh adds


@pytest.mark.parametrize("mode", MODES)
async def test_signal_and_timeout_are_named(mode: str) -> None:
    """A crash reports its signal; a hang is killed at the deadline."""
    crashed, _ = await run_isolated(
        ["/bin/sh", "-c", "kill -SEGV $$"], files={}, limits=LIMITS, isolation=mode
    )
    hung, _ = await run_isolated(["sleep", "60"], files={}, limits=Limits(timeout_s=1), isolation=mode)
    assert (crashed.returncode, crashed.killed_by) == (-11, "SIGSEGV")
    assert (hung.returncode, hung.timed_out, hung.killed_by) == (None, True, "timeout")


@pytest.mark.skipif(not _BWRAP, reason=f"bubblewrap unavailable: {_WHY}")
async def test_readonly_bind_is_visible_and_read_only(tmp_path: Path) -> None:
    """A toolchain directory is bound at its own path, readable, not writable."""
    (tmp_path / "tool").write_text("v1\n")
    tmp_path.chmod(0o755)  # the bound directory keeps its own permissions, as toolchains have them
    outcome, _ = await run_isolated(
        ["/bin/sh", "-c", f"cat {tmp_path}/tool; echo x > {tmp_path}/tool"],
        files={},
        limits=LIMITS,
        isolation="bwrap",
        readonly_binds=[str(tmp_path)],
    )
    assert outcome.stdout == "v1\n" and "Read-only file system" in outcome.stderr
    assert (tmp_path / "tool").read_text() == "v1\n"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"files": {"../x": b""}}, "work-dir file '../x' must be a plain relative path"),
        ({"files": {"/etc/x": b""}}, "work-dir file '/etc/x'"),
        ({"files": {}, "keep": ["a/../../b"]}, "work-dir file 'a/../../b'"),
        (
            {"files": {}, "readonly_binds": ["relative/dir"]},
            "readonly bind 'relative/dir' is not an absolute path",
        ),
        ({"files": {}, "readonly_binds": ["/proc/self"]}, "would cover the sandbox's own directories"),
        (
            {"files": {}, "readonly_binds": ["/no/such/toolchain"]},
            "readonly bind '/no/such/toolchain' does not exist",
        ),
        ({"files": {}, "env": {"A=B": "x"}}, "environment variable name 'A=B'"),
        ({"files": {}, "isolation": "docker"}, "isolation='docker': expected auto, bwrap or fallback"),
    ],
)
async def test_mistakes_name_the_culprit(kwargs: dict[str, object], message: str) -> None:
    """A bad file name, bind, variable or mode fails before anything runs, naming it."""
    with pytest.raises(Exception, match=message.replace("(", r"\(").replace(")", r"\)")):
        await run_isolated(["true"], limits=LIMITS, **kwargs)  # type: ignore[arg-type]


async def test_empty_command_is_refused() -> None:
    """An empty argv is a ValueError."""
    with pytest.raises(ValueError, match="argv is empty"):
        await run_isolated([], files={}, limits=LIMITS)


@pytest.mark.skipif(not _BWRAP, reason=f"bubblewrap unavailable: {_WHY}")
async def test_no_fork_refuses_new_processes_and_only_when_asked() -> None:
    """``no_fork=True``: a shell cannot start ``/bin/true`` (a new process); without it, it can."""
    script = ["/bin/sh", "-c", "/bin/true && echo started"]
    refused, _ = await run_isolated(script, files={}, limits=LIMITS, isolation="bwrap", no_fork=True)
    allowed, _ = await run_isolated(script, files={}, limits=LIMITS, isolation="bwrap")
    assert "started" not in refused.stdout and refused.returncode != 0
    assert allowed.stdout == "started\n" and allowed.returncode == 0


async def test_the_fallback_installs_the_same_no_fork_filter() -> None:
    """Without bwrap the filter is installed in the child before the exec: a shell cannot start
    ``/bin/true`` either (it could, and a forking answer scored 1.0 there); without it, it can."""
    script = ["/bin/sh", "-c", "/bin/true && echo started"]
    refused, _ = await run_isolated(script, files={}, limits=LIMITS, isolation="fallback", no_fork=True)
    allowed, _ = await run_isolated(script, files={}, limits=LIMITS, isolation="fallback")
    assert refused.isolation == allowed.isolation == "fallback"
    assert "started" not in refused.stdout and refused.returncode != 0
    assert allowed.stdout == "started\n" and allowed.returncode == 0


def test_the_no_fork_filter_is_linux_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """On macOS (whose machine names match Linux's) the fallback would have called a prctl libc
    does not have, a traceback for every compiled answer: there is no filter there."""
    from moa.eval import _bwrap

    assert _bwrap.no_fork_filter() is not None
    monkeypatch.setattr("sys.platform", "darwin")
    assert _bwrap.no_fork_filter() is None
