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
