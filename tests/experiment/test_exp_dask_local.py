"""Runs of local models on Dask: on a real loopback cluster of two worker processes, a setup whose
models are all local runs on the workers (each loads the model once and keeps it) and gives the
local executor's answers, tokens, errors and quality, while an API setup stays on the driver; the
driver alone writes the store, so cached replies reach the workers and a killed driver resumes."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
import json
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from moa._run import Runner
from moa.calls.budget import Budget
from moa.experiment import Experiment, Summary
from moa.experiment.executors import movable
from moa.testing import FunctionModel
from moa.testing.sim import SimModel, SimServer
from moa.topology.loader import load, load_data
from tests.experiment.exp_helpers import answers_of, killable_scheduler, loopback_cluster, questions

distributed = pytest.importorskip("distributed")
pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'moa-sdk[local]')")

from moa.experiment.executors.dask_executor import DaskExecutor  # noqa: E402  (after the skips)
from moa.experiment.executors.dask_plugin import held_models  # noqa: E402

pytestmark = pytest.mark.local_model

REPO = Path(__file__).resolve().parents[2]
ROWS = questions(4)
SMOL = "{model: local/smollm2-135m, temperature: 0, max_tokens: 12}"
# a context window the prompt does not fit: every run fails on the model, the same way each time
CRAMPED = "{model: local/smollm2-135m, temperature: 0, max_tokens: 12, params: {n_ctx: 16}}"
SETUPS = ("api", "smol", "cramped")


def _experiment(folder: Path, base_url: str, executor: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    api = f"{{model: openai/sim-m, api_base: {json.dumps(base_url)}, retry: {{max_attempts: 1}}}}"
    for name, agent in (("api", api), ("smol", SMOL), ("cramped", CRAMPED)):
        (folder / f"{name}.yaml").write_text(f"name: {name}\nkind: single\nagent: a\nagents:\n  a: {agent}\n")
    (folder / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    (folder / "exp.yaml").write_text(
        "name: local-on-dask\ndataset: data.jsonl\nevaluator: contains\nbaseline: api.yaml\n"
        f"setups: [smol.yaml, cramped.yaml]\nbootstrap_rounds: 100\nexecutor: {json.dumps(executor)}\n"
    )
    return folder / "exp.yaml"


def _run(folder: Path, base_url: str, executor: str) -> Summary:
    exp = _experiment(folder, base_url, executor)
    return Experiment.from_file(exp, out=folder / "out", progress=False).run()


def _runs(out: Path) -> dict[tuple[str, str], tuple[Any, ...]]:
    """(setup, item) -> what a run's outcome is made of, times left out."""
    conn = sqlite3.connect(out / "experiment.sqlite")
    try:
        rows = conn.execute(
            "SELECT setup, item_id, answer, error, error_type, prompt_tokens, completion_tokens, n_calls, "
            "cost_usd FROM runs"
        ).fetchall()
    finally:
        conn.close()
    return {(r[0], r[1]): tuple(r[2:]) for r in rows}


def _figures(summary: Summary) -> list[tuple[str, float | None, int, int, float]]:
    return [(s.name, s.quality, s.tokens, s.errors, s.cost_usd) for s in summary.setups]


@pytest.fixture(scope="module")
def server() -> Iterator[SimServer]:
    with SimServer({"sim-m": SimModel.with_accuracy(1.0, answers_of(ROWS))}) as srv:
        yield srv


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    with loopback_cluster() as c:
        yield c


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory, server: SimServer) -> tuple[Summary, Path]:
    folder = tmp_path_factory.mktemp("local")
    return _run(folder, server.base_url, "local"), folder / "out"


@pytest.fixture()
def workers(monkeypatch: pytest.MonkeyPatch) -> dict[str, dict[str, Any]]:
    """What each worker's local-models plugin held when the executor closed (its pairs, its models)."""
    seen: dict[str, dict[str, Any]] = {}
    close = DaskExecutor.aclose

    async def aclose(self: DaskExecutor) -> None:
        if self.plugin is not None:
            seen.update(await self._client.run(held_models, self.plugin))
        await close(self)

    monkeypatch.setattr(DaskExecutor, "aclose", aclose)
    return seen


def test_local_model_pairs_run_on_workers_with_the_local_results(
    local: tuple[Summary, Path],
    server: SimServer,
    cluster: Any,
    workers: dict[str, dict[str, Any]],
    tmp_path: Path,
) -> None:
    """The local setups' pairs run on the workers, each worker loading a model once for all its
    pairs, with the local executor's answers, errors, tokens and quality; the API setup's calls
    are sent by the driver."""
    before = server.stats.requests
    summary = _run(tmp_path, server.base_url, cluster.scheduler_address)
    local_summary, local_out = local
    assert _runs(tmp_path / "out") == _runs(local_out)
    assert len(_runs(local_out)) == len(SETUPS) * len(ROWS)
    assert _figures(summary) == _figures(local_summary)
    assert summary.setup("smol").errors == 0 and summary.setup("smol").tokens > 0
    assert summary.setup("cramped").errors == len(ROWS)
    # the API pairs, and only they, went through the driver's HTTP client
    assert server.stats.requests - before == len(ROWS)
    # both local setups' pairs ran on the workers: one model per shape (n_ctx) per worker, made
    # once, with the worker's one thread, whatever the number of pairs it ran
    assert sum(w["runs"] for w in workers.values()) == 2 * len(ROWS)
    assert len(workers) == 2
    for w in workers.values():
        assert len(w["held"]) <= 2 and len(set(w["held"])) == len(w["held"])
        assert all(h.endswith(" n_threads=1") for h in w["held"])
    assert max(w["runs"] for w in workers.values()) > max(len(w["held"]) for w in workers.values())
    assert summary.executor == cluster.scheduler_address


def test_cached_replies_travel_to_the_worker(
    local: tuple[Summary, Path],
    server: SimServer,
    cluster: Any,
    workers: dict[str, dict[str, Any]],
    tmp_path: Path,
) -> None:
    """Pairs whose calls the store has cached (interrupted before their run was stored) run on a
    worker from those replies: every call is a cache hit, with the same answers."""
    _experiment(tmp_path, server.base_url, cluster.scheduler_address)
    shutil.copytree(local[1], tmp_path / "out")
    conn = sqlite3.connect(tmp_path / "out" / "experiment.sqlite")
    with conn:
        gone = "SELECT run_id FROM runs WHERE setup='smol'"
        conn.execute(f"DELETE FROM calls WHERE run_id IN ({gone})")
        conn.execute(f"DELETE FROM scores WHERE run_id IN ({gone})")
        conn.execute("DELETE FROM runs WHERE setup='smol'")
    conn.close()
    summary = _run(tmp_path, server.base_url, cluster.scheduler_address)
    # the cramped setup's errors are run again too (retry_errors), as the local executor would
    assert sum(w["runs"] for w in workers.values()) == 2 * len(ROWS)
    conn = sqlite3.connect(tmp_path / "out" / "experiment.sqlite")
    try:
        cached = conn.execute(
            "SELECT c.cached FROM calls c JOIN runs r ON r.run_id = c.run_id WHERE r.setup='smol'"
        ).fetchall()
    finally:
        conn.close()
    assert cached == [(1,)] * len(ROWS)
    assert _runs(tmp_path / "out") == _runs(local[1])
    assert _figures(summary) == _figures(local[0])


def test_a_killed_driver_resumes_on_dask(
    local: tuple[Summary, Path],
    server: SimServer,
    cluster: Any,
    workers: dict[str, dict[str, Any]],
    tmp_path: Path,
) -> None:
    """A driver killed (SIGKILL) mid-experiment: re-run on the cluster, it keeps every stored run,
    runs only the pairs not stored, and ends with the local executor's summary."""
    exp = _experiment(tmp_path, server.base_url, cluster.scheduler_address)
    out = tmp_path / "out"
    code = (
        "import sys\nfrom moa.cli import main\n"
        f"sys.exit(main(['compare', {str(exp)!r}, '--out', {str(out)!r}, '--no-progress']))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    driver = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL)
    stored: dict[tuple[str, str], tuple[Any, ...]] = {}
    try:
        deadline = time.monotonic() + 300
        while driver.poll() is None and time.monotonic() < deadline:
            if (out / "experiment.sqlite").exists():
                try:
                    stored = _runs(out)
                except sqlite3.OperationalError:  # the driver is creating the tables
                    stored = {}
                if any(setup != "api" for setup, _ in stored):
                    driver.send_signal(signal.SIGKILL)
                    break
            time.sleep(0.02)
    finally:
        if driver.poll() is None:
            driver.kill()
        driver.wait(60)
    assert driver.returncode == -signal.SIGKILL, "the driver finished before it could be killed"
    stored = _runs(out)  # what the killed driver had committed
    assert len(stored) < len(SETUPS) * len(ROWS)
    ids = "SELECT setup || ':' || item_id, run_id FROM runs"
    conn = sqlite3.connect(out / "experiment.sqlite")
    ids_before = dict(conn.execute(f"{ids} WHERE error IS NULL").fetchall())
    conn.close()
    before = server.stats.requests
    resumed = _run(tmp_path, server.base_url, cluster.scheduler_address)
    # the smol pairs not stored, and every cramped pair: those stored are errors, run again
    assert sum(w["runs"] for w in workers.values()) == len(ROWS) + sum(
        1 for r in ROWS if ("smol", r["id"]) not in stored
    )
    assert server.stats.requests - before == sum(1 for r in ROWS if ("api", r["id"]) not in stored)
    conn = sqlite3.connect(out / "experiment.sqlite")
    ids_after = dict(conn.execute(ids).fetchall())
    conn.close()
    assert ids_before and {k: ids_after[k] for k in ids_before} == ids_before  # kept as they were
    assert _runs(out) == _runs(local[1])
    assert _figures(resumed) == _figures(local[0])
    assert resumed.complete


def _single(agent: dict[str, Any], **extra: Any) -> Any:
    return load_data({"name": "t", "kind": "single", "agent": "a", "agents": {"a": {**agent, **extra}}})


def test_what_may_move_to_a_worker() -> None:
    """A setup moves when every model it may call is local and nothing in it needs the driver: an
    API model or fallback, a backend given to the runner, a rate limit or a priced call under a
    budget keep it on the driver; a cascade of local stages moves."""
    smol = {"model": "local/smollm2-135m"}
    plain = Runner()
    assert movable(_single(smol), plain)
    assert movable(load("local-cascade"), plain) and movable(load("local-self-moa"), plain)
    assert not movable(_single({"model": "openai/gpt-4o-mini"}), plain)
    assert not movable(_single(smol, fallbacks=["openai/gpt-4o-mini"]), plain)
    assert not movable(_single(smol), Runner(models={"local/*": FunctionModel(lambda r: "x")}))  # type: ignore[dict-item]
    assert not movable(_single(smol, rate_limit={"rpm": 60}), plain)
    priced = _single(smol, pricing={"input_per_mtok": 1.0, "output_per_mtok": 1.0})
    assert movable(priced, plain) and not movable(priced, plain, (Budget(1.0),))
    mixed = load_data(
        {
            "name": "mixed",
            "kind": "cascade",
            "agents": {"s": {**smol, "temperature": 0.7}, "big": {"model": "openai/gpt-4o-mini"}},
            "stages": [{"agent": "s", "samples": 2, "accept": {"agree": 2}}, {"agent": "big"}],
        }
    )
    assert not movable(mixed, plain)


@pytest.mark.parametrize("key", ["local/smollm2-135m", "local", "other"])
def test_a_limit_in_the_runners_registry_keeps_a_setup_on_the_driver(key: str) -> None:
    """A limit set for a setup's local model (`set_rate_limit("local/...")`), or its provider, keeps
    the setup on the driver, as an agent's own `rate_limit` does: a worker would call the model
    outside the driver's limiter. Before, only the agent's own limit was looked at, and the
    process-wide one was ignored on the workers. A limit for another model leaves it movable."""
    from moa.calls.limits import RateLimits

    limits = RateLimits()
    limits.set(key, max_concurrent=1)
    smol = _single({"model": "local/smollm2-135m"})
    assert movable(smol, Runner(rate_limits=limits)) is (key == "other")
    fallback = _single({"model": "local/other.gguf", "fallbacks": ["local/smollm2-135m"]})
    assert movable(fallback, Runner(rate_limits=limits)) is (key == "other")


def test_a_process_wide_limit_on_a_local_model_holds_it_on_the_driver(
    local: tuple[Summary, Path],
    server: SimServer,
    cluster: Any,
    workers: dict[str, dict[str, Any]],
    tmp_path: Path,
) -> None:
    """`moa.set_rate_limit("local/smollm2-135m", max_concurrent=1)` and a cluster of worker
    processes: the local setups' pairs run on the driver, under its one limiter, with the local
    executor's results; no worker ran a pair. Before, they went to the workers, each of which
    built a registry of its own without the limit and ran the model unlimited."""
    import moa
    from moa.calls.limits import clear_rate_limits

    moa.set_rate_limit("local/smollm2-135m", max_concurrent=1)
    try:
        summary = _run(tmp_path, server.base_url, cluster.scheduler_address)
    finally:
        clear_rate_limits()
    assert sum(w["runs"] for w in workers.values()) == 0
    assert _runs(tmp_path / "out") == _runs(local[1])
    assert _figures(summary) == _figures(local[0])


def test_a_killed_worker_hands_its_pair_to_another(
    local: tuple[Summary, Path], server: SimServer, cluster: Any, tmp_path: Path
) -> None:
    """A worker killed while it runs a local pair: the pair runs again elsewhere (its replacement
    gets the models' plugin too), and the results are complete and equal to the local executor's."""
    client = distributed.Client(cluster)
    try:
        pids: dict[str, int] = client.run(os.getpid)
        result: list[Summary] = []
        thread = threading.Thread(
            target=lambda: result.append(_run(tmp_path, server.base_url, cluster.scheduler_address))
        )
        thread.start()
        killed = None
        deadline = time.monotonic() + 120
        while killed is None and thread.is_alive() and time.monotonic() < deadline:
            busy = [w for w, keys in client.processing().items() if keys and w in pids]
            if busy:
                killed = pids[busy[0]]
                os.kill(killed, signal.SIGKILL)
            time.sleep(0.01)
        thread.join(300)
        assert killed is not None, "no pair ever ran on a worker"
        client.wait_for_workers(2, timeout=120)  # the nanny's new worker, for the tests after this one
        assert killed not in client.run(os.getpid).values()
    finally:
        client.close()
    assert result, "the experiment did not finish"
    assert _runs(tmp_path / "out") == _runs(local[1])
    assert _figures(result[0]) == _figures(local[0])


def test_a_replacement_worker_gets_the_models_plugin(cluster: Any) -> None:
    """The plugin holding the local models is installed on workers that join later too: the
    worker a nanny starts in place of a dead one can run local pairs."""

    async def check() -> tuple[str, dict[str, dict[str, Any]]]:
        executor = await DaskExecutor.open(cluster.scheduler_address)
        try:
            plugin = await executor._plugin()
            client = executor._client
            pids: dict[str, int] = await client.run(os.getpid)
            victim = sorted(pids)[0]
            os.kill(pids[victim], signal.SIGKILL)
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                now = await client.nthreads()
                if len(now) == 2 and victim not in now:
                    break
                await asyncio.sleep(0.05)
            return victim, await client.run(held_models, plugin)
        finally:
            await executor.aclose()

    victim, held = asyncio.run(check())
    assert len(held) == 2 and victim not in held
    assert all(h == {"runs": 0, "held": []} for h in held.values())


async def test_a_pair_away_from_the_store_replays_and_returns_replies() -> None:
    """A pair run from a ``PairTask`` sends back the replies it cached; given them again, it
    answers from them without a model call, under the driver's cache keys."""
    from moa.calls.call import CachedReply
    from moa.eval.datasets import Item
    from moa.experiment.executors import LocalExecutor
    from moa.experiment.executors.worker import PairTask
    from moa.models.base import ModelReply
    from moa.results import Usage

    topology = _single({"model": "local/smollm2-135m", "temperature": 0, "max_tokens": 12})
    item = Item(id="q", input="What is 1 plus 1?")
    first = await LocalExecutor().run_pair(PairTask(topology, item, "scope", {}))
    assert first.error is None and first.result is not None and len(first.new_replies) == 1
    assert not first.result.calls[0].cached
    ((key, _),) = first.new_replies.items()
    canned = CachedReply(
        ModelReply("two", Usage(3, 1), "local/smollm2-135m", "stop"), "local/smollm2-135m", 0.0
    )
    again = await LocalExecutor().run_pair(PairTask(topology, item, "scope", {key: canned}))
    assert again.result is not None and again.result.output == "two" and again.result.calls[0].cached
    assert again.new_replies == {}


async def test_closing_one_experiments_models_spares_anothers(monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker's models are the process's: an experiment done with them frees only those no other
    experiment's plugin on that worker holds; each gets the worker's threads unless the agent says."""
    import moa.models.local
    from moa.experiment.executors.worker import LocalModels

    class Fake:
        def __init__(self, name: str, threads: int) -> None:
            self.name, self.n_threads, self.closed = name, threads, 0

        async def aclose(self) -> None:
            self.closed += 1

    made: dict[tuple[str, int], Fake] = {}

    def resolve(model: str, params: dict[str, Any]) -> Fake:
        key = (model, params["n_threads"])
        return made.setdefault(key, Fake(*key))

    monkeypatch.setattr(moa.models.local, "resolve_local_model", resolve)
    first, second = LocalModels(n_threads=1), LocalModels(n_threads=1)
    shared = first.get("local/a.gguf", {})
    own = first.get("local/b.gguf", {"n_threads": 3})
    assert second.get("local/a.gguf", {}) is shared and (shared.n_threads, own.n_threads) == (1, 3)
    await first.aclose(others=[second])
    assert (shared.closed, own.closed) == (0, 1)
    await second.aclose()
    assert shared.closed == 1


def test_a_scheduler_gone_mid_pair_stops_in_one_line(
    local: tuple[Summary, Path], server: SimServer, tmp_path: Path
) -> None:
    """The scheduler killed while its worker runs local pairs: the experiment stops with one line
    naming the scheduler (it stored each pair in flight as a Dask cancellation, then hung), keeps
    what it stored, and a re-run finishes with the local executor's results."""
    from moa.errors import UserError

    with killable_scheduler(tmp_path) as (address, scheduler):
        exp = _experiment(tmp_path, server.base_url, address)
        errors: list[BaseException] = []

        def run() -> None:
            try:
                Experiment.from_file(exp, out=tmp_path / "out", progress=False).run()
            except BaseException as e:
                errors.append(e)

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 300
        while thread.is_alive() and time.monotonic() < deadline:
            try:
                stored = _runs(tmp_path / "out")
            except sqlite3.Error:  # not created yet
                stored = {}
            if any(setup != "api" for setup, _ in stored):
                scheduler.kill()
                scheduler.wait(60)
                break
            time.sleep(0.02)
        assert scheduler.poll() is not None, f"no local pair was stored before the end: {errors}"
        thread.join(180)
        assert not thread.is_alive(), "the experiment hung after its scheduler was gone"
    (error,) = errors
    assert isinstance(error, UserError), repr(error)
    assert str(error).startswith(f"executor `{address}`: the Dask scheduler is gone") and "\n" not in str(
        error
    )
    stored = _runs(tmp_path / "out")
    assert len(stored) < len(SETUPS) * len(ROWS)
    assert not any("Cancel" in str(row[1]) for row in stored.values())  # no pair failed for Dask's sake
    assert _run(tmp_path, server.base_url, "local").complete
    assert _runs(tmp_path / "out") == _runs(local[1])


def test_a_lost_quorum_on_a_worker_comes_back_as_on_the_driver(cluster: Any) -> None:
    """A pair failing on a worker with an error whose constructor takes keyword-only arguments
    (`QuorumNotReached`) comes back as the local executor gives it, its calls kept: unpickling it on
    the driver raised TypeError, so the pair was stored as that TypeError with no calls."""
    from moa.errors import QuorumNotReached
    from moa.eval.datasets import Item
    from moa.experiment.executors.worker import PairTask

    smol = {"model": "local/smollm2-135m", "temperature": 0, "max_tokens": 8}
    cramped = {**smol, "params": {"n_ctx": 16}}
    topology = load_data(
        {
            "name": "quorum",
            "kind": "parallel",
            "workers": ["c1", "c2", "ok"],
            "aggregator": "ok",
            "quorum": 2,
            "agents": {"ok": smol, "c1": cramped, "c2": {**cramped, "params": {"n_ctx": 16, "n_seq_max": 2}}},
        }
    )
    task = PairTask(topology, Item(id="q", input=" ".join(["What is 1 plus 1?"] * 8)), "scope", {})

    here, there = asyncio.run(_on_both_executors(task, cluster.scheduler_address))
    assert isinstance(here.error, QuorumNotReached) and isinstance(there.error, QuorumNotReached)

    def fields(e: QuorumNotReached) -> tuple[str, str, int, int]:
        # the message ends with the failure that settled first, `c1`'s or `c2`'s: a race either side
        return str(e).split("; first failure:")[0], e.node, e.needed, e.answered

    assert fields(there.error) == fields(here.error)
    assert sorted(str(e) for e in there.error.errors) == sorted(str(e) for e in here.error.errors)
    assert sorted(c.node for c in there.error.calls) == sorted(c.node for c in here.error.calls) != []


@pytest.mark.parametrize("case", ["missing file after a call", "refused prompt"])
def test_a_user_error_on_a_worker_comes_back_as_on_the_driver(
    case: str, cluster: Any, tmp_path: Path
) -> None:
    """A pair failing on a worker with a `UserError` comes back as the local executor gives it,
    naming the worker: its class (a `RequestRefused` and its `field`) and its calls kept. It was
    wrapped in a new `UserError`, so the calls made before it were not booked."""
    from moa.errors import RequestRefused, UserError
    from moa.eval.datasets import Item
    from moa.experiment.executors.worker import PairTask

    smol = {"model": "local/smollm2-135m", "temperature": 0, "max_tokens": 4}
    missing = {"model": f"local/{tmp_path / 'missing.gguf'}", "max_tokens": 4}
    topology = load_data(
        {
            "name": "late-failure",
            "agents": {"a": smol, "b": missing},
            "nodes": [
                {"id": "n1", "agent": "a"},
                {"id": "n2", "agent": "b", "inputs": ["n1"], "prompt": "aggregate"},
            ],
            "output": "n2",
        }
    )
    prompt = "What is 1 plus 1?" if case == "missing file after a call" else "   "
    task = PairTask(topology, Item(id="q", input=prompt), "scope", {})

    here, there = asyncio.run(_on_both_executors(task, cluster.scheduler_address))
    assert isinstance(here.error, UserError) and type(there.error) is type(here.error)
    assert re.fullmatch(
        rf"Dask worker tcp://127\.0\.0\.1:\d+: {re.escape(str(here.error))}", str(there.error)
    )
    assert [c.node for c in there.error.calls] == [c.node for c in here.error.calls]
    if case == "missing file after a call":
        assert [c.node for c in here.error.calls] == ["n1"]
    else:
        assert isinstance(there.error, RequestRefused) and there.error.field == "prompt"


async def _on_both_executors(task: Any, address: str) -> tuple[Any, Any]:
    """``task``'s outcome on the local executor, then on the Dask worker at ``address``."""
    from moa.experiment.executors import LocalExecutor

    executor = await DaskExecutor.open(address)
    try:
        return await LocalExecutor().run_pair(task), await executor.run_pair(task)
    finally:
        await executor.aclose()
