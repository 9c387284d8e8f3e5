"""Instructions per call, counted by callgrind: what the machine's load does not move.

Timed ratios on a shared two-core machine move by half between rounds; an instruction count of the
client's own process does not. Each contender runs twice under ``valgrind --tool=callgrind``
against the loopback sim server (its own process, not counted), with ``--small`` and ``--large``
calls after the same warm-up, and the figure is the slope: (instructions of the large run - those
of the small one) / (large - small), so start-up and imports cancel out.

* ``bare aiohttp``: a post and ``json.loads`` of the reply, as in ``throughput.py``.
* ``moa direct backend``: ``OpenAIHTTPModel.complete`` alone.
* ``moa direct``: a one-node ``Topology.run`` on the direct path.
* ``moa serve app``: the served ASGI app (``moa.serve.create_app``) called in-process, without a
  server, on a zero-latency fake model: moa's own share of a served request (uvicorn's is not moa's).
* ``fake in-process``: the same topology on the same fake, run in-process.

Needs ``valgrind``; runs take minutes (callgrind runs Python about 50 times slower).

    python benchmarks/instructions.py [--small 500] [--large 3000] [--concurrency 256]
                                      [--serve-concurrency 64] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

import _common  # noqa: F401  (puts the repo on sys.path)
from _common import child_env, sim_server, table

PROMPT = "what is the capital of france"
ANSWER = "Paris is the capital of France."
CONTENDERS = ("bare aiohttp", "moa direct backend", "moa direct", "moa serve app", "fake in-process")
#: the contenders that call the sim server (the others answer in-process)
NETWORK = CONTENDERS[:3]


def _calls(name: str, url: str) -> tuple[Callable[[], Awaitable[object]], Callable[[], Awaitable[None]]]:
    """(one call, closing what it opened) for the contender ``name``."""
    import aiohttp

    import moa
    from moa.models.base import ModelReply, ModelRequest
    from moa.models.openai_http import OpenAIHTTPModel
    from moa.results import Usage

    class ZeroLatency:
        local = False

        async def complete(self, request: ModelRequest, on_token: Any = None) -> ModelReply:
            return ModelReply(ANSWER, Usage(12, 7), request.model, "stop")

        async def aclose(self) -> None:
            return None

    agent: dict[str, Any] = (
        {"model": "openai/m", "api_base": url} if name in NETWORK else {"model": "fake/zero"}
    )
    topo = moa.Topology.model_validate(
        {"name": "single", "kind": "single", "agent": "a", "agents": {"a": agent}}
    )
    runner = moa.Runner(models={"fake/*": ZeroLatency()})
    if name == "bare aiohttp":
        session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=512))
        body = json.dumps({"model": "m", "messages": [{"role": "user", "content": PROMPT}]}).encode()

        async def bare() -> str:
            async with session.post(
                url + "/chat/completions", data=body, headers={"content-type": "application/json"}
            ) as r:
                return str(json.loads(await r.read())["choices"][0]["message"]["content"])

        return bare, session.close
    if name == "moa direct backend":
        backend = OpenAIHTTPModel()
        request = ModelRequest(model="openai/m", messages=[{"role": "user", "content": PROMPT}], api_base=url)

        async def complete() -> str:
            return (await backend.complete(request)).text

        return complete, backend.aclose
    if name in ("moa direct", "fake in-process"):

        async def run() -> str:
            return (await topo.run(PROMPT, runner=runner)).output

        return run, runner.aclose
    return _served(topo, runner), runner.aclose


def _served(topo: Any, runner: Any) -> Callable[[], Awaitable[None]]:
    """One request to the served app, through its middleware, as an ASGI server would make it."""
    from moa.serve import create_app

    app = create_app([topo], runner=runner)
    body = json.dumps({"model": "single", "messages": [{"role": "user", "content": PROMPT}]}).encode()
    headers = [
        (b"host", b"127.0.0.1:8000"),
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "POST", "scheme": "http", "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions", "query_string": b"", "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
    }  # fmt: skip

    async def request() -> None:
        answered = asyncio.get_running_loop().create_future()
        asked = False
        status = []

        async def receive() -> dict[str, Any]:
            nonlocal asked
            if not asked:
                asked = True
                return {"type": "http.request", "body": body, "more_body": False}
            await answered  # the client stays until the reply is sent
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])

        await app(dict(scope), receive, send)
        answered.set_result(None)
        if status != [200]:
            raise RuntimeError(f"the served app answered {status}")

    return request


async def _child(name: str, n: int, concurrency: int, url: str) -> None:
    call, close = _calls(name, url)
    left = 0

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await call()

    left = 2 * concurrency  # warm: connections, first-call setup
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    gc.collect()
    gc.freeze()  # as throughput.py does: the imported heap is not walked by every collection
    left = n
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await close()


def _instructions(name: str, n: int, concurrency: int, url: str) -> int:
    """The instructions callgrind counts for one child process making ``n`` calls."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        p = subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable, __file__,
             "--child", name, str(n), str(concurrency), url],
            capture_output=True, text=True, env={**child_env(), "PYTHONHASHSEED": "0"}, check=False,
        )  # fmt: skip
    found = re.search(r"Collected : (\d+)", p.stderr)
    if p.returncode != 0 or found is None:
        raise RuntimeError(f"{name}: callgrind run failed ({p.returncode}): {p.stderr[-2000:]}")
    return int(found.group(1))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        name, n, concurrency, url = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
        asyncio.run(_child(name, n, concurrency, url))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--small", type=int, default=500)
    ap.add_argument("--large", type=int, default=3000)
    ap.add_argument("--concurrency", type=int, default=256, help="calls in flight on the direct path")
    ap.add_argument("--serve-concurrency", type=int, default=64, help="requests in flight to the app")
    ap.add_argument("--only", nargs="+", choices=CONTENDERS, default=list(CONTENDERS))
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        print("valgrind is not installed: nothing to count", file=sys.stderr)
        return 2
    per_call: dict[str, float] = {}
    with sim_server(0.0) as url:
        for name in args.only:
            conc = args.concurrency if name in NETWORK else args.serve_concurrency
            small = _instructions(name, args.small, conc, url)
            large = _instructions(name, args.large, conc, url)
            per_call[name] = (large - small) / (args.large - args.small)
    print(f"## instructions per call (callgrind; slope between {args.small} and {args.large} calls)\n")
    rows = [[name, args.concurrency if name in NETWORK else args.serve_concurrency, f"{v / 1e3:,.1f}k"]
            for name, v in per_call.items()]  # fmt: skip
    print(table(["contender", "in flight", "instructions per call"], rows))
    ratios = [
        ("bare aiohttp / moa direct", "bare aiohttp", "moa direct"),
        ("moa direct backend / moa direct", "moa direct backend", "moa direct"),
        ("fake in-process / moa serve app", "fake in-process", "moa serve app"),
    ]
    shown = [[label, per_call[a] / per_call[b]] for label, a, b in ratios if a in per_call and b in per_call]
    if shown:
        print()
        print(table(["ratio (instructions: the calls/s ratio if CPU-bound)", "value"], shown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
