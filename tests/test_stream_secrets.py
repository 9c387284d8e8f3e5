"""Streamed tokens carry no key: an endpoint that streams back the key its request carried, cut over
several deltas, puts it masked into `on_token`, `moa serve`'s SSE events and `moa run --stream`, as
into the final answer; text far from any key is still passed on at once."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import base64
import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any, ClassVar

import httpx
import pytest

from moa._run import Runner
from moa.results import Done, Token
from moa.scrub import MASK, StreamMask, mask_sent
from moa.serve import create_app
from moa.topology.definition import Topology
from moa.topology.loader import load_data
from tests.loopback_http import completion, send_body, send_sse, threaded_server
from tests.serving import serving

# litellm's streaming types trip a pydantic UserWarning on first use (not ours to fix)
pytestmark = pytest.mark.filterwarnings("ignore:.*using the `ReadOnly` qualifier:UserWarning")

ROOT = Path(__file__).resolve().parent.parent
KEY = "Opal.Tiger/Wombat+Marsh=Quince-stream"
KEY_ENV = "MOA_T_STREAM_CRED"
B64 = base64.b64encode(KEY.encode()).decode()
#: the middle dozen characters: a leak of part of the key shows as well as a whole one
MIDDLE = KEY[len(KEY) // 2 - 6 : len(KEY) // 2 + 6]
FAR = "Far from any secret, this sentence comes first. "
#: the endpoint's answer as the run reports it, masked whole
ANSWER = mask_sent(f"You sent {KEY}, as base64 {B64}. Done.", [KEY])


def _leaks(text: str) -> bool:
    return KEY in text or MIDDLE in text or B64[8:20] in text


def test_the_answer_is_masked_whole() -> None:
    """The reference the streams are held to masks the key in both forms."""
    assert ANSWER.startswith(f"You sent {MASK}, as base64 {MASK}") and not _leaks(ANSWER)


# -- the masker alone ------------------------------------------------------------------------------


def _streamed(text: str, cuts: list[int]) -> tuple[str, list[str]]:
    out: list[str] = []
    mask = StreamMask(out.append, [KEY])
    for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True):
        mask.feed(text[a:b])
    mask.flush()
    return "".join(out), out


def test_a_key_cut_at_any_two_points_is_masked_as_in_the_whole_answer() -> None:
    """Every way of cutting an answer that quotes the key (as sent, upper-cased, base64-encoded) in
    three pieces streams exactly what `mask_sent` makes of the whole answer."""
    text = f"You sent {KEY}; loud: {KEY.upper()}; as base64 {B64}."
    whole = mask_sent(text, [KEY])
    assert not _leaks(whole) and whole.count(MASK) == 3
    for i in range(1, len(text)):
        for j in range(i, len(text), 3):
            got, _ = _streamed(text, [i, j])
            assert got == whole, (i, j, got)


def test_once_the_key_showed_up_its_escaped_and_wrapped_forms_are_masked_too() -> None:
    """After the key as sent, the endpoint writes it back JSON-escaped, URL-escaped and wrapped over
    lines: every way of cutting that in three pieces streams what `mask_sent` makes of the whole
    answer (which masks those forms in a text holding the key), each form masked."""
    escaped = "".join(f"\\u{ord(c):04x}" if c in "aeiou" else c for c in KEY)
    text = f"Sent {KEY}; escaped {escaped}; url {KEY.replace('/', '%2F')}; wrapped {KEY[:9]}\n{KEY[9:]}."
    whole = mask_sent(text, [KEY])
    assert whole == f"Sent {MASK}; escaped {MASK}; url {MASK}; wrapped {MASK}."
    for i in range(1, len(text), 2):
        for j in range(i, len(text), 5):
            got, _ = _streamed(text, [i, j])
            assert got == whole, (i, j, got)


#: the key written back only in other forms, never as sent: with its slashes escaped as PHP's
#: JSON writes them, URL-encoded from a query string, \u-escaped, wrapped over a JSON line break
OTHER_FORMS = (
    KEY.replace("/", "\\/"),
    KEY.replace("/", "%2F").replace("+", "%2B").replace("=", "%3D"),
    "".join(f"\\u{ord(c):04x}" if c in "aeiou" else c for c in KEY),
    KEY[:11] + "\\n" + KEY[11:],
)


@pytest.mark.parametrize("form", OTHER_FORMS)
def test_a_key_written_back_only_in_another_form_is_masked(form: str) -> None:
    """An endpoint that never quotes the key as sent, only escaped or wrapped: the answer masks it
    (the cheap look before the full pattern decoded no escapes), and every way of cutting it in
    three pieces, or in single characters, streams that masked answer."""
    text = f"Echo: {form}. Done."
    whole = mask_sent(text, [KEY])
    assert whole == f"Echo: {MASK}. Done."
    for i in range(1, len(text)):
        for j in range(i, len(text), 4):
            got, _ = _streamed(text, [i, j])
            assert got == whole, (i, j, got)
    got, pieces = _streamed(text, list(range(1, len(text))))
    assert got == whole and not any(KEY[:9] in p or "Tiger" in p for p in pieces)


def test_a_stream_of_blanks_after_a_keys_first_character_is_let_go() -> None:
    """A tail that could still become a key wrapped over spaces is held back only so long: blanks
    streamed without end do not stall the reply, and a text that is not the key comes out whole."""
    out: list[str] = []
    mask = StreamMask(out.append, [KEY])
    mask.feed("see " + KEY[:3])
    for _ in range(2000):
        mask.feed(" ")
    assert "".join(out).startswith("see " + KEY[:3] + " ")
    mask.feed("end")
    mask.flush()
    assert "".join(out) == "see " + KEY[:3] + " " * 2000 + "end"


def test_text_far_from_a_key_is_passed_on_at_once() -> None:
    """Each token that cannot begin a key is passed on whole as it arrives; a tail that may begin
    one is held, never more than the key's length less one character, and let go when the next
    token shows it was not a key."""
    out: list[str] = []
    mask = StreamMask(out.append, [KEY])
    for word in FAR.split(" "):
        mask.feed(word + " ")
    assert "".join(out) == FAR + " "
    mask.feed("see " + KEY[:-1])  # all but the key's last character: may still become the key
    assert out[-1] == "see " and "".join(out) == FAR + " see "
    mask.feed("!")  # it did not
    assert out[-1] == KEY[:-1] + "!"


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_a_short_key_cut_over_tokens_is_masked_as_in_the_whole_answer(size: int) -> None:
    """A 6-character key, whole token or inside a longer one, cut over tokens of any size: the
    tokens make what ``mask_sent`` makes of the whole answer (a key at a token's end is held until
    the next token shows whether the token goes on)."""
    text = "ab12c9 then xab12c9, ab12c97 and &#97;b12c9! end ab12c9"
    out: list[str] = []
    mask = StreamMask(out.append, ["ab12c9"])
    for i in range(0, len(text), size):
        mask.feed(text[i : i + size])
    mask.flush()
    assert (
        "".join(out)
        == mask_sent(text, ["ab12c9"])
        == (f"{MASK} then xab12c9, ab12c97 and {MASK}! end {MASK}")
    )


def test_without_keys_tokens_pass_unchanged() -> None:
    """An endpoint called without a key: every token is passed on as it came."""
    out: list[str] = []
    mask = StreamMask(out.append, [None, "short"])
    for piece in ("sk-", "abc", ""):
        mask.feed(piece)
    assert out == ["sk-", "abc", ""]


# -- over HTTP -------------------------------------------------------------------------------------


class _Provider(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint that streams back the bearer key it was sent, in 3-character
    deltas, or whole when the request does not stream (model ``header-echo``: its
    ``X-Gateway-Token`` header). Model ``pause`` first sends ``FAR`` alone and waits for the test to see it (at most a
    minute, noted in ``late``), then quotes the key."""

    protocol_version = "HTTP/1.1"
    release = threading.Event()
    late: ClassVar[list[bool]] = []

    def log_message(self, *_args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        key = self.headers.get("authorization", "").removeprefix("Bearer ")
        text = f"You sent {key}, as base64 {base64.b64encode(key.encode()).decode()}. Done."
        if body.get("model") == "header-echo":  # quotes a header of the agent's params instead
            text = f"Gateway token: {self.headers.get('x-gateway-token')}. Done."
        if body.get("model") == "slash-echo":  # the key as PHP's JSON writes it: "/" as "\\/"
            text = f"You sent {key.replace('/', chr(92) + '/')}. Done."
        if not body.get("stream"):
            self._whole(text)
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("connection", "close")
        self.end_headers()
        if body.get("model") == "pause":
            self._delta(FAR)
            self.late.append(not self.release.wait(60))
        for i in range(0, len(text), 3):
            self._delta(text[i : i + 3])
        end = {
            "id": "x",
            "object": "chat.completion.chunk",
            "model": "m",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 30, "total_tokens": 33},
        }
        self.wfile.write(b"data: " + json.dumps(end).encode() + b"\n\ndata: [DONE]\n\n")
        self.wfile.flush()
        self.close_connection = True

    def _whole(self, text: str) -> None:
        send_body(self, 200, completion(text, completion_tokens=30))

    def _delta(self, text: str) -> None:
        chunk = {
            "id": "x",
            "object": "chat.completion.chunk",
            "model": "m",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}],
        }
        self.wfile.write(b"data: " + json.dumps(chunk).encode() + b"\n\n")
        self.wfile.flush()


@contextmanager
def streaming_provider() -> Iterator[str]:
    """The provider on 127.0.0.1 in a thread; yields its /v1 base URL."""
    with threaded_server(_Provider) as url:
        try:
            yield url + "/v1"
        finally:
            _Provider.release.set()


def _spec(base: str, transport: str, model: str = "echo") -> dict[str, Any]:
    agent = {
        "model": f"openai/{model}",
        "api_base": base,
        "api_key_env": KEY_ENV,
        "transport": transport,
        "retry": {"max_attempts": 1},
        "pricing": {"input_per_mtok": 1.0, "output_per_mtok": 1.0},
    }
    return {"name": "echo", "kind": "single", "agent": "a", "agents": {"a": agent}}


def _topology(base: str, transport: str, model: str = "echo") -> Topology:
    return load_data(_spec(base, transport, model))


@pytest.mark.parametrize("transport", ["litellm", "openai-http"])
async def test_streamed_tokens_hold_no_key(transport: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`Topology.stream` (the `on_token` path): the tokens of a reply that quotes the key, cut over
    deltas, hold it masked, and together they are the run's (masked) answer."""
    monkeypatch.setenv(KEY_ENV, KEY)
    tokens: list[str] = []
    with streaming_provider() as base:
        async with Runner() as runner:
            async for ev in _topology(base, transport).stream("hi", runner=runner):
                if isinstance(ev, Token):
                    tokens.append(ev.text)
                elif isinstance(ev, Done):
                    output = ev.result.output
    streamed = "".join(tokens)
    assert not _leaks(streamed), streamed
    assert streamed == output == ANSWER


async def test_text_far_from_a_key_reaches_the_caller_before_the_reply_ends(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Over HTTP, the first delta (no key near) reaches `on_token` while the endpoint still waits to
    send the rest: the masking holds back no more than a key's length."""
    monkeypatch.setenv(KEY_ENV, KEY)
    _Provider.release.clear()
    _Provider.late.clear()
    tokens: list[str] = []
    with streaming_provider() as base:
        async with Runner() as runner:
            async for ev in _topology(base, "openai-http", "pause").stream("hi", runner=runner):
                if isinstance(ev, Token):
                    if not tokens:
                        first = ev.text
                        _Provider.release.set()
                    tokens.append(ev.text)
    assert _Provider.late == [False]  # the first token came while the endpoint waited
    # everything but the tail that might begin the key: FAR ends in a space, so nothing
    assert first == FAR
    assert not _leaks("".join(tokens))


def test_moa_serve_sse_events_hold_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """`moa serve` with `stream: true`: no SSE event holds the key the topology's endpoint streamed
    back, and the events' contents make the masked answer."""
    monkeypatch.setenv(KEY_ENV, KEY)
    with streaming_provider() as base, serving(create_app([_topology(base, "openai-http")])) as url:
        body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        r = httpx.post(f"{url}/chat/completions", json=body, timeout=60)
    assert r.status_code == 200 and not _leaks(r.text), r.text
    events = [json.loads(x.removeprefix("data: ")) for x in r.text.split("\n\n") if x.startswith("data: {")]
    content = "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e.get("choices"))
    assert content == ANSWER


def test_moa_run_stream_prints_no_key(tmp_path: Path) -> None:
    """`moa run --stream`: the answer printed token by token holds the key masked."""
    with streaming_provider() as base:
        (tmp_path / "t.json").write_text(json.dumps(_spec(base, "openai-http")))
        p = subprocess.run(
            [sys.executable, "-m", "moa", "run", str(tmp_path / "t.json"), "--prompt", "hi", "--stream"],
            capture_output=True,
            text=True,
            env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", KEY_ENV: KEY},
            cwd=ROOT,
            timeout=180,
        )
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout == ANSWER + "\n"
    assert not _leaks(p.stdout + p.stderr)


@pytest.mark.parametrize("transport", ["litellm", "openai-http"])
async def test_a_header_of_the_agents_params_is_masked_in_the_answer_and_its_tokens(transport: str) -> None:
    """A secret-named header an agent sends through `params` (`extra_headers: {X-Gateway-Token:
    ...}`), streamed back in the answer: masked in the tokens and in the run's output (the answer
    was masked of the request's key and URL credentials only)."""
    spec = _spec("", transport, "header-echo")
    with streaming_provider() as base:
        agent = spec["agents"]["a"]
        del agent["api_key_env"]
        agent |= {"api_base": base, "params": {"extra_headers": {"X-Gateway-Token": KEY}}}
        tokens, streamed_output, output = await _streamed_and_run(load_data(spec))
    assert "".join(tokens) == streamed_output == output == f"Gateway token: {MASK}. Done."


async def test_a_key_litellm_takes_from_the_environment_is_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    """An agent with an `api_base` and no `api_key_env` over litellm: the request carries the
    environment's OPENAI_API_KEY, which the endpoint echoes; it is masked in the tokens and in the
    output, streamed or not (only a key the agent named was masked)."""
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    spec = _spec("", "litellm")
    with streaming_provider() as base:
        agent = spec["agents"]["a"]
        del agent["api_key_env"]
        agent["api_base"] = base
        tokens, streamed_output, output = await _streamed_and_run(load_data(spec))
    assert "".join(tokens) == streamed_output == output == ANSWER


@pytest.mark.parametrize("transport", ["litellm", "openai-http"])
async def test_a_key_echoed_only_escaped_is_masked_in_the_answer_and_its_tokens(
    transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over HTTP, an endpoint writes the key back with its slashes escaped, never as sent: masked
    in the tokens and in the output, streamed or not."""
    monkeypatch.setenv(KEY_ENV, KEY)
    with streaming_provider() as base:
        tokens, streamed_output, output = await _streamed_and_run(_topology(base, transport, "slash-echo"))
    assert "".join(tokens) == streamed_output == output == f"You sent {MASK}. Done."


async def _streamed_and_run(topology: Topology) -> tuple[list[str], str, str]:
    """The topology's streamed tokens and output, then its output run again without streaming."""
    tokens: list[str] = []
    streamed_output = ""
    async with Runner() as runner:
        async for ev in topology.stream("hi", runner=runner):
            if isinstance(ev, Token):
                tokens.append(ev.text)
            elif isinstance(ev, Done):
                streamed_output = ev.result.output
        output = (await topology.run("hi", runner=runner)).output
    return tokens, streamed_output, output


class _Split(BaseHTTPRequestHandler):
    """An endpoint that streams back its request's bearer key and its X-Gateway-Token header, each
    cut in two over a pair of SSE events (loopback_http.send_sse); whole when not streaming."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *_args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        key = self.headers.get("authorization", "").removeprefix("Bearer ")
        hdr = self.headers.get("x-gateway-token", "")
        pieces = ["key ", key[:3], key[3:], " hdr ", hdr[: len(hdr) // 2], hdr[len(hdr) // 2 :], " a***b end"]
        if not body.get("stream"):
            _Provider._whole(self, "".join(pieces))  # type: ignore[arg-type]
            return
        events: list[dict[str, object]] = [
            {
                "id": "x",
                "object": "chat.completion.chunk",
                "model": "m",
                "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}],
            }
            for p in pieces
        ]
        events.append(
            {
                "id": "x",
                "object": "chat.completion.chunk",
                "model": "m",
                "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 9, "total_tokens": 12},
            }
        )
        send_sse(self, events)


@pytest.mark.parametrize("transport", ["litellm", "openai-http"])
@pytest.mark.parametrize("key", ["ab12c9", KEY])
async def test_a_key_split_over_two_sse_events_is_masked_once(
    transport: str, key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Over a real SSE stream, the request's key (short or long; over litellm the OPENAI_API_KEY it
    sends on its own, masked by its backend) and a header of the agent's params (masked by the
    attempt), each cut over two events: masked in the tokens, which make the answer as masked
    whole, the text around them untouched although both masks pass over it."""
    spec = _spec("", transport)
    agent = spec["agents"]["a"]
    agent["params"] = {"extra_headers": {"X-Gateway-Token": "Gate.Side/Header+Value=9"}}
    if transport == "litellm":
        del agent["api_key_env"]
        monkeypatch.setenv("OPENAI_API_KEY", key)
    monkeypatch.setenv(KEY_ENV, key)
    with threaded_server(_Split) as url:
        agent["api_base"] = url + "/v1"
        tokens, streamed_output, output = await _streamed_and_run(load_data(spec))
    assert "".join(tokens) == streamed_output == output == f"key {MASK} hdr {MASK} a***b end"
