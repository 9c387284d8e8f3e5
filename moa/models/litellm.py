"""Every litellm provider, through one door. The only module that imports litellm, and only when the
first call is made (importing litellm takes about 3 s). litellm's own retries are off: moa owns
retries, fallbacks and rate limits. Its exceptions become moa's, with the provider's message kept."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import re
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from moa.errors import MalformedReply, ModelError, ProviderError, TimedOut, UserError
from moa.models.base import ModelReply, ModelRequest, Reported, TokenCallback, usage_with_estimate
from moa.models.errors import error_for_status

# usage is read by the direct path's reader: litellm keeps the server's fields it does not map
# (``input_tokens``, Anthropic's cache names, the Responses API's ``input_tokens_details``) as extra
# attributes of its usage object, so one reply gives the same counts on both paths; its zeros for a
# missing usage read as "not reported" there (no request is answered with zero prompt tokens)
from moa.models.openai_wire import no_answer, reasoning_text, refuses_stream_options
from moa.models.providers import speaks_openai
from moa.models.wire_usage import billed_usage, reported_usage, unanswered
from moa.results import Usage
from moa.scrub import StreamMask, environment_secrets, mask_sent, param_secrets, scrub_clip, url_secrets

__all__ = ["LitellmModel", "import_litellm"]

_litellm: Any = None


def import_litellm() -> Any:
    """Import and quieten litellm once: offline price map, no banners, no retries of its own."""
    global _litellm
    if _litellm is None:
        os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
        import litellm

        lib: Any = litellm
        lib.suppress_debug_info = True
        lib.set_verbose = False
        lib.num_retries = 0
        lib.telemetry = False
        # litellm runs its provider call in a coroutine it drops when the call is cancelled (a
        # timeout, a deadline, a quorum met): Python then warns "never awaited" for a coroutine
        # that was never ours to await. Filtered on first use of litellm, not at moa's import.
        warnings.filterwarnings(
            "ignore", message=r"coroutine '.*acompletion' was never awaited", category=RuntimeWarning
        )
        _litellm = lib
    return _litellm


#: the key sent to a server that needs none, as the OpenAI client refuses to start without one
_NO_KEY = "no-key"


#: providers litellm sends through the OpenAI SDK, which take an ``AsyncOpenAI`` as ``client``
#: (litellm's ``_complete_custom_openai``); each is tested against a hostile loopback server
OPENAI_SDK_PROVIDERS = frozenset(
    {
        "openai",
        "custom_openai",
        "deepinfra",
        "perplexity",
        "nvidia_nim",
        "cerebras",
        "sambanova",
        "nebius",
        "lm_studio",
        "llamafile",
        "litellm_proxy",
        "xinference",
        "docker_model_runner",
        # hosted OpenAI-compatible APIs, which litellm sends the same way
        "aiml",
        "baseten",
        "cortecs",
        "dashscope",
        "empower",
        "featherless_ai",
        "friendliai",
        "galadriel",
        "github",
        "hyperbolic",
        "lambda_ai",
        "meta_llama",
        "moonshot",
        "novita",
        "nscale",
        "parasail",
        "reka",
        "v0",
        "volcengine",
        "wandb",
        "zai",
    }
)
#: providers litellm sends through its own HTTP handler, which take an ``AsyncHTTPHandler`` as
#: ``client`` (``base_llm_http_handler``, and the Anthropic, Gemini and Bedrock Converse handlers);
#: each tested likewise. ``azure/`` gets an ``AsyncAzureOpenAI`` of moa's (``_azure_auth``).
OWN_HTTP_PROVIDERS = frozenset(
    {
        "hosted_vllm",
        "together_ai",
        "deepseek",
        "xai",
        "fireworks_ai",
        "openrouter",
        "anthropic",
        "groq",
        "mistral",
        "ollama_chat",
        "ollama",
        "gemini",
        "bedrock",
    }
)


def guarded(model: str, kw: Mapping[str, Any], litellm: Any) -> str | None:
    """Which guarded client a call to a server of its own (``endpoint``) gets: ``"openai"`` (moa's
    ``AsyncOpenAI``), ``"azure"`` (moa's ``AsyncAzureOpenAI``), ``"http"`` (litellm's own handler
    over moa's transport), or None (litellm's client: a provider not known to take a client, or TLS
    configured for litellm's client, which the guarded ones do not read: ``SSL_VERIFY``,
    ``litellm.ssl_verify``, an agent's ``ssl_verify``, a client certificate in ``SSL_CERTIFICATE``
    or ``litellm.ssl_certificate``; ``SSL_CERT_FILE`` both read). A client the agent's params pass
    is kept."""
    if "client" in kw or "ssl_verify" in kw or os.environ.get("SSL_VERIFY"):
        return None
    if getattr(litellm, "ssl_verify", True) is not True:
        return None
    if os.environ.get("SSL_CERTIFICATE") or getattr(litellm, "ssl_certificate", None):
        return None
    provider = _provider(model, kw.get("api_base"), litellm)
    if provider in OWN_HTTP_PROVIDERS:
        return "http"
    if provider != "azure" and provider not in OPENAI_SDK_PROVIDERS:
        return None
    if provider == "azure":
        return "azure" if _azure_auth(kw, litellm) is not None else None
    if os.environ.get("EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER") is not None:
        from litellm.secret_managers.main import get_secret_bool

        # litellm then sends these through its own handler, which ignores an OpenAI client
        if get_secret_bool("EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER"):
            return "http"
    return "openai"


def _provider(model: str, api_base: object, litellm: Any) -> str:
    """The provider litellm sends ``model`` to: its prefix, or for a model without one the provider
    litellm infers (``gpt-4o`` is ``openai``), "" when it infers none."""
    if "/" in model:
        return model.split("/", 1)[0]
    try:
        return str(litellm.get_llm_provider(model=model, api_base=api_base)[1])
    except Exception:  # litellm's own error about the model comes when it is called
        return ""


def _endpoint(model: str, kw: Mapping[str, Any]) -> str | None:
    """The server of its own a call names: its ``api_base``, or for ``bedrock/`` the runtime
    endpoint its params or ``AWS_BEDROCK_RUNTIME_ENDPOINT`` set (litellm's order)."""
    base = kw.get("api_base")
    if base or not model.startswith("bedrock/"):
        return str(base) if base else None
    found = kw.get("aws_bedrock_runtime_endpoint") or os.environ.get("AWS_BEDROCK_RUNTIME_ENDPOINT")
    return found if isinstance(found, str) and found else None


#: an agent's params that make litellm sign an ``azure/`` call with an Azure AD (Entra) token,
#: which moa's Azure client does not fetch: such a call keeps litellm's client
_AZURE_AD_PARAMS = ("azure_ad_token", "azure_ad_token_provider", "azure_username", "azure_password")


def _azure_auth(kw: Mapping[str, Any], litellm: Any) -> tuple[str, str] | None:
    """The API key and API version litellm would build its Azure client with for an ``azure/``
    call, read as litellm reads them; None when the call is signed with an Azure AD token instead
    (a token, a token provider, a user and password, ``AZURE_AD_TOKEN``, or no key at all: Entra
    ID, ``enable_azure_ad_token_refresh``), which keeps litellm's client."""
    from litellm.secret_managers.main import get_secret_str

    extra = kw.get("extra_body")
    if any(k in kw for k in _AZURE_AD_PARAMS) or (isinstance(extra, dict) and "azure_ad_token" in extra):
        return None
    if get_secret_str("AZURE_AD_TOKEN") or (
        get_secret_str("AZURE_USERNAME") and get_secret_str("AZURE_PASSWORD")
    ):
        return None
    key = (
        kw.get("api_key")
        or litellm.api_key
        or litellm.azure_key
        or get_secret_str("AZURE_OPENAI_API_KEY")
        or get_secret_str("AZURE_API_KEY")
    )
    version = (
        kw.get("api_version")
        or litellm.api_version
        or get_secret_str("AZURE_API_VERSION")
        or litellm.AZURE_DEFAULT_API_VERSION
    )
    # litellm builds its own client for Cloudflare's gateway, the deployment in its URL
    gateway = "gateway.ai.cloudflare.com" in str(kw.get("api_base") or "")
    if gateway or not isinstance(key, str) or not key or not isinstance(version, str):
        return None
    return key, version


def _sdk_key(model: str, api_base: str | None, litellm: Any) -> str | None:
    """The key litellm sends an OpenAI-SDK provider's call without one of moa's: the provider's own
    variable (``DEEPINFRA_API_KEY``...), else litellm's or OpenAI's; None when it has none (litellm's
    client then refuses to start, and nothing is sent)."""
    try:
        key = litellm.get_llm_provider(model=model, api_base=api_base)[2]
    except Exception:  # litellm's own error about the model comes when it is called
        key = None
    key = key or litellm.api_key or litellm.openai_key or os.environ.get("OPENAI_API_KEY")
    return key if isinstance(key, str) and key else None


def _guarded_handler(transport: Any) -> Any:
    """litellm's HTTP handler over moa's guarded transport, following no redirect."""
    from litellm.llms.custom_httpx.http_handler import AsyncHTTPHandler

    return AsyncHTTPHandler(transport=transport, follow_redirects=False)


def _keyless_ok(model: str) -> bool:
    return speaks_openai(model)


def _chain(e: BaseException) -> list[BaseException]:
    """``e`` and everything underneath it: ``__cause__``, ``__context__``, and the
    ``original_exception`` litellm keeps when it re-raises a stream that failed mid-way (there the
    Python chain holds only a ``StopAsyncIteration``)."""
    seen: set[int] = set()
    out: list[BaseException] = []
    todo: list[BaseException] = [e]
    while todo:
        cur = todo.pop()
        if id(cur) in seen:
            continue
        seen.add(id(cur))
        out.append(cur)
        for below in (cur.__cause__, cur.__context__, getattr(cur, "original_exception", None)):
            if isinstance(below, BaseException):
                todo.append(below)
    return out


def _no_answer(chain: Sequence[BaseException]) -> type[ModelError] | None:
    """TimedOut or ProviderError when the provider's answer never fully arrived, else None.

    litellm wraps a reset connection, a timeout of its client or a stream cut mid-way into a 500
    (``InternalServerError``, ``MidStreamFallbackError``); taken at its word, that 500 is an HTTP
    status, and an HTTP status is booked as a known $0, whereas the request had reached a provider
    that may bill it. A chain with a real HTTP status in it (``httpx.HTTPStatusError``: a reply
    was read) is left to its status."""
    import aiohttp
    import httpx
    import openai

    if any(isinstance(x, httpx.HTTPStatusError) for x in chain):
        return None
    timeouts = (openai.APITimeoutError, httpx.TimeoutException, TimeoutError)
    if any(isinstance(x, timeouts) for x in chain):
        return TimedOut
    transport = (openai.APIConnectionError, httpx.TransportError, aiohttp.ClientError, OSError)
    # litellm's APIConnectionError subclasses openai's and also labels a reply its converter choked
    # on: only the clients' own transport errors say the connection failed
    if any(isinstance(x, transport) and not type(x).__module__.startswith("litellm") for x in chain):
        return ProviderError
    return None


def _never_connected(chain: Sequence[BaseException]) -> bool:
    """Whether the failure was the connection itself (refused, unreachable, not made in time):
    then no byte of the request left. moa turns litellm's and the openai client's own retries
    off, so the one connection attempt in the chain is the only one there was."""
    import aiohttp
    import httpx

    refused = (httpx.ConnectError, httpx.ConnectTimeout, aiohttp.ClientConnectorError, ConnectionRefusedError)
    return any(isinstance(x, refused) for x in chain)


def _status_answered(chain: Sequence[BaseException]) -> bool:
    """Whether an HTTP error status really came back: the clients litellm drives raise these only
    for a reply whose status was not 2xx. Every other status on a litellm exception is litellm's
    own label (its exceptions carry one whatever happened)."""
    import httpx
    import openai

    # litellm's own exceptions subclass openai's: only the openai client's count
    return any(
        isinstance(x, httpx.HTTPStatusError)
        or (isinstance(x, openai.APIStatusError) and not type(x).__module__.startswith("litellm"))
        for x in chain
    )


#: what reading a reply of the wrong shape raises inside litellm's converters: ``null`` or a list
#: where an object was due, a message that is a string, a missing key
_PARSE_ERRORS = (AttributeError, IndexError, KeyError, RecursionError, TypeError, ValueError)


def _parse_error(chain: Sequence[BaseException]) -> bool:
    return any(isinstance(x, _PARSE_ERRORS) for x in chain)


def _unreadable(chain: Sequence[BaseException], status: object, sent: bool) -> bool:
    """Whether the failure is a 2xx that litellm could not read. litellm labels those a 500 (a JSON
    body that is a list or ``null``, ``choices`` as an object: "Empty or invalid response", "provider
    returned 'choices' that is not a list", often with no Python error left underneath) or, for
    some providers, a 422 over the ``TypeError`` its converter raised. Once the request was handed
    to the provider's client (``sent``), such a status with no real HTTP status underneath was
    made by litellm from a reply that arrived; before that, a 4xx made of a ValueError of litellm's
    own (a bad parameter) stays a 4xx."""
    if any(isinstance(x, json.JSONDecodeError) for x in chain):
        return True
    if _status_answered(chain):
        return False
    if sent:
        return status == 500 or _parse_error(chain)
    return status in (None, 500) and any(isinstance(x, (RecursionError, ValueError)) for x in chain)


def _error_in_stream(chain: Sequence[BaseException]) -> bool:
    """Whether a stream that had begun failed on the server's error event: litellm's mid-stream
    error, with no real HTTP status underneath, over something other than a cut stream (a
    ``StopAsyncIteration``) or a chunk its converter could not read."""
    from litellm.exceptions import MidStreamFallbackError

    return (
        any(isinstance(x, MidStreamFallbackError) for x in chain)
        and not _status_answered(chain)
        and not any(isinstance(x, StopAsyncIteration) for x in chain)
        and not _parse_error(chain)
    )


def _error_object(chain: Sequence[BaseException]) -> str | None:
    """The message of the error object a 2xx body held, when litellm's converter raised over one (a
    bare ``Exception`` it gives ``status_code`` and ``message``), else None."""
    for x in chain:
        if type(x) is Exception and hasattr(x, "status_code"):
            said = str(getattr(x, "message", "") or "")
            # litellm's placeholder when the error was not an object with a message (TGI's string)
            return said if said and said != "Error in response object" else "the reply's body is an error"
    return None


def _redirect(chain: Sequence[BaseException]) -> tuple[int, Mapping[str, str]] | None:
    """The status and headers of a 3xx reply underneath, if one came back: only a guarded client
    refuses one (litellm's own follow them)."""
    import httpx

    for x in chain:
        if isinstance(x, httpx.HTTPStatusError) and x.response.is_redirect:
            return x.response.status_code, dict(x.response.headers)
    return None


def _sent_keys(kw: Mapping[str, Any]) -> list[str | None]:
    """The keys a call may have carried: the one moa passed, and those litellm reads from the
    environment itself when none is passed (``OPENAI_API_KEY``, ``AWS_SECRET_ACCESS_KEY``...)."""
    return [kw.get("api_key"), *url_secrets(kw.get("api_base")), *param_secrets(kw), *environment_secrets()]


def _map_exception(
    e: BaseException, request: ModelRequest, secrets: Sequence[str | None] = (), *, sent: bool = True
) -> ModelError:
    """litellm's exception as moa's; ``sent``: litellm reported handing the request to the
    provider's client (``_SentHook``), so whatever failed after could be the reply."""
    litellm = import_litellm()

    model, node = request.model, request.node
    # litellm's messages quote the provider's body (a 401 may echo the key) and at times the request;
    # cut to a bound, as an HTML error page can be megabytes
    chain = _chain(e)
    raw = _tidy(str(getattr(e, "message", None) or e), chain)
    message = scrub_clip(raw, 8192, (request.api_key, *secrets))
    moved = _redirect(chain)
    if moved is not None:
        # a guarded client's refused 3xx, which some providers' handlers relabel (Anthropic's a
        # 500 "connection" error with no message): the real status and its Location win
        return error_for_status(moved[0], message, model=model, node=node, headers=moved[1], secrets=secrets)
    # no status_code on these: the attempt counts as unknown usage, its worst case kept, unless
    # no connection was ever made
    failed: type[ModelError] | None
    failed = TimedOut if isinstance(e, litellm.Timeout) else _no_answer(chain)
    # litellm also calls a reply its converter choked on (a TypeError over a body that is a list)
    # a connection error: with no transport error underneath, that reply arrived
    if failed is None and isinstance(e, litellm.APIConnectionError) and not (sent and _parse_error(chain)):
        failed = ProviderError
    if failed is not None:
        label = "timed out" if failed is TimedOut else "connection failed"
        return failed(
            f"{label}: {message}", model=model, node=node or None, never_sent=_never_connected(chain)
        )
    status = getattr(e, "status_code", None)
    if _error_in_stream(chain):
        # an error event after the 200 began (``data: {"error": ...}``): litellm labels it with the
        # event's code (a 502), which as an HTTP status books the attempt at $0 though the provider
        # had started answering; no status, as on the direct path, keeps its worst case
        return ProviderError(f"provider error in stream: {message}", model=model, node=node or None)
    said = _error_object(chain)
    coded = isinstance(status, int) and 400 <= status < 600 and status != 422
    if said is not None and not coded and not _status_answered(chain):
        # a 2xx whose body is an error object without an HTTP status as its ``code``: litellm
        # labels one with no ``code`` a 422 of its own making, so an upstream "overloaded" was a
        # request moa never retried, booked at $0. As on the direct path it is a ProviderError of
        # unknown usage (a body that did say ``code: 422`` reads the same here, and is retried too)
        detail = scrub_clip(" ".join(said.split()), 500, (request.api_key, *secrets))
        return ProviderError(f"provider error: {detail}", model=model, node=node or None)
    if _unreadable(chain, status, sent):
        return MalformedReply(f"malformed reply: {message}", model=model, node=node or None)
    response = getattr(e, "response", None)
    headers = getattr(e, "litellm_response_headers", None) or getattr(response, "headers", None)
    if isinstance(e, (litellm.APIResponseValidationError, ValueError, KeyError, TypeError)) and not status:
        return MalformedReply(f"malformed reply: {message}", model=model, node=node or None)
    if isinstance(status, int):
        return error_for_status(status, message, model=model, node=node, headers=headers, secrets=secrets)
    return ProviderError(f"{type(e).__name__}: {message}", model=model, node=node or None)


_TRACEBACK = "Traceback (most recent call last):"
# a traceback's exception line (`KeyError: 'content'`), not litellm's bug-report advice after it
_EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(?:Error|Exception)\b.*$", re.M)
# litellm's advice to catch its own class, and a class name it repeats: `X: X: ...`
_HANDLE_WITH = re.compile(r"\s*Handle with `litellm\.\w+`\.?")
_REPEATED = re.compile(r"^(\w+): (?:litellm\.)?\1: ")


def _tidy(raw: str, chain: Sequence[BaseException]) -> str:
    """litellm's message as one line: a pasted traceback cut to its exception line, its own advice
    and repeated class names dropped, and, when the OpenAI SDK could say only ``Error code: 400`` (a
    body that is not JSON), the body's first words, which are the provider's reason."""
    raw = raw.removeprefix("litellm.")
    if _TRACEBACK in raw:
        head, _, trace = raw.partition(_TRACEBACK)
        last = ""
        for m in _EXCEPTION_LINE.finditer(trace):
            last = m.group(0).strip()
        raw = f"{head.strip()} ({last})" if last and last not in head else head
    text = _REPEATED.sub(r"\1: ", _HANDLE_WITH.sub("", " ".join(raw.split())))
    if re.search(r"Error code: \d{3}$", text):
        body = next((b for x in chain if (b := _body_text(getattr(x, "response", None)))), "")
        if body:
            text = f"{text} - {body[:500]}"
    return text


def _body_text(response: Any) -> str:
    """A failed reply's body as one line ("" when there is none, or it was never read): litellm
    wraps the SDK's error in a reply of its own without the body, so the chain is searched."""
    try:
        return " ".join(str(response.text).split()) if response is not None else ""
    except Exception:  # a streamed response not read, a body that will not decode
        return ""


def _nothing() -> None:
    return None


class _SentHook:
    """litellm's per-call ``logger_fn``, which it calls with ``log_event_type`` ``pre_api_call`` just
    before handing the request to the provider's client: moa's ``on_sent``.

    ``acompletion`` first runs its request building in the event loop's default executor (a few
    threads). Under many calls, or beside a caller's own blocking work there, a call waits for a
    thread for seconds; counted from ``complete``, that wait spent ``timeout_s`` on calls the
    provider had not yet seen, and retries of healthy calls then spent the retry budget.

    Reaching the loop from another thread (providers litellm calls synchronously) goes through
    ``call_soon_threadsafe``; a hand-off that arrives after its attempt ended is dropped, so it
    cannot start the clock of the model's next attempt, which shares the request. A ``logger_fn``
    the agent's ``params`` carry still gets every call."""

    __slots__ = ("_loop", "_loop_thread", "_on_sent", "_then", "ended", "fired")

    def __init__(self, on_sent: Callable[[], None], then: Callable[[Any], object] | None = None) -> None:
        self._on_sent = on_sent
        self._then = then
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self.fired = False
        self.ended = False

    def __call__(self, details: Mapping[str, Any]) -> None:
        # litellm calls it again after the reply, and again on its own internal retry: once counts
        if not self.fired and details.get("log_event_type") == "pre_api_call":
            self.fired = True
            if threading.get_ident() == self._loop_thread:
                self._on_sent()
            else:
                self._loop.call_soon_threadsafe(self._late)
        if self._then is not None:
            self._then(details)

    def _late(self) -> None:
        if not self.ended:
            self._on_sent()


class LitellmModel:
    """Calls ``litellm.acompletion`` once per attempt."""

    local = False
    #: litellm reports handing a request to the provider's client (``_SentHook``) on the paths
    #: checked, but nothing guarantees it on every provider's: an attempt it has not reported
    #: sending is cut this long after ``timeout_s``, the same time a direct-path call may wait for a
    #: connection. litellm also applies ``timeout_s`` to its own client from when it sends.
    send_wait_s = 60.0
    #: the OpenAI clients for agents that name their own server (``guarded_http``), made on first use
    _guarded: Any = None
    #: the endpoints (``api_base``, else the model) that refused ``stream_options``, made on first use
    _plain_streams: set[str] | None = None

    def _kwargs(self, request: ModelRequest) -> dict[str, Any]:
        kw: dict[str, Any] = dict(request.params)
        kw.update(
            model=request.model, messages=[dict(m) for m in request.messages], num_retries=0, max_retries=0
        )
        for name in ("temperature", "max_tokens", "top_p", "api_base", "api_key"):
            value = getattr(request, name)
            if value is not None:
                kw[name] = value
        if request.api_key is None and request.api_base and _keyless_ok(request.model):
            # local OpenAI-compatible servers (vLLM, llama.cpp server) need no key, but the OpenAI
            # client litellm uses refuses to start without one
            kw["api_key"] = os.environ.get("OPENAI_API_KEY") or _NO_KEY
        if request.stop:
            kw["stop"] = list(request.stop)
        if request.timeout_s is not None:
            kw["timeout"] = request.timeout_s
        return kw

    async def complete(self, request: ModelRequest, on_token: TokenCallback | None = None) -> ModelReply:
        # litellm's first import takes seconds: in a thread, so the loop keeps serving the run's
        # other calls and its deadline (imported on the loop, a 0.7 s deadline ended after 7 s)
        litellm = _litellm if _litellm is not None else await asyncio.to_thread(import_litellm)
        kw = self._kwargs(request)
        # installed even without ``on_sent``: whether the request left tells a reply litellm could
        # not read from a failure of its own before sending
        hook = kw["logger_fn"] = _SentHook(request.on_sent or _nothing, kw.get("logger_fn"))
        azure = await self._guard(request, kw, litellm)
        try:
            if request.before_send is not None:
                await request.before_send()
            # without a key of the request's, litellm sends one it reads from the environment (this
            # backend's OPENAI_API_KEY for an api_base): the caller masks only the request's own
            own: list[str] = []
            if request.api_key is None:
                # the key _kwargs took from the environment is sent, short or not (the placeholder
                # is no key)
                sent = kw.get("api_key")
                own = [*environment_secrets(remembered=False), *([sent] if sent and sent != _NO_KEY else [])]
            if on_token is None:
                resp = await litellm.acompletion(**kw)
                return _masked(_reply_from(resp, request), own)
            kw["stream"] = True
            where = str(request.api_base or request.model)
            if self._plain_streams is None or where not in self._plain_streams:
                kw["stream_options"] = {"include_usage": True}
            mask = StreamMask(on_token, own)
            try:
                stream = await litellm.acompletion(**kw)
            except Exception as e:
                if "stream_options" not in kw or not refuses_stream_options(
                    _map_exception(e, request, _sent_keys(kw), sent=hook.fired)
                ):
                    raise
                # a strict server's 4xx for a field it does not know (see OpenAIHTTPModel.complete)
                del kw["stream_options"]
                if request.before_send is not None:
                    await request.before_send()
                stream = await litellm.acompletion(**kw)
                self._plain_streams = (self._plain_streams or set()) | {where}
            reply = await _consume(stream, request, mask.feed)
            mask.flush()
            return _masked(reply, own)
        except ModelError:
            raise
        except Exception as e:  # every litellm/provider failure becomes a moa error here
            if "LLM Provider NOT provided" in str(getattr(e, "message", "") or e):
                provider = request.model.split("/", 1)[0] if "/" in request.model else request.model
                raise UserError(
                    f"unknown model `{request.model}`: litellm knows no provider `{provider}` "
                    "(see https://docs.litellm.ai/docs/providers; an OpenAI-compatible server needs "
                    "`api_base` and a model such as `openai/<name>`)"
                ) from e
            raise _map_exception(e, request, _sent_keys(kw), sent=hook.fired) from e
        finally:
            hook.ended = True
            if azure is not None:
                _forget_client(litellm, azure)

    async def _guard(self, request: ModelRequest, kw: dict[str, Any], litellm: Any) -> Any:
        """Hand litellm a guarded client of moa's for a call to a server of its own: no redirect
        followed, no reply decompressed past a bound (``guarded_http``). Returns an Azure call's
        client, for ``_forget_client``."""
        base = _endpoint(request.model, kw)
        route = guarded(request.model, kw, litellm) if base else None
        if base is None or route is None:
            return None
        key = kw.get("api_key")
        if route == "openai" and not isinstance(key, str):
            key = _sdk_key(request.model, base, litellm)
            if key is None:
                return None  # litellm's client refuses to start without one: nothing is sent
        if self._guarded is None:
            from moa.models.guarded_http import GuardedClients

            self._guarded = GuardedClients()
        if route == "http":
            kw["client"] = await self._guarded.handler_for_call(base, _guarded_handler)
            if request.model.startswith(("ollama/", "ollama_chat/")):
                # litellm's logging, after the reply, asks the server for the model's details
                # (``/api/show``) through a client of its own, which follows a redirect and
                # decompresses without a bound, unless the call carries its prices (moa prices
                # its calls itself)
                kw.setdefault("input_cost_per_token", 0.0)
                kw.setdefault("output_cost_per_token", 0.0)
            return None
        if route == "openai":
            kw["client"] = await self._guarded.for_call(str(key), base)
            return None
        key, version = _azure_auth(kw, litellm) or ("", "")
        if version in ("v1", "latest", "preview"):
            # litellm's Azure v1 API: a plain OpenAI client at the resource's /openai/v1
            from litellm.litellm_core_utils.url_utils import ensure_api_route

            kw["client"] = await self._guarded.for_call(key, f"{ensure_api_route(base, 'openai/v1')}/")
        else:
            kw["client"] = await self._guarded.azure_for_call(key, base, version)
        return kw["client"]

    async def aclose(self) -> None:
        if self._guarded is not None:
            await self._guarded.aclose()


def _forget_client(litellm: Any, client: object) -> None:
    """Take ``client`` out of litellm's client cache. litellm keeps an Azure client it is handed
    there, under the key it would build its own for that deployment and key with: left there, a
    later call of that deployment without a client of its own (the application's, in the same
    event loop) took moa's, and failed once moa's runner had closed it ("Cannot send a request,
    as the client has been closed")."""
    cache = getattr(litellm, "in_memory_llm_clients_cache", None)
    entries = getattr(cache, "cache_dict", None)
    if cache is None or not isinstance(entries, dict):
        return
    for key in [k for k, v in list(entries.items()) if v is client]:
        cache.delete_cache(key)


def _masked(reply: ModelReply, keys: Sequence[str]) -> ModelReply:
    """``reply`` with ``keys`` (those litellm may have sent on its own) masked in its text."""
    text = mask_sent(reply.text, keys) if keys else reply.text
    return reply if text == reply.text else dataclasses.replace(reply, text=text)


def _reply_from(resp: Any, request: ModelRequest) -> ModelReply:
    try:
        return _read_reply(resp, request)
    except MalformedReply as e:
        # billed all the same (see openai_wire.billed_usage)
        if e.usage is None:
            e.usage = billed_usage(getattr(resp, "usage", None), request)
        raise


def _read_reply(resp: Any, request: ModelRequest) -> ModelReply:
    choices = getattr(resp, "choices", None)
    if not choices:
        raise MalformedReply("malformed reply: no choices", model=request.model, node=request.node or None)
    message = getattr(choices[0], "message", None)
    text = getattr(message, "content", None)
    refusal = getattr(message, "refusal", None)
    if text is None and isinstance(refusal, str):
        text = refusal  # OpenAI's refusal is the model's answer (see openai_wire)
    # litellm takes a whole reply's leading <think> block out itself, into reasoning_content
    reasoned = bool(getattr(message, "reasoning_content", None) or getattr(message, "reasoning", None))
    finish, tools = getattr(choices[0], "finish_reason", None), bool(getattr(message, "tool_calls", None))
    reasoning = reasoning_text(message)
    if error := no_answer(
        None if text is None else str(text), finish, reasoned, tools, request.model, request.node
    ):
        raise unanswered(
            error,
            reasoned,
            lambda: reported_usage(getattr(resp, "usage", None), request),
            lambda: _estimate(request, "", reasoning),
        )
    usage, estimated = usage_with_estimate(
        reported_usage(getattr(resp, "usage", None), request),
        str(text),
        lambda: _estimate(request, str(text), reasoning),
        reasoned=bool(reasoning),
    )
    return ModelReply(
        str(text),
        usage,
        str(getattr(resp, "model", "") or ""),
        getattr(choices[0], "finish_reason", None),
        usage_estimated=estimated,
        service_tier=_service_tier(resp),
    )


async def _consume(stream: Any, request: ModelRequest, on_token: TokenCallback) -> ModelReply:
    parts: list[str] = []
    usage: Reported | None = None
    finish: str | None = None
    model = ""
    tier: str | None = None
    reasoned = tool_calls = False
    thought: list[str] = []  # the reasoning deltas, for an estimate's count
    async for chunk in stream:
        model = str(getattr(chunk, "model", "") or model)
        tier = _service_tier(chunk) or tier
        # the last counts reported win (running totals when repeated); a chunk without keeps them
        reported = reported_usage(getattr(chunk, "usage", None), request)
        if reported is not None and (reported.prompt, reported.completion) != (None, None):
            usage = reported
        for choice in getattr(chunk, "choices", None) or []:
            if getattr(choice, "index", 0) != 0:  # the first choice is the answer (see openai_wire)
                continue
            delta = getattr(choice, "delta", None)
            piece = getattr(delta, "content", None) or getattr(delta, "refusal", None)
            if piece and isinstance(piece, str):
                parts.append(piece)
                on_token(piece)
            else:
                reasoning = getattr(delta, "reasoning_content", None) or getattr(delta, "reasoning", None)
                reasoned = reasoned or bool(reasoning)
                tool_calls = tool_calls or bool(getattr(delta, "tool_calls", None))
            if said := reasoning_text(delta):
                thought.append(said)
            finish = getattr(choice, "finish_reason", None) or finish
    # litellm's stream keeps the chunks the server sent: the yielded ones add a finish_reason and a
    # usage of its own making when the server sent none, so only these say what the server did
    served = getattr(stream, "chunks", None)
    if isinstance(served, list):
        if not served:
            # a JSON body, or only [DONE]: litellm answered it as an empty reply that finished
            raise MalformedReply(
                "malformed reply: the stream carried no events",
                model=request.model,
                node=request.node or None,
            )
        usage = None
        for chunk in served:
            reported = reported_usage(getattr(chunk, "usage", None), request)
            if reported is not None and (reported.prompt, reported.completion) != (None, None):
                usage = reported
    text = "".join(parts)
    if error := no_answer(text, finish, reasoned, tool_calls, request.model, request.node):
        raise unanswered(error, reasoned, lambda: usage, lambda: _estimate(request, "", "".join(thought)))
    counted, estimated = usage_with_estimate(
        usage, text, lambda: _estimate(request, text, "".join(thought)), reasoned=bool(thought)
    )
    return ModelReply(text, counted, model, finish, usage_estimated=estimated, service_tier=tier)


def _service_tier(obj: Any) -> str | None:
    """The service tier a reply or chunk says it was served at (litellm keeps OpenAI's field)."""
    tier = getattr(obj, "service_tier", None)
    return tier if isinstance(tier, str) and tier else None


def _estimate(request: ModelRequest, text: str, reasoning: str = "") -> Usage:
    """Usage counted by litellm's tokenizer for the model, when the provider reported none: the
    request reached it and produced ``text`` (and ``reasoning`` beside it, completion tokens too),
    so $0 would be the one figure surely wrong."""
    litellm = import_litellm()
    prompt = litellm.token_counter(model=request.model, messages=[dict(m) for m in request.messages])
    completion = litellm.token_counter(model=request.model, text=text)
    if reasoning:
        completion += litellm.token_counter(model=request.model, text=reasoning)
    return Usage(int(prompt), int(completion))
