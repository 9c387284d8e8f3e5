"""The HTTP clients litellm is handed for an agent that names its own server (``api_base``), with
the direct path's two guards against a hostile or broken server: an ``AsyncOpenAI`` for the
providers litellm sends through the OpenAI SDK (``openai/``, ``deepinfra/``...) and an
``AsyncAzureOpenAI`` over the same HTTP client for ``azure/``, and a transport for litellm's own
HTTP handler for those it sends itself (``hosted_vllm/``, ``anthropic/``, ``bedrock/``...);
``moa.models.litellm`` names which providers get which.

- No redirect is followed. litellm's clients otherwise follow a 3xx to wherever it
  points, another host or port included, with the prompt and every header but ``Authorization``
  (an ``X-Api-Key`` of the agent's ``params`` among them). The 3xx becomes the direct path's
  ``RequestRejected`` ("redirected (307) to ...: moa does not follow redirects").
- A reply is decompressed here, to at most ``openai_wire.MAX_REPLY_BYTES`` (16 MiB; a stream, whose
  events wrap each token in JSON, eight times that) and only gzip or deflate, which is all the
  request accepts. litellm's clients decompressed whatever arrived: a 100 KB gzip reply of 100 MB
  grew the process by 585 MB, and a 10 MB one would ask for 10 GB.

The client is made on first use in a running loop (nothing at import) and shared by every call of
the backend in that loop through the same proxy (the environment's, as litellm's client takes
them); each call gets a copy with its own key and base URL, which shares the connection pool. A
loop's clients are closed when it ends, as the direct path's session is: a runner shared by
``run_sync`` calls (a loop each) left a connection open per call.
"""

from __future__ import annotations

import asyncio
import urllib.request
import zlib
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Any, cast
from urllib.parse import urlsplit

# the OpenAI SDK's own HTTP library (it takes no other client): httpx2 since the SDK moved to it,
# httpx before
try:
    import httpx2 as httpx
except ImportError:  # pragma: no cover - an OpenAI SDK from before httpx2
    import httpx  # type: ignore[no-redef]
import httpx as httpx1  # litellm's own handler's

from moa._loops import PerLoop
from moa.models import openai_wire  # MAX_REPLY_BYTES read at call time: tests lower it

__all__ = ["GuardedClients", "LiteTransport", "ReplyTooLarge"]

#: a stream's events wrap each token in a JSON object: its bytes may exceed the text's many times
_STREAM_FACTOR = 8
#: the streams' content types: server-sent events, Ollama's JSON lines, Bedrock's AWS event stream
_STREAM_TYPES = ("text/event-stream", "application/x-ndjson", "application/vnd.amazon.eventstream")


class ReplyTooLarge(ValueError):
    """The reply passed the bound, or came in an encoding moa does not decode (a ValueError: litellm's
    error then reads as a reply that could not be read, a ``MalformedReply``)."""


def _decoder(coding: str) -> Any:
    """A decompressor for a ``Content-Encoding``, None for none."""
    if coding in ("", "identity"):
        return None
    if coding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if coding == "deflate":
        return zlib.decompressobj(32 + zlib.MAX_WBITS)  # zlib-wrapped or gzip, told by the header
    raise ReplyTooLarge(f"the reply came with Content-Encoding `{coding[:40]}`, which moa does not decode")


async def _capped(inner: AsyncIterable[bytes], coding: str, limit: int) -> AsyncIterator[bytes]:
    """A response body decompressed chunk by chunk, never to more than ``limit`` bytes in all: each
    chunk's output is asked for at most what is left, so a bomb is stopped before it expands."""
    decoder = _decoder(coding)
    total = 0
    async for chunk in inner:
        data = chunk if decoder is None else decoder.decompress(chunk, limit - total + 1)
        total += len(data)
        if total > limit:
            how = " after decompression" if decoder is not None else ""
            raise ReplyTooLarge(f"the reply passed {limit} bytes{how}")
        if data:
            yield data


def _bound(headers: Any) -> tuple[str, int]:
    """The reply's ``Content-Encoding`` and the bound its decompressed body is held to."""
    coding = str(headers.get("content-encoding", "")).strip().lower()
    streamed = str(headers.get("content-type", "")).lower().startswith(_STREAM_TYPES)
    return coding, openai_wire.MAX_REPLY_BYTES * (_STREAM_FACTOR if streamed else 1)


def _plain(raw: list[tuple[bytes, bytes]]) -> list[tuple[bytes, bytes]]:
    """The reply's headers without those of its encoded form (the client must not decode it again)."""
    return [(k, v) for k, v in raw if k.lower() not in (b"content-encoding", b"content-length")]


# The two HTTP libraries each take only a stream and a transport of their own classes: the same
# guard is written once above and wrapped twice below, for the OpenAI SDK's (httpx2) and for
# litellm's own handler's (httpx).


class _Capped(httpx.AsyncByteStream):
    def __init__(self, inner: httpx.AsyncByteStream, coding: str, limit: int) -> None:
        self._inner, self._coding, self._limit = inner, coding, limit

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _capped(self._inner, self._coding, self._limit)

    async def aclose(self) -> None:
        await self._inner.aclose()


class _Transport(httpx.AsyncBaseTransport):
    """httpx's transport, asking for gzip or deflate only and decompressing the reply itself (its
    ``Content-Encoding`` removed, so the client does not decode it again)."""

    def __init__(self, proxy: str | None) -> None:
        self._inner = httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=100), proxy=proxy
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["accept-encoding"] = "gzip, deflate"
        response = await self._inner.handle_async_request(request)
        coding, limit = _bound(response.headers)
        inner = cast(httpx.AsyncByteStream, response.stream)  # the async transport's own
        return httpx.Response(
            response.status_code,
            headers=_plain(response.headers.raw),
            stream=_Capped(inner, coding, limit),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


class _LiteCapped(httpx1.AsyncByteStream):
    def __init__(self, inner: httpx1.AsyncByteStream, coding: str, limit: int) -> None:
        self._inner, self._coding, self._limit = inner, coding, limit

    def __aiter__(self) -> AsyncIterator[bytes]:
        return _capped(self._inner, self._coding, self._limit)

    async def aclose(self) -> None:
        await self._inner.aclose()


class LiteTransport(httpx1.AsyncBaseTransport):
    """The same transport for litellm's own HTTP handler (``AsyncHTTPHandler(transport=...)``)."""

    def __init__(self, proxy: str | None) -> None:
        self._inner = httpx1.AsyncHTTPTransport(
            limits=httpx1.Limits(max_connections=1000, max_keepalive_connections=100), proxy=proxy
        )

    async def handle_async_request(self, request: httpx1.Request) -> httpx1.Response:
        request.headers["accept-encoding"] = "gzip, deflate"
        response = await self._inner.handle_async_request(request)
        coding, limit = _bound(response.headers)
        inner = cast(httpx1.AsyncByteStream, response.stream)
        return httpx1.Response(
            response.status_code,
            headers=_plain(response.headers.raw),
            stream=_LiteCapped(inner, coding, limit),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def _proxy_for(url: str) -> str | None:
    """The proxy the environment names for ``url`` (``HTTPS_PROXY``, ``NO_PROXY``...), as litellm's
    own client honours them: a transport given to httpx makes it skip the environment's proxies."""
    proxies = urllib.request.getproxies_environment()
    parts = urlsplit(url)
    # NO_PROXY as the environment says it (typeshed lacks this function, present since Python 3.0)
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]
    if not proxies or bypass(parts.hostname or "", proxies):
        return None
    return proxies.get(parts.scheme) or proxies.get("all")


class _LoopClients:
    """One loop's guarded clients, by proxy: ``AsyncOpenAI`` (with its httpx client) and litellm's
    HTTP handler."""

    __slots__ = ("clients", "handlers")

    def __init__(self) -> None:
        self.clients: dict[str | None, tuple[Any, Any]] = {}
        self.handlers: dict[str | None, Any] = {}

    async def close(self) -> None:
        while self.clients:
            await self.clients.popitem()[1][0].close()
        while self.handlers:
            await self.handlers.popitem()[1].close()


class GuardedClients:
    """One guarded ``AsyncOpenAI``, and one guarded litellm HTTP handler, per event loop and proxy,
    made on first use, closed by ``aclose`` or when their loop ends (``moa._loops``)."""

    __slots__ = ("_loops",)

    def __init__(self) -> None:
        self._loops: PerLoop[_LoopClients] = PerLoop(_LoopClients.close)

    def _here(self) -> _LoopClients:
        """The running loop's clients (a loop kept here past its end would keep its default runner,
        ``moa._run.default_runner``, alive)."""
        loop = asyncio.get_running_loop()
        found = self._loops.get(loop)
        return found if found is not None else self._loops.set(loop, _LoopClients())

    async def _shared(self, api_base: str) -> tuple[Any, Any]:
        """The loop's shared ``AsyncOpenAI`` for ``api_base``'s proxy, and its guarded httpx client."""
        from openai import AsyncOpenAI

        mine = self._here()
        proxy = _proxy_for(api_base)
        pair = mine.clients.get(proxy)
        if pair is None:
            http = httpx.AsyncClient(transport=_Transport(proxy), follow_redirects=False, timeout=None)
            client = AsyncOpenAI(api_key="unused", base_url=api_base, http_client=http, max_retries=0)
            pair = mine.clients[proxy] = (client, http)
        return pair

    async def for_call(self, api_key: str, api_base: str) -> Any:
        """A client for one call: the shared client with this call's key and base URL."""
        client, _ = await self._shared(api_base)
        return client.with_options(api_key=api_key, base_url=api_base, max_retries=0)

    async def azure_for_call(self, api_key: str, api_base: str, api_version: str) -> Any:
        """An ``AsyncAzureOpenAI`` for one ``azure/`` call over the shared guarded httpx client (a
        client of its own per call costs no connection: closing it is the shared one's job)."""
        from openai import AsyncAzureOpenAI

        _, http = await self._shared(api_base)
        # an api_base naming the deployment is the client's base URL, as litellm takes it
        if "/openai/deployments" in api_base:
            return AsyncAzureOpenAI(
                base_url=api_base, api_key=api_key, api_version=api_version, http_client=http, max_retries=0
            )
        return AsyncAzureOpenAI(
            azure_endpoint=api_base, api_key=api_key, api_version=api_version, http_client=http, max_retries=0
        )

    async def handler_for_call(self, api_base: str, make: Callable[[LiteTransport], Any]) -> Any:
        """litellm's own HTTP handler over the guarded transport, ``make`` building it (litellm is
        imported by its one module only); it carries no key or URL, so it is shared as it is."""
        mine = self._here()
        proxy = _proxy_for(api_base)
        handler = mine.handlers.get(proxy)
        if handler is None:
            handler = mine.handlers[proxy] = make(LiteTransport(proxy))
        return handler

    async def aclose(self) -> None:
        """Close the running loop's clients now (the loop's end is a backstop)."""
        await self._loops.close(asyncio.get_running_loop())
