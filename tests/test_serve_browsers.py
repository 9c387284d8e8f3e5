"""`moa serve` on loopback without --api-key-env is "loopback only": a web page open in the user's
browser must not spend its keys (a cross-origin form or text/plain POST is sent without a CORS
preflight) nor read its replies (DNS rebinding: the page's own name pointed at 127.0.0.1)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import moa
from moa.testing.sim import SimModel, SimServer

ROOT = Path(__file__).resolve().parent.parent
BODY = '{"model": "one", "messages": [{"role": "user", "content": "hi"}]}'


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, SimServer]]:
    """`moa serve` over a one-agent topology on a simulated provider; its base URL and the provider."""
    f = tmp_path_factory.mktemp("serve") / "one.yaml"
    with SimServer(models={"sim": SimModel()}) as srv:
        f.write_text(
            "name: one\nkind: single\nagent: a\nagents:\n"
            f'  a: {{model: openai/sim, api_base: "{srv.base_url}", api_key_env: MOA_SIM_KEY}}\n'
        )
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "MOA_SIM_KEY": "k"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "moa", "serve", str(f), "--port", "0"],
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            cwd=ROOT,
        )
        try:
            assert proc.stderr is not None
            banner = proc.stderr.readline()
            found = re.search(r"at (http://127\.0\.0\.1:\d+/v1)", banner)
            assert found, banner
            yield found.group(1), srv
        finally:
            proc.terminate()
            proc.wait(timeout=30)


@pytest.mark.parametrize(
    ("headers", "refusal"),
    [
        ({"Origin": "http://evil.example", "Content-Type": "text/plain"}, "another origin"),
        ({"Origin": "null"}, "another origin"),
        # an Origin urllib cannot parse was a 500 and a traceback in the server's log
        ({"Origin": "http://[::1"}, "another origin"),
        ({"Host": "evil.example"}, "Host `evil.example` is not a loopback name"),
    ],
)
def test_a_web_page_is_refused_before_any_call(
    served: tuple[str, SimServer], headers: dict[str, str], refusal: str
) -> None:
    """A cross-origin request, or one whose Host is a foreign name, gets a 403 naming why; the
    provider is never called (it was: 200, and the answer, paid for with the server's keys)."""
    url, srv = served
    before = srv.stats.requests
    r = httpx.post(f"{url}/chat/completions", content=BODY, headers=headers, timeout=30)
    assert r.status_code == 403 and refusal in r.json()["error"]["message"], r.text
    assert srv.stats.requests == before


def test_api_clients_and_the_same_origin_are_served(served: tuple[str, SimServer]) -> None:
    """Clients that send no Origin (SDKs, curl), `localhost`, and a page of the server's own origin."""
    url, _ = served
    port = url.split(":")[2].split("/")[0]
    for headers in ({}, {"Host": f"localhost:{port}"}, {"Origin": f"http://127.0.0.1:{port}"}):
        r = httpx.post(f"{url}/chat/completions", content=BODY, headers=headers, timeout=30)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"], (headers, r.text)


async def test_an_app_of_create_app_is_guarded_under_any_asgi_server() -> None:
    """The guard was `moa serve`'s alone: an application serving `create_app` with its own ASGI
    server on loopback answered a web page's cross-origin POST, and a rebound Host, on its keys."""
    from moa.serve import create_app
    from moa.testing import FunctionModel
    from moa.topology.loader import load_data

    runner = moa.Runner(models={"fake/m": FunctionModel(lambda r: "paid answer")})
    app = create_app(
        [load_data({"name": "one", "kind": "single", "agent": "a", "agents": {"a": {"model": "fake/m"}}})],
        runner=runner,
    )
    asgi = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
    # the ASGI `server` of this transport is the URL's host: a loopback interface here
    async with httpx.AsyncClient(transport=asgi, base_url="http://127.0.0.1:8000") as client:
        foreign = await client.post(
            "/v1/chat/completions", content=BODY, headers={"Origin": "http://evil.example"}
        )
        rebound = await client.post(
            "/v1/chat/completions", content=BODY, headers={"Host": "evil.example:8000"}
        )
        own = await client.post(
            "/v1/chat/completions", content=BODY, headers={"Origin": "http://127.0.0.1:8000"}
        )
    assert foreign.status_code == rebound.status_code == 403, (foreign.text, rebound.text)
    assert "another origin" in foreign.json()["error"]["message"]
    assert "not a loopback name" in rebound.json()["error"]["message"]
    assert own.status_code == 200 and own.json()["choices"][0]["message"]["content"] == "paid answer"
    await runner.aclose()


async def test_with_an_api_key_the_key_is_the_boundary() -> None:
    """A server with a key answers a request bearing it whatever its Host (a reverse proxy on the
    same machine forwards the public name) and Origin: a web page cannot send a key it does not
    know, and the guard would have refused every proxied request."""
    from moa.serve import create_app
    from moa.testing import FunctionModel
    from moa.topology.loader import load_data

    runner = moa.Runner(models={"fake/m": FunctionModel(lambda r: "answer")})
    spec = {"name": "one", "kind": "single", "agent": "a", "agents": {"a": {"model": "fake/m"}}}
    app = create_app([load_data(spec)], runner=runner, api_key="k")
    asgi = httpx.ASGITransport(app=app, client=("127.0.0.1", 5000))
    async with httpx.AsyncClient(transport=asgi, base_url="http://127.0.0.1:8000") as client:
        headers = {"Host": "api.example.com", "Authorization": "Bearer k"}
        proxied = await client.post("/v1/chat/completions", content=BODY, headers=headers)
        keyless = await client.post(
            "/v1/chat/completions", content=BODY, headers={"Origin": "http://evil.example"}
        )
    assert proxied.status_code == 200, proxied.text
    assert keyless.status_code == 401, keyless.text
    await runner.aclose()


def test_the_host_check_is_kept_only_for_headers_a_host_name_fits_in() -> None:
    """The Host check is cached per (interface, Host) pair, but a Host header longer than any host
    name and port is checked without being kept (a client cannot fill the cache with megabytes),
    and is refused all the same."""
    from moa import _browser_guard

    def scope(host: str) -> dict[str, object]:
        return {"headers": [(b"host", host.encode())], "server": ("127.0.0.1", 8000)}

    kept = _browser_guard._kept_foreign_host
    kept.cache_clear()
    assert _browser_guard.refusal(scope("127.0.0.1:8000")) is None
    assert _browser_guard.refusal(scope("evil.example:8000")) is not None
    assert kept.cache_info().currsize == 2
    assert _browser_guard.refusal(scope("e" * 100_000 + ".example")) is not None
    assert _browser_guard.refusal(scope("localhost" + " " * 300)) is not None
    assert kept.cache_info().currsize == 2
