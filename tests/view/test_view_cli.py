"""`moa view` on the command line: bad input is one line and exit 2, and a real start serves the page
on the port it prints (``--port 0`` picks a free one)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from moa.cli import main

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--port", "70000"], "--port must be within 0..65535"),
        (["--vote"], "--vote needs --voter NAME"),
        (["--vote", "--voter", "a\x07b"], "--voter holds a control character"),
        (["--voter", "ann"], "--voter is only read with --vote"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(
    experiments: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    """Each bad flag is refused before anything starts, in one line naming it."""
    assert main(["view", str(experiments), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("moa view: ") and says in err and "\n" not in err


def test_pairs_without_vote_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`--pairs all` without `--vote` is refused as `--voter` is, before the folder is read: it
    started a plain viewer, the vote the user meant silently not there."""
    assert main(["view", str(tmp_path / "missing"), "--pairs", "all"]) == 2
    assert capsys.readouterr().err.strip() == "moa view: --pairs is only read with --vote"


def test_a_folder_without_experiments_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A folder holding no experiment store, no folder at all, or a file: exit 2 naming it."""
    assert main(["view", str(tmp_path)]) == 2
    assert f"{tmp_path}: no experiment here" in capsys.readouterr().err
    assert main(["view", str(tmp_path / "missing")]) == 2
    assert "no such folder" in capsys.readouterr().err
    # the experiment file given for its folder: a file, which it said did not exist
    (tmp_path / "exp.yaml").write_text("name: e\n")
    assert main(["view", str(tmp_path / "exp.yaml")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"moa view: {tmp_path / 'exp.yaml'}: is a file, not a folder (give the --out folder of `moa compare`)"
    )


def test_view_is_listed_in_the_help(capsys: pytest.CaptureFixture[str]) -> None:
    """`moa --help` lists the view command."""
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "view" in capsys.readouterr().out


def test_moa_view_serves_on_the_port_it_prints(experiments: Path) -> None:
    """`moa view DIR --port 0` prints its URL on stderr and serves the page and the API there."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moa.cli", "view", str(experiments), "--port", "0"],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert proc.stderr is not None
        line = proc.stderr.readline()
        assert line.startswith("moa view: viewer at http://127.0.0.1:"), line
        url = line.split(" at ", 1)[1].split()[0]
        for _ in range(100):
            try:
                page = httpx.get(url, timeout=5)
                break
            except httpx.ConnectError:
                time.sleep(0.05)
        assert page.status_code == 200 and "moa view" in page.text
        assert len(httpx.get(url + "api/config").json()["experiments"]) == 3
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.parametrize(
    ("host", "hosts"),
    [
        ("127.0.0.1", None),
        ("localhost", None),
        ("127.0.0.2", ["127.0.0.1", "localhost", "::1", "[::1]", "127.0.0.2"]),
        ("0.0.0.0", ["*"]),
        ("192.168.1.5", ["*"]),
    ],
)
def test_every_loopback_address_keeps_the_host_check(host: str, hosts: list[str] | None) -> None:
    """Bound to any loopback address (127.0.0.2 too) the viewer still answers loopback host names only
    (DNS rebinding); only an address others can reach answers any name."""
    from moa.view.cli import allowed_hosts

    assert allowed_hosts(host) == hosts
