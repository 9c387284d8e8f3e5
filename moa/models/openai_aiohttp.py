"""The direct path's network client: one ``aiohttp.ClientSession`` per event loop.

aiohttp costs about a quarter of httpx's CPU per request (its HTTP parser is C, and a pooled
connection is found in a dict rather than by scanning the pool), so the direct path costs what the
socket costs. What aiohttp would do per request and moa does not need is off or done once: no
cookie jar; proxies read from the environment once per endpoint (``trust_env`` would hand every
request to a thread to read them, and ``.netrc`` too); the CA bundle loaded once per process and
only for https.

Cancellation cannot wedge this pool: aiohttp gives a connection back (or closes it) synchronously in
its cleanup, with no await a second ``cancel()`` could interrupt, and a reply left half read closes
its connection instead of returning it to the pool.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncGenerator
from dataclasses import dataclass

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from moa.errors import ModelError, TimedOut
from moa.models import openai_wire  # MAX_REPLY_BYTES read at call time: tests lower it
from moa.models.base import ModelReply, ModelRequest, TokenCallback
from moa.models.openai_wire import (
    CONNECT_TIMEOUT_S,
    JSON_HEADERS,
    connect_timed_out,
    connection_failed,
    consume_sse,
    endpoint,
    header_overrides,
    parse_reply,
    read_error_body,
    read_reply_body,
    status_error,
)

__all__ = ["AiohttpClient"]


@functools.cache
def _ssl_context() -> ssl.SSLContext:
    """The CA bundle httpx would use (certifi, or ``SSL_CERT_FILE``/``SSL_CERT_DIR``), loaded once
    per process: it takes ~25 ms, and ``run_sync`` makes a loop, hence a session, per call."""
    import httpx  # only for https, and only once

    return httpx.create_ssl_context()


@functools.lru_cache(maxsize=64)
def _timeout(timeout_s: float | None, pool_s: float) -> aiohttp.ClientTimeout:
    # sock_read: like httpx's read timeout, per read, so a long stream that keeps talking lives;
    # connect: a backstop only, as requests wait for a free connection before they reach aiohttp
    sock_connect = CONNECT_TIMEOUT_S if timeout_s is None else min(timeout_s, CONNECT_TIMEOUT_S)
    return aiohttp.ClientTimeout(
        total=None, connect=pool_s + sock_connect, sock_connect=sock_connect, sock_read=timeout_s
    )


@dataclass(frozen=True, slots=True)
class _Route:
    """Where the requests for one api_base go, worked out once per session."""

    url: URL
    ssl: ssl.SSLContext | bool
    proxy: URL | None
    proxy_auth: aiohttp.BasicAuth | None


def _route(api_base: str | None) -> _Route:
    url = URL(endpoint(api_base))
    try:
        proxy, proxy_auth = get_env_proxy_for_url(url)
    except LookupError:  # none set, or NO_PROXY covers this host
        proxy, proxy_auth = None, None
    return _Route(url, _ssl_context() if url.scheme == "https" else True, proxy, proxy_auth)


async def _close_with_loop(session: aiohttp.ClientSession) -> AsyncGenerator[None, None]:
    """Parked at its ``yield`` for the loop's life: ``asyncio.run`` closes every live async
    generator before it closes the loop, which closes the session on the loop that owns its
    sockets (a session collected unclosed logs an error on a loop that is gone)."""
    try:
        yield
    finally:
        await session.close()


async def _read_reply(resp: aiohttp.ClientResponse, request: ModelRequest) -> bytes:
    declared = resp.content_length
    if resp.headers.get("content-encoding"):
        declared = None  # the length of the compressed body: a small gzip may inflate to gigabytes
    elif declared is not None and declared <= openai_wire.MAX_REPLY_BYTES:
        return await resp.read()  # aiohttp reads no more than the length it was told
    return await read_reply_body(resp.content.iter_any(), declared, request)


class AiohttpClient:
    """One event loop's session: at most ``max_connections`` sockets, kept alive
    ``keepalive_expiry_s``."""

    __slots__ = ("_closer", "_pool_timeout_s", "_routes", "_session")

    def __init__(self, *, max_connections: int, keepalive_expiry_s: float, pool_timeout_s: float) -> None:
        connector = aiohttp.TCPConnector(
            limit=max_connections, limit_per_host=0, keepalive_timeout=keepalive_expiry_s
        )
        # ClientTimeout(): no session-wide cap (aiohttp's is 5 minutes, and a local model may take
        # longer); each request carries its own. The headers are every request's: the usual
        # request passes none of its own (see ``header_overrides``)
        self._session = aiohttp.ClientSession(
            connector=connector,
            cookie_jar=aiohttp.DummyCookieJar(),
            timeout=aiohttp.ClientTimeout(),
            headers=JSON_HEADERS,
        )
        self._pool_timeout_s = pool_timeout_s
        self._routes: dict[str | None, _Route] = {}
        self._closer = _close_with_loop(self._session)

    async def start(self) -> None:
        """Arm the close at the loop's end (runs to the generator's ``yield``, never suspends)."""
        await self._closer.__anext__()

    async def send(self, request: ModelRequest, body: bytes, on_token: TokenCallback | None) -> ModelReply:
        resp: aiohttp.ClientResponse | None = None
        try:
            route = self._routes.get(request.api_base)
            if route is None:
                route = self._routes[request.api_base] = _route(request.api_base)
            resp = await self._session.post(
                route.url,
                data=body,
                headers=header_overrides(request, on_token is not None),
                timeout=_timeout(request.timeout_s, self._pool_timeout_s),
                ssl=route.ssl,
                proxy=route.proxy,
                proxy_auth=route.proxy_auth,
                # an OpenAI-compatible endpoint never redirects a completion: following one sends
                # the prompt to a host the agent did not name and takes its answer as the model's
                allow_redirects=False,
            )
            try:
                if not 200 <= resp.status < 300:
                    body = await read_error_body(resp.content.iter_any())
                    raise status_error(resp.status, body, resp.headers, request)
                if on_token is None:
                    return parse_reply(await _read_reply(resp, request), request)
                return await consume_sse(resp.content.iter_any(), request, on_token)
            finally:
                # after a whole read the connection is back in the pool already; a reply left half
                # read (an error, a cancel, a stream stopped at [DONE] before its last chunk)
                # closes its connection here instead of returning it
                resp.release()
        except ModelError:
            raise
        except aiohttp.ClientConnectorError as e:
            # no connection was made (refused, unreachable, DNS, TLS handshake), so no byte of the
            # request left: nothing can be billed, and the budget must not keep a worst case
            raise connection_failed(e, request, never_sent=True) from e
        except aiohttp.ConnectionTimeoutError as e:
            raise connect_timed_out(e, request) from e
        except TimeoutError as e:  # aiohttp's socket timeouts are TimeoutErrors too
            raise TimedOut(
                f"timed out: {type(e).__name__}", model=request.model, node=request.node or None
            ) from e
        except ValueError as e:
            # aiohttp refuses a header value with a control character (a key with a newline)
            # before anything is sent; one raised once a reply came may follow a billed request
            raise connection_failed(e, request, never_sent=resp is None) from e
        except (aiohttp.ClientError, OSError) as e:
            raise connection_failed(e, request) from e

    async def aclose(self) -> None:
        await self._closer.aclose()
        await self._session.close()  # already closed when the closer had started; harmless twice
