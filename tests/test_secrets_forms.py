"""Which known keys are masked, in which forms, and for how long: a short key as a whole token, the
forms a hostile endpoint may write a key back in (hex, escaped twice, HTML character references),
and the bounded set of keys remembered for texts scrubbed without their request at hand."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import base64
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler
from typing import Any

import pytest

from moa import scrub as scrub_module
from moa._run import Runner
from moa.errors import RequestRejected
from moa.scrub import MASK, StreamMask, environment_secrets, mask_sent, remember_secret, scrub
from moa.topology.loader import load_data
from tests.loopback_http import completion, send_body, threaded_server

# litellm's types trip a pydantic UserWarning on first use (not ours to fix)
pytestmark = pytest.mark.filterwarnings("ignore:.*using the `ReadOnly` qualifier:UserWarning")

SHORT = "ab12c9"
LONG = "sk-Opal9Tiger/Wombat+Marsh=Quince42"


def test_a_short_key_is_masked_where_it_is_a_token_of_its_own() -> None:
    """A 4-7 character key (`vllm serve --api-key ab12c9`) is masked as a whole token, in any case
    and escaped, but not inside a longer run of letters and digits."""
    text = f"key {SHORT}, ({SHORT.upper()}) \\u0061b12c9 x{SHORT} {SHORT}7 {SHORT}-tail"
    assert mask_sent(text, [SHORT]) == f"key {MASK}, ({MASK}) {MASK} x{SHORT} {SHORT}7 {MASK}-tail"
    assert scrub(f"Invalid key {SHORT}.", [SHORT]) == f"Invalid key {MASK}."


@pytest.mark.parametrize("value", ["abc", "EMPTY", "none", "dummy"])
def test_a_very_short_or_letters_only_value_is_left_alone(value: str) -> None:
    """Under 4 characters, or letters only (the placeholders self-hosted servers are given): text
    is left as it was, as masking a word would garble every message."""
    text = f"{value} is {value.lower()}; the set was EMPTY, none were dummy, abc"
    assert mask_sent(text, [value]) == text and scrub(text, [value]) == text


_FORMS: dict[str, Callable[[str], str]] = {
    "hex": lambda k: k.encode().hex(),
    "HEX": lambda k: k.encode().hex().upper(),
    "json escaped twice": lambda k: "".join(f"\\\\u{ord(c):04x}" for c in k),
    "repr escaped twice": lambda k: k.replace("/", "\\\\/"),
    "url encoded twice": lambda k: k.replace("/", "%252F").replace("+", "%252B"),
    "html decimal": lambda k: "".join(f"&#{ord(c)};" for c in k),
    "html hex": lambda k: "".join(f"&#x{ord(c):X};" if i % 2 else c for i, c in enumerate(k)),
}


@pytest.mark.parametrize("form", list(_FORMS))
def test_a_key_written_back_in_a_hostile_form_is_masked(form: str) -> None:
    """An endpoint that writes the key back hex-encoded, escaped twice (JSON inside JSON, a URL
    inside a URL) or as HTML character references: masked in an answer and in an error text."""
    text = f"<{_FORMS[form](LONG)}>"
    assert mask_sent(text, [LONG]) == f"<{MASK}>"
    assert scrub(text, [LONG]) == f"<{MASK}>"


def test_a_key_written_back_reversed_is_masked_a_short_ones_reverse_is_not() -> None:
    """An endpoint that writes the key back reversed (wrapped, re-cased, escaped too): masked in an
    answer, an error text and the answer's tokens; a short key's reverse (`9c21ba`, which may be a
    number or a word of the text) is left alone."""
    backwards = LONG[::-1]
    forms = [
        backwards,
        backwards.upper(),
        backwards[:12] + "\n" + backwards[12:],
        backwards.replace("/", "\\/"),
    ]
    for form in forms:
        assert mask_sent(f"<{form}>", [LONG]) == f"<{MASK}>", form
        assert scrub(f"<{form}>", [LONG]) == f"<{MASK}>", form
    text = f"echo: {backwards} and {SHORT[::-1]}"
    tokens: list[str] = []
    stream = StreamMask(tokens.append, [LONG, SHORT])
    for i in range(0, len(text), 3):
        stream.feed(text[i : i + 3])
    stream.flush()
    assert "".join(tokens) == mask_sent(text, [LONG, SHORT]) == f"echo: {MASK} and {SHORT[::-1]}"


def test_ordinary_escapes_and_entities_are_left_alone() -> None:
    """Text with escapes, entities and hex that are not the key keeps them."""
    text = "a &amp; b &#65; \\\\u0041 %2541 deadbeefcafe 0x7f"
    assert mask_sent(text, [LONG, SHORT]) == text


def test_the_remembered_keys_are_bounded_least_recently_remembered_out_first() -> None:
    """A process that builds agents with ever new keys (a tenant's header each) keeps only the last
    256 for its tracebacks and store: the set no longer grows without end, and a key remembered
    again stays."""
    old = dict(scrub_module._remembered)
    try:
        keep = "Tenant.Keep/Value+0001-x"
        remember_secret(keep)
        for i in range(300):
            remember_secret(f"Tenant.Key/{i:04d}+Value-x")
            if i % 100 == 0:
                remember_secret(keep)
        secrets = environment_secrets()
        assert len(scrub_module._remembered) == 256
        assert "Tenant.Key/0000+Value-x" not in secrets and "Tenant.Key/0299+Value-x" in secrets
        assert keep in secrets
    finally:
        scrub_module._remembered.clear()
        scrub_module._remembered.update(old)


class _Echo(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint (a local vLLM) that quotes the bearer key it was sent: in a 401's
    error (model `refuse`) or in a 200's answer (any other model), or the text of the request's
    last message (model `say`)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *_args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        key = self.headers.get("authorization", "").removeprefix("Bearer ")
        if body["model"] == "refuse":
            error = {"error": {"message": f"Invalid API key {key}", "code": "invalid_api_key"}}
            send_body(self, 401, json.dumps(error).encode())
            return
        text = body["messages"][-1]["content"] if body["model"] == "say" else f"You sent {key}."
        send_body(self, 200, completion(text))


@contextmanager
def _endpoint() -> Iterator[str]:
    with threaded_server(_Echo) as url:
        yield url + "/v1"


def _one(base: str, transport: str, model: str, **agent: Any) -> Any:
    spec = {
        "model": f"openai/{model}",
        "api_base": base,
        "transport": transport,
        "retry": {"max_attempts": 1},
        "pricing": {"input_per_mtok": 1.0, "output_per_mtok": 1.0},
        **agent,
    }
    return load_data({"name": "one", "kind": "single", "agent": "a", "agents": {"a": spec}})


@pytest.mark.parametrize("transport", ["litellm", "openai-http"])
async def test_a_short_key_echoed_by_a_local_server_reaches_no_output(
    transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A local server started with a 6-character key quotes it in a 401 and in a 200's answer: the
    error and the output hold it masked, on both transports."""
    monkeypatch.setenv("MOA_T_SHORT_CRED", SHORT)
    with _endpoint() as base:
        async with Runner() as runner:
            result = await _one(base, transport, "echo", api_key_env="MOA_T_SHORT_CRED").run(
                "hi", runner=runner
            )
            with pytest.raises(RequestRejected) as info:
                await _one(base, transport, "refuse", api_key_env="MOA_T_SHORT_CRED").run("hi", runner=runner)
    assert result.output == f"You sent {MASK}." and result.calls[0].reply == result.output
    assert str(info.value).endswith(f"Invalid API key {MASK}") and SHORT not in str(info.value)


async def test_another_agents_key_is_not_masked_in_a_litellm_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    """A key remembered from another agent (its `extra_headers`) is no key of this request: a
    litellm agent without a key of its own answers text that holds it unmasked (it was masked as if
    litellm could have sent it)."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setattr(scrub_module, "_remembered", dict(scrub_module._remembered))
    other = "Other.App/Header+Value-0042"
    remember_secret(other)
    with _endpoint() as base:
        async with Runner() as runner:
            result = await _one(base, "litellm", "say").run(f"quote {other} please", runner=runner)
    assert result.output == f"quote {other} please"


@pytest.mark.parametrize("filler", ["\\", "%25", "&#0"])
def test_a_long_run_of_escape_characters_does_not_stall_the_mask(filler: str) -> None:
    """An answer of 100,000 backslashes (or `%25`, `&#0`) before the key is masked. Each escape may
    be escaped a few times, not without end, so no start in the run scans the rest of it: that
    takes milliseconds, where unbounded it took about a minute. The bound is a hang guard, far
    above the time on a busy machine (speed is measured by benchmarks, not asserted here)."""
    text = filler * (100_000 // len(filler)) + " " + LONG
    start = time.perf_counter()
    masked = mask_sent(text, [LONG, SHORT])
    assert masked.endswith(f" {MASK}") and time.perf_counter() - start < 30


def test_a_short_value_of_a_secret_named_variable_is_not_masked(monkeypatch: pytest.MonkeyPatch) -> None:
    """`TOKEN_LIMIT=4096` is named like a secret but moa never sends it: its short value is not
    masked in the texts scrubbed with the environment's secrets (every 4096 would be); a long one
    still is."""
    monkeypatch.setenv("TOKEN_LIMIT", "4096")
    monkeypatch.setenv("MOA_T_SERVICE_TOKEN", "Svc.Token/Alpha+Beta=9")
    text = "max 4096 tokens; token Svc.Token/Alpha+Beta=9"
    assert scrub(text, environment_secrets()) == f"max 4096 tokens; token {MASK}"


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\\n"])
def test_a_key_base64_encoded_and_wrapped_inside_it_is_masked(newline: str) -> None:
    """A key inside a longer base64 text wrapped at 76 columns (MIME) right inside the key's part,
    the line break raw or JSON-escaped: masked in the answer and in its tokens alike."""
    encoded = base64.b64encode(("x" * 40 + LONG).encode()).decode()
    text = newline.join(encoded[i : i + 76] for i in range(0, len(encoded), 76))
    masked = mask_sent(text, [LONG])
    unwrapped = masked.replace(newline, "")
    assert MASK in masked and encoded[56:68] not in unwrapped and encoded[-16:-4] not in unwrapped
    tokens: list[str] = []
    stream = StreamMask(tokens.append, [LONG])
    for i in range(0, len(text), 3):
        stream.feed(text[i : i + 3])
    stream.flush()
    assert "".join(tokens) == masked
