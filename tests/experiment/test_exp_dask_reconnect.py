"""A Dask scheduler briefly out of reach is not a scheduler gone: the client reconnects, and the
executor waits for it (the README's 5 seconds) rather than stopping the experiment at once. The
blip is real: a TCP relay on 127.0.0.1 between the executor and a real ``LocalCluster`` drops
every connection through it."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from moa.errors import UserError
from moa.eval.datasets import Item
from moa.eval.execution import ExecutionEvaluator

distributed = pytest.importorskip("distributed")

from moa.experiment.executors.dask_executor import DaskExecutor  # noqa: E402

ITEM = Item(id="add", input="write add", tests=["assert add(1, 2) == 3"])
ANSWER = "def add(a, b):\n    return a + b\n"
# long enough to be on the worker when the connection drops
SLOW_ANSWER = "import time\ntime.sleep(1)\n" + ANSWER
HANG_GUARD_S = 120


class Relay:
    """Forwards 127.0.0.1 connections to the scheduler. ``cut`` drops every open connection (a
    network blip); while ``held``, new connections are accepted and closed at once (the scheduler
    out of reach)."""

    def __init__(self, target: str) -> None:
        self.point_to(target)
        self.held = False
        self._open: list[asyncio.StreamWriter] = []
        self._server: asyncio.Server | None = None

    def point_to(self, target: str) -> None:
        """Send new connections to the scheduler at ``target``."""
        host, port = target.removeprefix("tcp://").rsplit(":", 1)
        self.target = (host, int(port))

    async def start(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"tcp://127.0.0.1:{port}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.held:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:  # that scheduler has closed
            writer.transport.abort()
            return
        self._open += [writer, up_writer]
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.transport.abort()

    def cut(self) -> None:
        for writer in self._open:
            writer.transport.abort()
        self._open.clear()

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()


def _cluster() -> Any:
    return distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        scheduler_kwargs={"dashboard": False},
        silence_logs=50,
        asynchronous=True,
    )


@pytest.fixture
async def relayed() -> AsyncIterator[tuple[DaskExecutor, Relay]]:
    """An executor attached through a ``Relay`` to a one-worker loopback ``LocalCluster``."""
    async with _cluster() as cluster:
        relay = Relay(cluster.scheduler_address)
        executor = await DaskExecutor.open(await relay.start())
        try:
            yield executor, relay
        finally:
            relay.held = False
            await executor.aclose()
            await relay.close()


async def _until(condition: Any, what: str) -> None:
    try:
        async with asyncio.timeout(HANG_GUARD_S):
            while not condition():
                await asyncio.sleep(0.01)
    except TimeoutError:
        raise AssertionError(f"waited {HANG_GUARD_S} s for {what}") from None


async def _blip(executor: DaskExecutor, relay: Relay) -> None:
    """Drop the connections and hold new ones off until the client is seen reconnecting."""
    client = executor._client
    relay.held = True
    relay.cut()
    await _until(lambda: client.status == "connecting", "the client to notice the drop")


async def test_a_task_sent_while_the_client_reconnects_waits_for_it(
    relayed: tuple[DaskExecutor, Relay],
) -> None:
    """An answer scored while the client is reconnecting is scored once it is back: the executor
    took any status but "running" for a scheduler gone and stopped the experiment at once."""
    executor, relay = relayed
    await _blip(executor, relay)
    scoring = asyncio.create_task(executor.score(ExecutionEvaluator(), ITEM, ANSWER))
    await asyncio.sleep(0)  # the scoring checks the connection while it is down
    relay.held = False
    async with asyncio.timeout(HANG_GUARD_S):
        score = await scoring
    assert (score.value, score.detail) == (1.0, "passed")


async def test_a_task_in_flight_during_a_blip_is_sent_again(relayed: tuple[DaskExecutor, Relay]) -> None:
    """A program running on a worker when the connection drops is scored again once the client
    has reconnected: Dask cancels the client's futures when it loses the scheduler, and that was
    taken for a scheduler gone."""
    executor, relay = relayed
    client = executor._client
    scoring = asyncio.create_task(executor.score(ExecutionEvaluator(), ITEM, SLOW_ANSWER))

    async def running() -> bool:
        return any((await client.processing()).values())

    async with asyncio.timeout(HANG_GUARD_S):
        while not await running():
            await asyncio.sleep(0.01)
    await _blip(executor, relay)
    relay.held = False
    async with asyncio.timeout(HANG_GUARD_S):
        score = await scoring
    assert (score.value, score.detail) == (1.0, "passed")


async def test_a_scheduler_restarted_during_a_blip_is_gone(relayed: tuple[DaskExecutor, Relay]) -> None:
    """A client that reconnects to another scheduler at the same address (the scheduler restarted)
    stops the experiment in one line: the new scheduler knows neither the workers' plugin nor any
    task the executor sent, as the README says of a restarted scheduler."""
    executor, relay = relayed
    async with _cluster() as other:
        await _blip(executor, relay)
        relay.point_to(other.scheduler_address)
        relay.held = False
        await _until(lambda: executor._client.status != "connecting", "the client to reconnect")
        with pytest.raises(UserError) as info:
            async with asyncio.timeout(HANG_GUARD_S):
                await executor.score(ExecutionEvaluator(), ITEM, ANSWER)
    assert str(info.value) == (
        f"executor `{executor.name}`: the Dask scheduler is gone (restarted); what finished is stored, "
        "re-run to resume"
    )
