"""The OpenAI client litellm is handed for an ``openai/<model>`` agent that names its own server
(``api_base``), with the direct path's two guards against a hostile or broken server.

- No redirect is followed. The OpenAI SDK litellm uses otherwise follows a 3xx to wherever it
  points, another host or port included, with the prompt and every header but ``Authorization``
  (an ``X-Api-Key`` of the agent's ``params`` among them). The 3xx becomes the direct path's
  ``RequestRejected`` ("redirected (307) to ...: moa does not follow redirects").
- A reply is decompressed here, to at most ``openai_wire.MAX_REPLY_BYTES`` (16 MiB; a stream, whose
  events wrap each token in JSON, eight times that) and only gzip or deflate, which is all the
  request accepts. The SDK's client decompressed whatever arrived: a 100 KB gzip reply of 100 MB
  grew the process by 585 MB, and a 10 MB one would ask for 10 GB.

The client is made on first use in a running loop (nothing at import) and shared by every call of
the backend in that loop through the same proxy (the environment's, as litellm's client takes
them); each call gets a copy with its own key and base URL, which shares the connection pool.
"""

from __future__ import annotations

import asyncio
import urllib.request
import zlib
from collections.abc import AsyncIterator
from typing import Any, cast
from urllib.parse import urlsplit

# the OpenAI SDK's own HTTP library (it takes no other client): httpx2 since the SDK moved to it,
# httpx before
try:
    import httpx2 as httpx
except ImportError:  # pragma: no cover - an OpenAI SDK from before httpx2
    import httpx  # type: ignore[no-redef]

from moa.models import openai_wire  # MAX_REPLY_BYTES read at call time: tests lower it

__all__ = ["GuardedClients", "ReplyTooLarge"]

#: a stream's events wrap each token in a JSON object: its bytes may exceed the text's many times
_STREAM_FACTOR = 8


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


class _Capped(httpx.AsyncByteStream):
    """A response body decompressed chunk by chunk, never to more than ``limit`` bytes in all: each
    chunk's output is asked for at most what is left, so a bomb is stopped before it expands."""

    def __init__(self, inner: httpx.AsyncByteStream, coding: str, limit: int) -> None:
        self._inner, self._coding, self._limit = inner, coding, limit

    async def __aiter__(self) -> AsyncIterator[bytes]:
        decoder = _decoder(self._coding)
        total = 0
        async for chunk in self._inner:
            data = chunk if decoder is None else decoder.decompress(chunk, self._limit - total + 1)
            total += len(data)
            if total > self._limit:
                how = " after decompression" if decoder is not None else ""
                raise ReplyTooLarge(f"the reply passed {self._limit} bytes{how}")
            if data:
                yield data

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
        coding = response.headers.get("content-encoding", "").strip().lower()
        streamed = response.headers.get("content-type", "").lower().startswith("text/event-stream")
        limit = openai_wire.MAX_REPLY_BYTES * (_STREAM_FACTOR if streamed else 1)
        headers = [
            (k, v)
            for k, v in response.headers.raw
            if k.lower() not in (b"content-encoding", b"content-length")
        ]
        inner = cast(httpx.AsyncByteStream, response.stream)  # the async transport's own
        return httpx.Response(
            response.status_code,
            headers=headers,
            stream=_Capped(inner, coding, limit),
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


class GuardedClients:
    """One guarded ``AsyncOpenAI`` per event loop and proxy, made on first use, closed by ``aclose``."""

    __slots__ = ("_clients",)

    def __init__(self) -> None:
        self._clients: dict[tuple[asyncio.AbstractEventLoop, str | None], Any] = {}

    def for_call(self, api_key: str, api_base: str) -> Any:
        """A client for one call: the shared client with this call's key and base URL."""
        from openai import AsyncOpenAI

        loop = asyncio.get_running_loop()
        proxy = _proxy_for(api_base)
        base = self._clients.get((loop, proxy))
        if base is None:
            for old in [x for x in self._clients if x[0].is_closed()]:
                del self._clients[old]  # a finished loop's client: its connections died with it
            http = httpx.AsyncClient(transport=_Transport(proxy), follow_redirects=False, timeout=None)
            base = self._clients[loop, proxy] = AsyncOpenAI(
                api_key="unused", base_url=api_base, http_client=http, max_retries=0
            )
        return base.with_options(api_key=api_key, base_url=api_base, max_retries=0)

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        for key in [k for k in self._clients if k[0] is loop]:
            await self._clients.pop(key).close()
