"""One Runner across event loops, as an application uses it (``run_sync`` per request, a test
framework's loop per test): the connections a loop opened are closed when it ends."""

from __future__ import annotations

import asyncio
import gc
import threading
import time
import weakref
from http.server import BaseHTTPRequestHandler
from typing import ClassVar

import pytest

import moa
from moa import build
from moa._loops import PerLoop
from moa._run.runner import default_runner
from moa.testing.sim import SimServer
from tests.loopback_http import completion, send_body, threaded_server


class _Counting(BaseHTTPRequestHandler):
    """Answers every completion over keep-alive, counting the connections its clients hold open."""

    protocol_version = "HTTP/1.1"
    lock = threading.Lock()
    open_now = 0
    opened = 0
    seen: ClassVar[list[int]] = []

    def setup(self) -> None:
        super().setup()
        with _Counting.lock:
            _Counting.open_now += 1
            _Counting.opened += 1

    def finish(self) -> None:
        with _Counting.lock:
            _Counting.open_now -= 1
        super().finish()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["content-length"]))
        send_body(self, 200, completion("an answer"))

    def log_message(self, *args: object) -> None:
        pass


def _open_connections_settle_at_zero() -> bool:
    """Whether the clients have closed every connection (the server sees each close in its own
    thread, soon after); waits 30 s at most, a hang guard."""
    end = time.monotonic() + 30
    while _Counting.open_now and time.monotonic() < end:
        time.sleep(0.01)
    return _Counting.open_now == 0


@pytest.mark.parametrize("transport", ["litellm", "openai-http"])
def test_a_shared_runner_leaves_no_connection_open_after_each_run_sync(transport: str) -> None:
    """Through litellm, the clients made for an agent's api_base were never closed when their loop
    ended: each `run_sync` on a shared Runner (a web app's request handler) left a socket open, two
    file descriptors a request with a server in the same process, until the process ran out."""
    _Counting.open_now = _Counting.opened = 0
    with threaded_server(_Counting) as url:
        topology = build.single(build.agent("openai/m", api_base=url, transport=transport))
        runner = moa.Runner()
        for _ in range(3):
            assert topology.run_sync("q", runner=runner).output == "an answer"
            assert _open_connections_settle_at_zero()
        # the default runner of a loop, which nothing closes
        assert asyncio.run(topology.run("q")).output == "an answer"
        assert _open_connections_settle_at_zero()
        assert _Counting.opened == 4  # one connection a loop: the count above saw real ones


async def test_closing_the_runner_closes_the_litellm_clients_of_its_loop() -> None:
    """`aclose` on the loop that made them closes them at once (the loop's end is a backstop)."""
    _Counting.open_now = _Counting.opened = 0
    with threaded_server(_Counting) as url:
        topology = build.single(build.agent("openai/m", api_base=url, transport="litellm"))
        async with moa.Runner() as runner:
            assert (await topology.run("q", runner=runner)).output == "an answer"
        assert await asyncio.to_thread(_open_connections_settle_at_zero)
        assert _Counting.opened == 1


def test_the_default_runner_of_a_loop_goes_with_the_loop(sim: SimServer) -> None:
    """Its HTTP session holds the loop, so the loop's weak key never let go: each `asyncio.run(
    topology.run(...))` (a job queue's worker, a test's loop) kept a loop, a runner and a session."""
    topology = build.single(build.agent("openai/m", api_base=sim.base_url, transport="openai-http"))
    runners: list[weakref.ref[moa.Runner]] = []

    async def job() -> str:
        answer = (await topology.run("q")).output
        runners.append(weakref.ref(default_runner()))
        return answer

    assert [asyncio.run(job()) for _ in range(3)] == ["answer from m: q"] * 3
    gc.collect()
    assert [r() for r in runners] == [None] * 3


def test_a_shared_runner_keeps_no_ended_loop_on_the_direct_path(sim: SimServer) -> None:
    """The direct path kept a client per loop under a weak key, but the client's session holds its
    loop: a shared Runner kept every ended `run_sync` loop (and its closed session) for good. A loop
    that has ended is dropped when the next one opens its client."""
    topology = build.single(build.agent("openai/m", api_base=sim.base_url, transport="openai-http"))
    runner = moa.Runner()
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def job() -> str:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        return (await topology.run("q", runner=runner)).output

    assert [asyncio.run(job()) for _ in range(3)] == ["answer from m: q"] * 3
    gc.collect()
    assert [r() is None for r in loops[:-1]] == [True, True]  # the last waits for the next loop


def test_per_loop_state_goes_with_its_loop_however_it_ends() -> None:
    """`PerLoop`, moa's one table of per-loop state: a loop that `asyncio.run` ends drops its value
    then, its end awaited on that loop; a loop closed by hand (no async generators shut down) is
    dropped when the next loop makes its value."""
    ended: list[tuple[str, bool]] = []

    async def on_end(value: str) -> None:
        ended.append((value, asyncio.get_running_loop().is_running()))

    table: PerLoop[str] = PerLoop(on_end)

    async def keep(value: str) -> None:
        table.set(asyncio.get_running_loop(), value)

    asyncio.run(keep("first"))
    assert len(table) == 0 and ended == [("first", True)]

    loop = asyncio.new_event_loop()
    loop.run_until_complete(keep("by hand"))
    loop.close()  # no shutdown_asyncgens: its end is never run
    assert len(table) == 1
    asyncio.run(keep("next"))
    assert table.get(loop) is None and ended == [("first", True), ("next", True)]
