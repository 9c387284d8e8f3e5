"""Execution scoring on Dask: a real loopback ``LocalCluster`` (worker processes) gives the local
executor's results, a worker killed mid-experiment loses nothing, and an unreachable scheduler or a
missing ``dask`` extra is one line and exit 2."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
import re
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from moa._run import Runner
from moa.cli import main
from moa.errors import TopologyError, UserError
from moa.eval.languages.toolchains import find_toolchain
from moa.experiment import Experiment, Summary
from moa.models.base import ModelRequest
from moa.testing import FunctionModel
from tests.experiment.exp_helpers import killable_scheduler, loopback_cluster

distributed = pytest.importorskip("distributed")

from moa.experiment.executors import dask_executor  # noqa: E402  (after the skip: it needs no Dask)

HUMANEVAL = Path(__file__).parents[1] / "eval" / "fixtures" / "humaneval" / "problems.jsonl"
ROWS = [json.loads(line) for line in HUMANEVAL.read_text().splitlines()]
# each program sleeps a little, so a worker can be killed while it runs one
SLOW = "import time\ntime.sleep(0.1)\n"


def _answers(wrong_every: int) -> Callable[[ModelRequest], str]:
    """Whole programs from the fixtures: the wrong solution on every ``wrong_every``-th item."""

    def answer(req: ModelRequest) -> str:
        text = str(req.messages[-1]["content"])
        i, row = next((i, r) for i, r in enumerate(ROWS) if f"def {r['entry_point']}(" in text)
        body = row["wrong_solution" if i % wrong_every == 0 else "canonical_solution"]
        return SLOW + row["prompt"] + body

    return answer


def _runner() -> Runner:
    return Runner(
        models={"sim/base": FunctionModel(_answers(2)), "sim/coder": FunctionModel(_answers(5))}  # type: ignore[dict-item]
    )


def _experiment(folder: Path, executor: str = "local") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("base", "coder"):
        (folder / f"{name}.yaml").write_text(
            f"name: {name}\nkind: single\nagent: a\nagents:\n  a: {{model: sim/{name}, retry: {{max_attempts: 1}}}}\n"
        )
    (folder / "code.jsonl").write_text(HUMANEVAL.read_text())
    (folder / "exp.yaml").write_text(
        "name: code\ndataset: code.jsonl\nevaluator: {name: execution, timeout_s: 20, cpu_s: 5, memory_mb: 256}\n"
        f"baseline: base.yaml\nsetups: [coder.yaml]\nconcurrency: 8\nbootstrap_rounds: 200\nexecutor: {json.dumps(executor)}\n"
    )
    return folder / "exp.yaml"


def _hosted(folder: Path, agent: str) -> None:
    """The experiment's setups as one ``agent`` each, for ``moa compare`` without the test's runner
    (its `sim/` models name no provider the key preflight knows)."""
    for name in ("base", "coder"):
        (folder / f"{name}.yaml").write_text(f"name: {name}\nkind: single\nagent: a\nagents:\n  a: {agent}\n")


def _run(folder: Path, executor: str) -> Summary:
    return Experiment.from_file(
        _experiment(folder, executor), out=folder / "out", runner=_runner(), progress=False
    ).run()


def _scores(out: Path) -> dict[tuple[str, str], tuple[float, str | None]]:
    rows = [json.loads(line) for line in (out / "results.jsonl").open()]
    return {(r["setup"], r["item_id"]): (r["score"], r["score_detail"]) for r in rows}


def _figures(summary: Summary) -> list[tuple[str, float | None, int, int]]:
    return [(s.name, s.quality, s.tokens, s.errors) for s in summary.setups]


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> tuple[Summary, Path]:
    folder = tmp_path_factory.mktemp("local")
    return _run(folder, "local"), folder / "out"


def test_dask_cluster_gives_the_local_summary(
    local: tuple[Summary, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`executor: dask` starts a loopback cluster of worker processes and gives the same scores,
    quality and token figures as the local executor; summary.json says where it ran."""
    monkeypatch.setattr(dask_executor, "machine_cores", lambda: 2)  # 2 workers whatever the machine
    summary = _run(tmp_path, "dask")
    local_summary, local_out = local
    assert _scores(tmp_path / "out") == _scores(local_out)
    assert len(_scores(local_out)) == 2 * len(ROWS)
    assert _figures(summary) == _figures(local_summary)
    assert summary.setup("coder").quality not in (None, 0.0, 1.0)  # both outcomes are represented
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert (written["executor"], written["workers"]) == ("dask", 2)
    assert (local_summary.executor, local_summary.workers) == ("local", 1)


@pytest.fixture()
def cluster() -> Iterator[Any]:
    with loopback_cluster() as c:
        yield c


def test_a_killed_worker_loses_nothing(local: tuple[Summary, Path], tmp_path: Path, cluster: Any) -> None:
    """A worker killed while it runs a program: its task runs elsewhere and the results are complete
    and equal to the local executor's."""
    client = distributed.Client(cluster)
    try:
        pids: dict[str, int] = client.run(os.getpid)
        result: list[Summary] = []
        thread = threading.Thread(target=lambda: result.append(_run(tmp_path, cluster.scheduler_address)))
        thread.start()
        killed = None
        deadline = time.monotonic() + 60
        while killed is None and thread.is_alive() and time.monotonic() < deadline:
            busy = [w for w, keys in client.processing().items() if keys and w in pids]
            if busy:
                killed = pids[busy[0]]
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.02)
        thread.join(120)
        assert killed is not None, "no task ever ran on a worker"
        assert killed not in client.run(os.getpid).values()  # the nanny started a new process
    finally:
        client.close()
    assert result, "the experiment did not finish"
    assert _scores(tmp_path / "out") == _scores(local[1])
    assert _figures(result[0]) == _figures(local[0])
    assert result[0].complete


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


@pytest.mark.parametrize("listener", ["closed port", "silent listener"])
def test_unreachable_scheduler_is_one_line_exit_2(
    listener: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A scheduler address nobody answers on: one line naming it, exit 2, no run stored."""
    monkeypatch.setattr(dask_executor, "CONNECT_TIMEOUT_S", 1.0)
    with socket.socket() as silent:
        if listener == "silent listener":  # accepts connections, never speaks
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            port = silent.getsockname()[1]
        else:
            port = _closed_port()
        address = f"tcp://127.0.0.1:{port}"
        exp = _experiment(tmp_path)
        _hosted(tmp_path, "{model: openai/m, api_base: 'http://127.0.0.1:9/v1'}")  # passes the preflight
        code = main(
            ["compare", str(exp), "--executor", address, "--out", str(tmp_path / "out"), "--no-progress"]
        )
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err == f"moa: executor `{address}`: no Dask scheduler answered within 1 s", err
    assert not (tmp_path / "out" / "summary.json").exists()


def test_an_address_where_another_server_answers_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An address where some other server answers (an HTTP server, as the dashboard's port 8787 is
    for the scheduler's 8786): one line naming it, exit 2. Dask read the HTTP reply as a frame's
    length, and a 60-line MemoryError traceback (exit 1) came out."""
    reply = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    with socket.socket() as http:
        http.bind(("127.0.0.1", 0))
        http.listen()
        http.settimeout(30)  # a hang guard: the thread ends with the test

        def answer() -> None:
            try:
                while True:
                    conn, _ = http.accept()
                    with conn:
                        conn.recv(65536)
                        conn.sendall(reply)
            except OSError:
                pass  # closed, or the guard

        threading.Thread(target=answer, daemon=True).start()
        address = f"tcp://127.0.0.1:{http.getsockname()[1]}"
        exp = _experiment(tmp_path)
        _hosted(tmp_path, "{model: openai/m, api_base: 'http://127.0.0.1:9/v1'}")  # passes the preflight
        code = main(
            ["compare", str(exp), "--executor", address, "--out", str(tmp_path / "out"), "--no-progress"]
        )
    err = capsys.readouterr().err.strip()
    assert code == 2, err
    assert err.startswith(f"moa: executor `{address}`: what answered there is not a Dask scheduler (")
    assert len(err.splitlines()) == 1, err
    assert not (tmp_path / "out" / "summary.json").exists()


def test_a_dry_run_reaches_the_scheduler_as_a_run_does(
    tmp_path: Path, cluster: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`--dry-run --executor tcp://...` said "every check passed" without reaching the scheduler, which
    the run then could not: it opens and closes the executor as a run does, naming its workers, and
    an unreachable scheduler is the run's one line and exit 2."""
    exp = _experiment(tmp_path)
    _hosted(tmp_path, "{model: openai/m, api_base: 'http://127.0.0.1:9/v1'}")  # passes the preflight
    address = cluster.scheduler_address
    out_dir = tmp_path / "out"
    assert main(["compare", str(exp), "--executor", address, "--dry-run", "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert re.search(rf"^executor: {re.escape(address)}: reached, \d+ workers? now$", out, re.M), out
    monkeypatch.setattr(dask_executor, "CONNECT_TIMEOUT_S", 1.0)
    closed = f"tcp://127.0.0.1:{_closed_port()}"
    assert main(["compare", str(exp), "--executor", closed, "--dry-run", "--out", str(out_dir)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"moa: executor `{closed}`: no Dask scheduler answered within 1 s", err
    assert not out_dir.exists()


def test_a_missing_key_is_refused_before_the_executor_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The key preflight comes before the executor: a missing key started (then stopped) a Dask
    cluster, or connected to the scheduler, before its one line; now nothing connects."""
    monkeypatch.delenv("MOA_TEST_DASK_NO_KEY", raising=False)
    monkeypatch.setattr(dask_executor, "CONNECT_TIMEOUT_S", 1.0)
    exp = _experiment(tmp_path)
    _hosted(tmp_path, "{model: openai/m, api_key_env: MOA_TEST_DASK_NO_KEY}")
    with socket.socket() as scheduler:  # a scheduler's port that notes who connects
        scheduler.bind(("127.0.0.1", 0))
        scheduler.listen()
        scheduler.setblocking(False)
        address = f"tcp://127.0.0.1:{scheduler.getsockname()[1]}"
        code = main(
            ["compare", str(exp), "--executor", address, "--out", str(tmp_path / "out"), "--no-progress"]
        )
        with pytest.raises(BlockingIOError):  # nobody connected
            scheduler.accept()[0].close()
    err = capsys.readouterr().err.strip()
    assert code == 2 and "`MOA_TEST_DASK_NO_KEY` is not set" in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out").exists()


def test_missing_extra_is_one_line_exit_2(tmp_path: Path) -> None:
    """Without the `dask` extra, `--executor dask` says which command installs it, exit 2, and so
    does its dry run (which said "every check passed")."""
    exp = _experiment(tmp_path)
    _hosted(tmp_path, "{model: openai/m, api_base: 'http://127.0.0.1:9/v1'}")  # passes the preflight
    for dry in ([], ["--dry-run"]):
        argv = ["compare", str(exp), "--executor", "dask", "--out", str(tmp_path / "out"), *dry]
        code = f"import sys; sys.modules['distributed'] = None\nfrom moa.cli import main\nsys.exit(main({argv!r}))\n"
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (dry, proc.stderr)
        assert (
            proc.stderr.strip()
            == "moa: the dask executor needs the `dask` extra: pip install 'moa-sdk[dask]'"
        )


def test_bad_executor_names_the_field(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad `executor:` in the file names the field; a bad `--executor` is refused by the parser."""
    exp = _experiment(tmp_path, "http://127.0.0.1:8786")
    with pytest.raises(TopologyError, match=r"executor.*tcp://HOST:PORT"):
        Experiment.from_file(exp, out=tmp_path / "out")
    with pytest.raises(SystemExit) as e:
        main(["compare", str(exp), "--executor", "cluster"])
    assert e.value.code == 2
    assert "executor must be `local`, `dask`" in capsys.readouterr().err


def test_a_resumed_experiment_on_dask_reuses_the_store(tmp_path: Path, cluster: Any) -> None:
    """The driver alone owns the store: a folder finished by the local executor re-run on Dask sends
    nothing and scores nothing; with its scores forgotten, Dask re-scores every answer to the same
    results without any model call."""
    from moa.experiment import Store

    first = _run(tmp_path, "local")
    calls_before = _scores(tmp_path / "out")
    address = cluster.scheduler_address
    resumed = Experiment.from_file(
        _experiment(tmp_path, address), out=tmp_path / "out", runner=_runner(), progress=False
    ).run()
    assert _figures(resumed) == _figures(first) and resumed.executor == address
    store = Store.open(tmp_path / "out")
    try:
        store.delete_scores()
    finally:
        store.close()
    sent: list[str] = []

    def refuse(req: ModelRequest) -> str:
        sent.append(str(req.model))
        raise AssertionError("a stored answer must not be asked again")

    no_models = Runner(models={"sim/*": FunctionModel(refuse)})  # type: ignore[dict-item]
    rescored = Experiment.from_file(
        _experiment(tmp_path, address), out=tmp_path / "out", runner=no_models, progress=False
    ).run()
    assert sent == []
    assert _scores(tmp_path / "out") == calls_before
    assert _figures(rescored) == _figures(first)


def _scored(out: Path) -> int:
    """Scores the running experiment has committed (0 before its store exists)."""
    try:
        conn = sqlite3.connect(f"file:{out / 'experiment.sqlite'}?mode=ro", uri=True)
    except sqlite3.Error:
        return 0
    try:
        return int(conn.execute("SELECT COUNT(*) FROM scores").fetchone()[0])
    except sqlite3.Error:  # the tables are being made
        return 0
    finally:
        conn.close()


def test_a_scheduler_gone_mid_scoring_is_one_note_not_a_hang(tmp_path: Path) -> None:
    """The scheduler killed while its worker runs programs: the experiment ends (it hung on a client
    that had lost its scheduler), every answer stored, the answers left unscored counted in one note
    naming the scheduler rather than a Dask cancellation; a re-run scores them."""
    with killable_scheduler(tmp_path) as (address, scheduler):
        result: list[Summary] = []
        errors: list[BaseException] = []

        def run() -> None:
            try:
                result.append(_run(tmp_path, address))
            except BaseException as e:
                errors.append(e)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 120
        while thread.is_alive() and time.monotonic() < deadline:
            if _scored(tmp_path / "out"):
                scheduler.kill()
                scheduler.wait(60)
                break
            time.sleep(0.05)
        assert scheduler.poll() is not None, f"no answer was scored before the experiment ended: {errors}"
        thread.join(180)
        assert not thread.is_alive(), "the experiment hung after its scheduler was gone"
    assert not errors, errors
    (summary,) = result
    stored = _scores(tmp_path / "out")
    assert len(stored) == 2 * len(ROWS)  # every answer is stored
    unscored = [k for k, (score, _) in stored.items() if score is None]
    assert unscored, "every answer was scored before the scheduler died"
    (note,) = [n for n in summary.notes if "could not be scored" in n]
    assert f"executor `{address}`: the Dask scheduler is gone" in note and "\n" not in note
    again = _run(tmp_path, "local")
    assert again.complete and _scores(tmp_path / "out").keys() == stored.keys()


@pytest.mark.parametrize(
    ("worker", "expected"),
    [
        (
            "import sys\nsys.modules['moa'] = None\n",
            r"cannot run moa \(.*No module named .*\); every worker needs moa ",
        ),
        (
            "import moa\nmoa.__version__ = '0.0.1'\n",
            r"runs moa 0\.0\.1, the driver .*; every worker needs the driver's version",
        ),
    ],
    ids=["without moa", "another version"],
)
def test_a_worker_that_cannot_run_this_moa_is_one_line(worker: str, expected: str, tmp_path: Path) -> None:
    """A worker without moa, or with another version: one line naming the worker, before any call
    or store (each of its tasks failed: every answer it took was a failure, one by one)."""
    preload = tmp_path / "preload.py"
    preload.write_text(worker)
    with killable_scheduler(tmp_path, preload) as (address, _), pytest.raises(UserError) as info:
        _run(tmp_path, address)
    line = str(info.value)
    assert "\n" not in line, line
    assert re.fullmatch(
        rf"executor `{re.escape(address)}`: Dask worker tcp://127\.0\.0\.1:\d+ {expected}.*", line
    )
    assert not (tmp_path / "out" / "experiment.sqlite").exists()


def test_a_worker_of_another_moa_that_joins_later_is_named_not_trusted(tmp_path: Path) -> None:
    """The check at opening saw only the workers there then: a worker that joins later (a dead
    one's replacement, a cluster scaled up) running another moa scored the answers it was given,
    with other code and nothing in the score to tell. Each task now checks first."""
    import asyncio

    from moa.eval.datasets import Item
    from moa.eval.execution import ExecutionEvaluator

    preload = tmp_path / "preload.py"
    preload.write_text("import moa\nmoa.__version__ = '0.0.1'\n")
    item = Item(id="add", input="write add", tests=["assert add(1, 2) == 3"])

    async def go(address: str) -> None:
        executor = await dask_executor.DaskExecutor.open(address)
        try:
            client = executor._client
            (first,) = list(await client.nthreads())
            late = subprocess.Popen(
                [sys.executable, "-m", "dask", "worker", address, "--host", "127.0.0.1", "--no-dashboard",
                 "--nthreads", "1", "--no-nanny", "--preload", str(preload)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                await client.wait_for_workers(2, timeout=120)
                await client.retire_workers([first])
                with pytest.raises(UserError) as info:
                    await executor.score(ExecutionEvaluator(), item, "def add(a, b):\n    return a + b\n")
            finally:
                late.terminate()
                late.wait(30)
        finally:
            await executor.aclose()
        line = str(info.value)
        assert "\n" not in line, line
        assert re.fullmatch(
            rf"executor `{re.escape(address)}`: Dask worker tcp://127\.0\.0\.1:\d+ runs moa 0\.0\.1, "
            r"the driver .*; every worker needs the driver's version",
            line,
        ), line

    with killable_scheduler(tmp_path) as (address, _):
        asyncio.run(go(address))


async def test_the_loopback_cluster_starts_beside_another_on_port_8787() -> None:
    """The scheduler's HTTP server took Dask's default port 8787 and, with it taken (another
    cluster, another test run), moved with a warning: an error under the suite's warning filter, so
    two runs at once failed. It now takes an ephemeral loopback port."""
    with socket.socket() as taken:
        try:
            taken.bind(("127.0.0.1", 8787))
            taken.listen()
        except OSError:
            pass  # already taken: the case itself
        executor = await dask_executor.DaskExecutor.open("dask", n_workers=1)
        await executor.aclose()


def _runs_of(prefix: str, dask_scheduler: Any) -> int:
    """How many times the scheduler sent a task whose key starts with ``prefix`` to a worker."""
    return sum(
        1
        for key, _, finish, *_ in dask_scheduler.transition_log
        if str(key).startswith(prefix) and finish == "processing"
    )


async def test_a_compile_stopped_by_its_limits_is_not_run_again() -> None:
    """A compile stopped by its limits (`CompileLimitReached`: raise the limit to score it) fails
    alike each time it runs: Dask's task retries ran the same compile twice more (minutes with Go
    or Rust) before it was reported. It runs once and comes back as it does on the driver."""
    from moa.eval.datasets import Item
    from moa.eval.execution import ExecutionConfig, ExecutionEvaluator
    from moa.eval.languages import CompileLimitReached

    if isinstance(find_toolchain("c"), str):
        pytest.skip("no gcc")
    item = Item(id="c_gcd", input="Write gcd(a, b).", language="c", tests=["assert(gcd(12, 18) == 6);"])
    answer = (
        f"```c\n// {secrets.token_hex(8)}\nlong gcd(long a, long b) {{ return b ? gcd(b, a % b) : a; }}\n```"
    )
    evaluator = ExecutionEvaluator(ExecutionConfig(timeout_s=10, memory_mb=256, compile_timeout_s=0.001))
    executor = await dask_executor.DaskExecutor.open("dask", n_workers=1)
    try:
        try:
            scored = await executor.score(evaluator, item, answer)
        except CompileLimitReached as e:
            assert re.match(r"item `c_gcd`: the compiler \(gcc\) ran past compile_timeout_s", str(e)), e
        else:  # what came back instead says why (it once did not raise at load 15)
            pytest.fail(f"scored instead of CompileLimitReached: {scored!r}")
        runs = await executor._client.run_on_scheduler(_runs_of, "score_on_worker")
    finally:
        await executor.aclose()
    assert runs == 1


async def test_a_compile_bomb_scores_0_on_a_worker() -> None:
    """A wrong answer whose compile its limits stop while a control compile does not (a macro
    bomb) scores 0 on a Dask worker as on the driver, the control compiled in the worker's own
    sandbox; it is a score, so the task runs once."""
    from moa.eval.datasets import Item
    from moa.eval.execution import ExecutionConfig, ExecutionEvaluator

    if isinstance(find_toolchain("c"), str):
        pytest.skip("no gcc")
    item = Item(id="c_gcd", input="Write gcd(a, b).", language="c", tests=["assert(gcd(12, 18) == 6);"])
    bomb = "".join(f"#define a{i} " + "+".join([f"a{i - 1}"] * 10) + "\n" for i in range(1, 10))
    answer = (
        f"```c\n// {secrets.token_hex(8)}\n#define a0 1\n{bomb}long gcd(long a, long b) {{ return a9; }}\n```"
    )
    # a few seconds: a trivial control compile finishes within a quarter on a busy machine
    evaluator = ExecutionEvaluator(ExecutionConfig(timeout_s=10, memory_mb=256, compile_timeout_s=8))
    executor = await dask_executor.DaskExecutor.open("dask", n_workers=1)
    try:
        score = await executor.score(evaluator, item, answer)
        runs = await executor._client.run_on_scheduler(_runs_of, "score_on_worker")
    finally:
        await executor.aclose()
    assert score.value == 0.0 and "a control compile took" in score.detail, score
    assert score.detail.startswith(
        "the answer's code does not compile within the limits: the compiler (gcc) "
    )
    assert runs == 1
