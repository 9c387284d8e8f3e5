"""Secrets never leave through error text: a provider that echoes the key it refused puts it in no
message, log line, store, report or reply, on either transport."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import base64
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from moa._run import Runner
from moa.errors import MalformedReply, ModelError, ProviderError, RequestRejected
from moa.log import redact
from moa.models.base import ModelRequest
from moa.models.errors import error_for_status
from moa.models.litellm import LitellmModel
from moa.models.openai_http import OpenAIHTTPModel
from moa.scrub import MASK, environment_secrets, scrub, scrub_clip, url_secrets
from moa.serve import create_app
from moa.testing import FunctionModel
from moa.topology.loader import load_data
from tests.loopback_http import send_body, threaded_server
from tests.serving import serving

# litellm's streaming types trip a pydantic UserWarning on first use (not ours to fix)
pytestmark = pytest.mark.filterwarnings("ignore:.*using the `ReadOnly` qualifier:UserWarning")

ROOT = Path(__file__).resolve().parent.parent

# the keys the agents send, one per shape, and one of no shape at all (only the exact match catches it)
K_PROJ = "sk-proj-Q2x7Lm9Rt4Vb8Nc1Zd6Fh3Jk5Pw0YsT7u"
K_AIZA = "AIzaSyD4f7Gh2Jk9Lm3Np8Qr1St6Uv0Wx5Yz2Ab"
K_HEX = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b"
K_ODD = "Opal.Tiger/Wombat+Marsh=Quince"
KEYS = {"MOA_T_KEY_PROJ": K_PROJ, "MOA_T_KEY_AIZA": K_AIZA, "MOA_T_KEY_HEX": K_HEX, "MOA_T_KEY_ODD": K_ODD}
# keys the provider quotes besides the one it received: masked by their shape alone
OTHER_AIZA = "AIzaSyB9c8d7e6f5g4h3i2j1k0LmNoPqRsTuVwX"
OTHER_ANT = "sk-ant-api03-Zq8Wm2Xn5Rb7Tc1Yv4Pk6Hd3Jf9Lg0Se"
SECRETS = [*KEYS.values(), OTHER_AIZA, OTHER_ANT]


def leaks(text: str) -> list[str]:
    """The secrets found in ``text``, whole or as their middle dozen characters."""
    found = []
    for s in SECRETS:
        mid = len(s) // 2
        if s in text or s[mid - 6 : mid + 6] in text:
            found.append(s)
    return found


# how a provider may write a key back besides verbatim (model `<name>-echo` of the provider below)
_REWRITES: dict[str, Callable[[str], str]] = {
    "upper-echo": str.upper,
    "split-echo": lambda k: f"{k[:9]}\n{k[9:20]} {k[20:]}",
    "url-echo": lambda k: k.replace("/", "%2F"),  # only some characters escaped
    "b64-echo": lambda k: base64.b64encode(k.encode()).decode(),
    "uesc-echo": lambda k: "".join(f"\\u{ord(c):04x}" if c in "aeiou" else c for c in k),
}


class _Provider(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that refuses every key and quotes it back, as real ones do:
    401 with the key in ``error.message`` (400 for model ``refuse-400``: a refusal of the request's
    content, whose words ``moa serve`` passes on to its client), a 200 stream whose error event
    quotes it (model ``sse-echo``), or a 200 that is not JSON and starts with it (model
    ``junk-echo``)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *_args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        auth = self.headers.get("authorization", "")
        key = auth.removeprefix("Bearer ")
        message = (
            f"Incorrect API key provided: {key}. You sent 'Authorization: {auth}' ([{key}]). "
            f"Keys on file: {OTHER_AIZA}, {OTHER_ANT}."
        )
        model = str(body.get("model", ""))
        if model == "header-echo":  # quotes the request's own headers (a gateway's debugging aid)
            message = "refused; " + "; ".join(
                f"{k}: {v}" for k, v in self.headers.items() if k.lower().startswith("x-")
            )
        if model in _REWRITES:  # the key alone, written back the way this model names
            message = f"Unauthorized. You sent [{_REWRITES[model](key)}]."
        error = {"error": {"message": message, "type": "invalid_request_error", "code": "invalid_api_key"}}
        if model == "sse-echo" and body.get("stream"):
            self._send(200, b"data: " + json.dumps(error).encode() + b"\n\n", "text/event-stream")
        elif model == "content-echo":  # a 200 whose answer quotes the request's key
            reply = {
                "id": "x",
                "object": "chat.completion",
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {
                            "role": "assistant",
                            "content": f"You sent {auth}; as base64 "
                            + base64.b64encode(key.encode()).decode()
                            + f". An example key: {OTHER_ANT}",
                        },
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12},
            }
            self._send(200, json.dumps(reply).encode(), "application/json")
        elif model == "junk-echo":
            self._send(200, f"[{key}] <html>{message}</html>".encode(), "text/html")
        else:
            self._send(400 if model == "refuse-400" else 401, json.dumps(error).encode(), "application/json")

    def _send(self, status: int, data: bytes, ctype: str) -> None:
        send_body(self, status, data, ctype)


@contextmanager
def echoing_provider() -> Iterator[str]:
    """The echoing provider on 127.0.0.1 in a thread; yields its /v1 base URL."""
    with threaded_server(_Provider) as url:
        yield url + "/v1"


def _agents(base: str, model: str = "refuse") -> dict[str, Any]:
    """One agent per (key, transport): every key is sent over litellm and over direct HTTP."""
    agents: dict[str, Any] = {}
    for i, env in enumerate(KEYS):
        for transport in ("litellm", "openai-http"):
            agents[f"a{i}{transport[0]}"] = {
                "model": f"openai/{model}",
                "api_base": base,
                "api_key_env": env,
                "transport": transport,
                "retry": {"max_attempts": 1},
            }
    return agents


def _topology(base: str, name: str = "echo", model: str = "refuse") -> dict[str, Any]:
    """Every worker is called (quorum 1 waits for all of them to fail) and every one is refused."""
    agents = _agents(base, model)
    workers = list(agents)
    return {
        "name": name,
        "kind": "parallel",
        "workers": workers,
        "aggregator": workers[0],
        "quorum": 1,
        "agents": agents,
    }


def _write_topology(path: Path, base: str, name: str = "echo") -> Path:
    path.write_text(json.dumps(_topology(base, name)))
    return path


def moa_cli(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", **KEYS}
    return subprocess.run(
        [sys.executable, "-m", "moa", *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=180
    )


# -- the rules ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "secret",
    [
        K_PROJ,
        OTHER_ANT,
        K_AIZA,
        OTHER_AIZA,
        "AKIAIOSFODNN7EXAMPLE",
        "gsk_8Jx2Lp5Qw9Zr3Tv6Yb1Nm4Kc7Hd0Fs2GaE",
        "xai-Rt5Yu8Io1Pa4Sd7Fg0Hj3Kl6Zx9Cv2Bn5Mq",
        "hf_Jk2Lm5Np8Qr1St4Uv7Wx0Yz3Ab6Cd9Ef",
        "ghp_Aa1Bb2Cc3Dd4Ee5Ff6Gg7Hh8Ii9Jj0KkLl",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        K_HEX,
    ],
)
def test_scrub_masks_each_shape(secret: str) -> None:
    """Each known key shape is masked in running text without being told the key."""
    out = scrub(f"Incorrect value provided: {secret}. Try again.")
    assert secret not in out and MASK in out and out.endswith(". Try again.")


def test_scrub_masks_bearer_and_a_token_after_a_key_word() -> None:
    """A bearer credential and a long token right after "key"/"token"/"secret" are masked."""
    text = (
        "Authorization: Bearer Zx81Lq.Wp-3~Rt; api_key=Q8zP2mX7vN4bL1kJ9hG3fD6s; "
        'secret: "w7Jalr/UtnFEMIK7MDENGbPxRfiCY+EXAMPLE"; token 3kT9q2Lm7Xv4Pz8Rw1Nb6Yc'
    )
    out = scrub(text)
    for part in ("Zx81Lq", "Q8zP2mX7", "w7Jalr", "3kT9q2Lm"):
        assert part not in out
    assert out.startswith("Authorization: Bearer ***; api_key=***")


def test_scrub_masks_a_bearer_credential_with_an_equals_sign_inside() -> None:
    """A bearer credential moa did not send is masked whole, not only up to its first "=" (the
    rest of the key used to stay)."""
    assert scrub(f"You sent 'Authorization: Bearer {K_ODD}'") == "You sent 'Authorization: Bearer ***'"


def test_scrub_masks_a_known_key_however_it_is_cut_or_cased() -> None:
    """A key moa sent is masked when wrapped over lines, re-cased, escaped character by character
    or base64-encoded at any offset; regex characters in it are taken literally."""
    b64 = base64.b64encode(b"user:" + K_ODD.encode() + b"!").decode()
    for text in (
        K_ODD[:7] + "\n  " + K_ODD[7:],
        K_ODD.swapcase(),
        K_ODD.replace("+", "%2b").replace("O", "\\u004f"),
        f"Basic {b64}",
        f"[{b64}]",
    ):
        assert "marsh" not in scrub(text, [K_ODD]).lower(), text
        assert MASK in scrub(text, [K_ODD])
    assert scrub("Opal.Tiger-Wombat", ["Opal.Tiger"]) == "***-Wombat"
    assert scrub("OpalxTiger", ["Opal.Tiger"]) == "OpalxTiger"  # "." is not a wildcard


def test_scrub_leaves_ordinary_text_alone() -> None:
    """Token counts, key names, words after "key" and short values are not secrets."""
    text = (
        '{"prompt_tokens": 12, "tokens": 12, "max_tokens": 4096} Invalid key provided: none. '
        "Your token limit is 128000 tokens; basic authentication failed for model "
        "hf-internal-testing/tiny-random-gpt2 (sk-learn, pk_user_account_id, the key `temperature`)."
    )
    assert scrub(text) == text


def test_scrub_masks_a_known_key_of_no_shape() -> None:
    """A key with no recognisable shape is masked by exact match, escaped forms too, not otherwise."""
    text = f"received [{K_ODD}] and a URL with q={quote(K_ODD, safe='')}"
    assert K_ODD in scrub(text)  # no rule recognises it ...
    out = scrub(text, known=[None, K_ODD + "\n"])
    assert "Wombat" not in out and out.startswith(f"received [{MASK}]")


def test_scrub_ignores_short_known_values() -> None:
    """A known value under 4 characters, or of letters only, is not masked: masking `k` or `calm`
    would garble every message."""
    assert scrub("keep calm", known=["k", "calm"]) == "keep calm"


def test_scrub_clip_never_cuts_a_key_in_half() -> None:
    """A key straddling the cut is masked whole before the text is clipped."""
    text = "x" * 70 + K_ODD + " tail"
    out = scrub_clip(text, 80, known=[K_ODD])
    assert len(out) <= 80 and "Opal" not in out and out.endswith("x" + MASK + " tail")


def test_log_redactor_uses_the_same_rules() -> None:
    """`moa.log.redact` masks the new shapes (Google, prefixed keys) as well as key-ish fields."""
    event = {"event": f"failed: {K_AIZA} {OTHER_ANT}", "api_key": "anything", "completion_tokens": 3}
    out = redact(event)
    assert leaks(json.dumps(out)) == [] and out["api_key"] == MASK and out["completion_tokens"] == 3


def test_error_for_status_masks_the_request_keys() -> None:
    """The shared status mapping masks the keys it is given, before cutting the message to size."""
    e = error_for_status(401, f"bad key: [{K_ODD}] " + "." * 480 + K_ODD, model="m", secrets=(K_ODD,))
    assert isinstance(e, RequestRejected) and "Opal" not in str(e) and "Opal" not in e.provider_message


# -- the backends, over real HTTP ----------------------------------------------------------------


def _request(base: str, model: str, key: str) -> ModelRequest:
    return ModelRequest(
        model=f"openai/{model}", messages=[{"role": "user", "content": "hi"}], api_base=base, api_key=key
    )


@pytest.mark.parametrize("key", [K_PROJ, K_ODD])
@pytest.mark.parametrize(
    ("model", "stream", "error"),
    [
        ("refuse", False, RequestRejected),
        ("refuse", True, RequestRejected),
        ("sse-echo", True, ProviderError),
        ("junk-echo", False, MalformedReply),
    ],
)
async def test_direct_http_errors_carry_no_key(
    key: str, model: str, stream: bool, error: type[ModelError]
) -> None:
    """openai-http: a 401, an error event in a stream and a body that is not JSON, each quoting the
    key, become errors that do not."""
    backend = OpenAIHTTPModel()
    try:
        with echoing_provider() as base, pytest.raises(error) as info:
            await backend.complete(_request(base, model, key), (lambda _t: None) if stream else None)
    finally:
        await backend.aclose()
    assert leaks(str(info.value)) == [] and leaks(info.value.provider_message) == []


@pytest.mark.parametrize("key", [K_HEX, K_ODD])
@pytest.mark.parametrize("stream", [False, True])
async def test_litellm_errors_carry_no_key(key: str, stream: bool) -> None:
    """litellm: the provider's 401 quoting the key becomes a RequestRejected that does not."""
    with echoing_provider() as base, pytest.raises(RequestRejected) as info:
        await LitellmModel().complete(_request(base, "refuse", key), (lambda _t: None) if stream else None)
    assert leaks(str(info.value)) == [] and leaks(info.value.provider_message) == []
    assert "Incorrect API key provided" in str(info.value)  # the provider's words are kept


@pytest.mark.parametrize("model", sorted(_REWRITES))
@pytest.mark.parametrize("backend", [OpenAIHTTPModel, LitellmModel])
async def test_a_key_written_back_in_another_form_is_masked(model: str, backend: type[Any]) -> None:
    """A provider that quotes the key upper-cased, split over lines, partly URL-escaped, base64-
    encoded or with JSON unicode escapes puts it in no error, on either transport."""
    instance = backend()
    try:
        with echoing_provider() as base, pytest.raises(RequestRejected) as info:
            await instance.complete(_request(base, model, K_ODD))
    finally:
        if isinstance(instance, OpenAIHTTPModel):
            await instance.aclose()
    text, written = str(info.value), _REWRITES[model](K_ODD)
    assert f"You sent [{MASK}]" in text, text
    assert not any(part in text.lower() for part in ("wombat", "marsh", "quince", "tiger")), text
    mid = len(written) // 2
    assert written[mid - 6 : mid + 6] not in text, text


async def test_direct_http_connection_error_carries_no_key() -> None:
    """A key httpx refuses to send (a newline in it) is not quoted by the connection error."""
    backend = OpenAIHTTPModel()
    try:
        with echoing_provider() as base, pytest.raises(ProviderError) as info:
            await backend.complete(_request(base, "refuse", K_ODD + "\n"))
    finally:
        await backend.aclose()
    assert "connection failed" in str(info.value) and leaks(str(info.value)) == []


# -- every artefact, end to end -------------------------------------------------------------------


def test_moa_run_json_and_logs_carry_no_key(tmp_path: Path) -> None:
    """`moa run --json --log json`: stdout (the calls and their errors) and stderr hold no key."""
    with echoing_provider() as base:
        p = moa_cli(
            "run",
            str(_write_topology(tmp_path / "t.json", base)),
            "--prompt",
            "hi",
            "--json",
            "--log",
            "json",
        )
    assert p.returncode == 1, p.stderr
    data = json.loads(p.stdout)
    errors = [c["error"] for c in data["calls"]]
    assert len(errors) == 8 and all(e and "Incorrect API key provided" in e for e in errors)
    assert '"event": "run.failed"' in p.stderr  # the log redactor had the error to redact
    assert leaks(p.stdout) == [] and leaks(p.stderr) == []


def test_debug_tracebacks_carry_no_key(tmp_path: Path) -> None:
    """`moa --debug run`: the traceback, chained provider exceptions included, holds no key."""
    with echoing_provider() as base:
        # one litellm agent: its error is raised from litellm's own exception, raw text and all
        agents = {k: v for k, v in _agents(base).items() if v["transport"] == "litellm"}
        for name, spec in agents.items():
            topo = {"name": "one", "kind": "single", "agent": name, "agents": {name: spec}}
            (tmp_path / f"{name}.json").write_text(json.dumps(topo))
            p = moa_cli("--debug", "run", str(tmp_path / f"{name}.json"), "--prompt", "hi")
            assert p.returncode == 1 and "The above exception was the direct cause" in p.stderr, p.stderr[
                -2000:
            ]
            assert leaks(p.stderr) == []


def test_moa_compare_artefacts_carry_no_key(tmp_path: Path) -> None:
    """`moa compare`: the SQLite store, results.jsonl, summary.json, the reports and stderr hold no key."""
    exp = tmp_path / "e"
    exp.mkdir()
    rows = [{"id": f"q{i}", "input": f"What is {i} plus {i}?", "target": str(2 * i)} for i in range(2)]
    (exp / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "out"
    with echoing_provider() as base:
        _write_topology(exp / "echo.json", base)
        single = {"name": "single", "kind": "single", "agent": "a", "agents": {"a": _agents(base)["a0l"]}}
        (exp / "single.json").write_text(json.dumps(single))
        (exp / "exp.yaml").write_text(
            "name: secrets\ndataset: data.jsonl\nevaluator: exact\nbaseline: single.json\nsetups: [echo.json]\n"
        )
        p = moa_cli("compare", str(exp / "exp.yaml"), "--out", str(out), "--no-progress")
    assert (out / "experiment.sqlite").is_file(), p.stderr
    conn = sqlite3.connect(out / "experiment.sqlite")
    try:
        dump = "\n".join(conn.iterdump())
    finally:
        conn.close()
    assert "Incorrect API key provided" in dump  # the errors were stored, masked
    artefacts = {"experiment.sqlite": dump, "stdout": p.stdout, "stderr": p.stderr}
    for name in ("results.jsonl", "summary.json", "report.md", "report.html"):
        artefacts[name] = (out / name).read_text()
    assert {name: leaks(text) for name, text in artefacts.items() if leaks(text)} == {}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("served", ["echo", "odd-l", "odd-o"])
def test_moa_serve_replies_carry_no_key(served: str, stream: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    """`moa serve`: the error reply of a run whose providers quote the keys holds none of them (every
    key at once, and the key of no shape alone over each transport). A 400, the client's to fix,
    carries the provider's words, masked; a 401, the server's key, carries none of them."""
    for name, value in KEYS.items():
        monkeypatch.setenv(name, value)
    with echoing_provider() as base:
        replies = []
        for model in ("refuse-400", "refuse"):
            agents = _agents(base, model)
            odd = [  # a3*: the agents of MOA_T_KEY_ODD
                load_data(
                    {"name": f"odd-{t}", "kind": "single", "agent": "a", "agents": {"a": agents[f"a3{t}"]}}
                )
                for t in "lo"
            ]
            with serving(create_app([load_data(_topology(base, model=model)), *odd])) as url:
                body = {"model": served, "messages": [{"role": "user", "content": "hi"}], "stream": stream}
                replies.append(httpx.post(f"{url}/chat/completions", json=body, timeout=60))
    content, key = replies
    assert content.status_code == 400 and "Incorrect API key provided" in content.json()["error"]["message"]
    assert key.status_code == 500 and key.json()["error"]["code"] == "server_misconfigured"
    assert leaks(content.text) == [] and leaks(key.text) == []


def test_debug_traceback_masks_a_key_from_a_variable_of_any_name(tmp_path: Path) -> None:
    """`moa --debug run`: a key read through `api_key_env` from a variable whose name says nothing
    (MOA_T_CRED) is masked in litellm's chained raw exception too."""
    with echoing_provider() as base:
        spec = {**_agents(base)["a3l"], "api_key_env": "MOA_T_CRED"}
        topo = {"name": "one", "kind": "single", "agent": "a", "agents": {"a": spec}}
        (tmp_path / "t.json").write_text(json.dumps(topo))
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "MOA_T_CRED": K_ODD}
        p = subprocess.run(
            [sys.executable, "-m", "moa", "--debug", "run", str(tmp_path / "t.json"), "--prompt", "hi"],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
            timeout=180,
        )
    assert p.returncode == 1 and "Incorrect API key provided" in p.stderr, p.stderr[-2000:]
    assert leaks(p.stderr) == []


def test_url_secrets_finds_the_credentials_written_in_an_endpoint() -> None:
    """The userinfo's password and credential-named query values, as written, decoded and cut at
    the URL's delimiters; other parameters (api-version) are not secrets."""
    assert url_secrets(f"https://me:{K_PROJ}@host/v1") == [K_PROJ]
    # "v4bL1kJ", the piece after the "/", is shorter than the 8 characters a known value needs
    assert url_secrets("https://h/v1?api-version=2024-10-21&key=Q8zP2mX7%2Fv4bL1kJ") == [
        "Q8zP2mX7%2Fv4bL1kJ",
        "Q8zP2mX7/v4bL1kJ",
        "Q8zP2mX7",
    ]
    assert url_secrets("http://127.0.0.1:8000/v1") == [] and url_secrets(None) == []


def test_environment_secrets_follow_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Names are judged once each, but values are read afresh: a key set, changed or removed after
    a first look counts at once, and a variable of no secret name never does. (Values of their
    own: a key other tests read is remembered for the rest of the process.)"""
    first, second = "Late.Token/only-here-1", "Late.Token/only-here-2"
    monkeypatch.delenv("MOA_T_LATE_TOKEN", raising=False)
    assert first not in environment_secrets()
    monkeypatch.setenv("MOA_T_LATE_TOKEN", first)
    monkeypatch.setenv("MOA_T_PLAIN", second)
    assert first in environment_secrets() and second not in environment_secrets()
    monkeypatch.setenv("MOA_T_LATE_TOKEN", second)
    assert second in environment_secrets() and first not in environment_secrets()
    monkeypatch.delenv("MOA_T_LATE_TOKEN")
    assert second not in environment_secrets()


@pytest.mark.parametrize("transport", ["litellm", "openai-http"])
def test_a_key_in_the_api_base_userinfo_reaches_no_output(tmp_path: Path, transport: str) -> None:
    """`moa --debug run --json` with the key unescaped in `api_base`'s userinfo: the URL parser's
    error quotes the piece before the key's "/" as a port; neither the reply, the error line nor
    the traceback holds any piece of the key."""
    with echoing_provider() as base:
        api_base = base.replace("http://", f"http://user:{K_ODD}@")
        spec = {
            "model": "openai/refuse",
            "api_base": api_base,
            "transport": transport,
            "retry": {"max_attempts": 1},
        }
        topo = {"name": "one", "kind": "single", "agent": "a", "agents": {"a": spec}}
        (tmp_path / "t.json").write_text(json.dumps(topo))
        p = subprocess.run(
            [
                sys.executable,
                "-m",
                "moa",
                "--debug",
                "run",
                str(tmp_path / "t.json"),
                "--prompt",
                "hi",
                "--json",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
            cwd=ROOT,
            timeout=180,
        )
    assert p.returncode == 1 and "Traceback" in p.stderr, p.stderr[-2000:]
    for piece in K_ODD.split("/"):
        assert piece not in p.stdout and piece not in p.stderr, piece


@pytest.mark.parametrize("transport", ["litellm", "openai-http"])
async def test_an_answer_that_quotes_the_key_is_masked(
    transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 200 whose answer quotes the key the request carried (verbatim and base64-encoded): the
    run's output and its call's reply hold it masked; a key shape moa did not send stays, as an
    answer may rightly hold one."""
    monkeypatch.setenv("MOA_T_KEY_ODD", K_ODD)
    with echoing_provider() as base:
        spec = {**_agents(base, "content-echo")["a3l"], "transport": transport}
        topo = load_data({"name": "one", "kind": "single", "agent": "a", "agents": {"a": spec}})
        async with Runner() as runner:
            result = await topo.run("hi", runner=runner)
    assert result.output.startswith(f"You sent Bearer {MASK}; as base64 {MASK}.")
    assert leaks(result.output.replace(OTHER_ANT, "")) == [] and OTHER_ANT in result.output
    assert result.calls[0].reply == result.output


async def test_a_user_backend_error_quoting_the_key_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    """A backend of the user's (`Runner(models=...)`) whose exception quotes the request's key: the
    ProviderError moa wraps it in, and the call's error, do not (its text went through no backend's
    scrubbing)."""
    monkeypatch.setenv("MOA_T_CRED", K_ODD)

    def refuse(request: ModelRequest) -> str:
        raise RuntimeError(f"upstream said: bad credential {request.api_key}")

    spec = {"model": "fake/m", "api_key_env": "MOA_T_CRED", "retry": {"max_attempts": 1}}
    topo = load_data({"name": "one", "kind": "single", "agent": "a", "agents": {"a": spec}})
    async with Runner(models={"fake/m": FunctionModel(refuse)}) as runner:
        with pytest.raises(ProviderError) as info:
            await topo.run("hi", runner=runner)
    assert str(info.value).endswith(f"RuntimeError: upstream said: bad credential {MASK}")
    assert leaks(str(info.value)) == []


async def test_a_user_backend_error_quoting_a_header_key_is_masked_once_forgotten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A user backend's exception quoting a key of the agent's header `params` is masked from the
    request itself, not only while the key is among the last ones remembered process-wide."""
    import moa.scrub

    key = "Hedge.Warden/Quill+Fern=Bramble-user-backend"
    monkeypatch.setattr(moa.scrub, "_remembered", {})  # the process's remembered keys are left alone

    def refuse(request: ModelRequest) -> str:
        moa.scrub._remembered.clear()  # 256 other agents' keys were remembered since this one
        raise RuntimeError(f"upstream said: bad gateway token {key}")

    spec = {
        "model": "fake/m",
        "retry": {"max_attempts": 1},
        "params": {"extra_headers": {"X-Gateway-Token": key}},
    }
    topo = load_data({"name": "one", "kind": "single", "agent": "a", "agents": {"a": spec}})
    async with Runner(models={"fake/m": FunctionModel(refuse)}) as runner:
        with pytest.raises(ProviderError) as info:
            await topo.run("hi", runner=runner)
    assert str(info.value).endswith(f"bad gateway token {MASK}")


@pytest.mark.parametrize("transport", ["litellm", "openai-http"])
async def test_a_key_in_an_agents_header_params_is_masked(transport: str) -> None:
    """A key an agent sends in a secret-named header of its `params` (`extra_headers:
    {X-Gateway-Token: ...}`), echoed by the provider, is masked in the error, on both transports
    (the direct path used to put `extra_headers` in the JSON body and send no header)."""
    key = f"Gate.Keeper/Lantern+Moss=Thistle-{transport}"  # its own: keys used before stay remembered
    with echoing_provider() as base:
        spec = {
            "model": "openai/header-echo",
            "api_base": base,
            "transport": transport,
            "retry": {"max_attempts": 1},
            "params": {"extra_headers": {"X-Gateway-Token": key}},
        }
        topo = load_data({"name": "one", "kind": "single", "agent": "a", "agents": {"a": spec}})
        async with Runner() as runner:
            with pytest.raises(RequestRejected) as info:
                await topo.run("hi", runner=runner)
    assert f"x-gateway-token: {MASK}" in str(info.value).lower(), str(info.value)
    assert "Lantern" not in str(info.value)


def test_the_direct_path_sends_extra_headers_as_headers_and_merges_extra_body() -> None:
    """`params.extra_headers` and `params.extra_body` shape the request as litellm's do: the headers
    are sent as headers, not as a body field, and extra_body's fields join the body."""
    from moa.models.openai_wire import encode_body, headers_for

    request = ModelRequest(
        model="openai/m",
        messages=[{"role": "user", "content": "hi"}],
        params={"extra_headers": {"X-Trace": "t1"}, "extra_body": {"seed": 7}, "user": "u"},
    )
    body = json.loads(encode_body(request, stream=False))
    assert (
        "extra_headers" not in body and "extra_body" not in body and body["seed"] == 7 and body["user"] == "u"
    )
    assert headers_for(request, stream=False)["x-trace"] == "t1"


class _CacheThatFails:
    """A call cache of the user's (`Runner(cache=...)`) whose store refuses it, quoting its token."""

    def key(self, node: str, request: ModelRequest) -> str:
        raise ConnectionError(f"cache refused AUTH {os.environ['MOA_T_CACHE_TOKEN']}")

    def get(self, key: str) -> None:
        return None

    def put(self, key: str, value: object) -> None:
        pass


async def test_a_nodes_own_failure_quoting_a_key_from_the_environment_is_masked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A node's own code (not a backend) raising something not moa's became a ProviderError, and
    `run.failed`, holding a key of the environment's of no known shape, as it was."""
    from moa.testing import capture_events

    monkeypatch.setenv("MOA_T_CACHE_TOKEN", "zq81hfk2mm40vtl7")
    topo = load_data({"name": "one", "kind": "single", "agent": "a", "agents": {"a": {"model": "fake/m"}}})
    with capture_events() as events:
        async with Runner(models={"fake/m": FunctionModel(lambda r: "x")}, cache=_CacheThatFails()) as runner:
            with pytest.raises(ProviderError) as info:
                await topo.run("hi", runner=runner)
    failed = [e for e in events if e["event"] == "run.failed"]
    assert str(info.value).endswith(f"ConnectionError: cache refused AUTH {MASK}")
    assert failed and "zq81hfk2mm40vtl7" not in json.dumps(failed) + str(info.value)


class _CustomProvider:
    """A backend of the user's own for a provider moa has no path to: it posts to the echoing
    provider with its own auth scheme and raises moa's `RequestRejected` with the provider's words,
    as a backend should."""

    local = False

    def __init__(self, base: str) -> None:
        self.base = base

    async def complete(self, request: ModelRequest, on_token: Any = None) -> Any:
        async with httpx.AsyncClient() as client:
            r = await client.post(
                f"{self.base}/chat/completions",
                json={"model": "refuse-400", "messages": request.messages},
                headers={"authorization": f"Bearer {request.api_key}"},
            )
        raise RequestRejected(r.json()["error"]["message"], model=request.model, status_code=r.status_code)

    async def aclose(self) -> None:
        pass


@pytest.mark.parametrize("stream", [False, True])
def test_a_custom_backends_error_quoting_its_key_reaches_no_serve_reply(
    stream: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`moa serve`: a user backend that raises moa's own error with the provider's text, which
    quotes a custom provider's token of no key shape: the 400's message holds it masked (moa's
    errors from a user backend were not masked of the request's keys, and serve's reply masked key
    shapes only)."""
    token = "Wren.Hollow/Cairn"
    monkeypatch.setenv("MOA_T_CUSTOM_CRED", token)
    spec = {"model": "custom/m", "api_key_env": "MOA_T_CUSTOM_CRED", "retry": {"max_attempts": 1}}
    topo = load_data({"name": "one", "kind": "single", "agent": "a", "agents": {"a": spec}})
    with echoing_provider() as base:
        runner = Runner(models={"custom/m": _CustomProvider(base)})
        with serving(create_app([topo], runner=runner)) as url:
            body = {"model": "one", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
            r = httpx.post(f"{url}/chat/completions", json=body, timeout=60)
    assert r.status_code == 400, r.text
    assert f"Incorrect API key provided: {MASK}." in r.json()["error"]["message"]
    assert token not in r.text and "Hollow" not in r.text
