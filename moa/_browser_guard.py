"""What a web page in the user's browser sends a moa server (``moa serve``, ``moa view``) is refused
(403) before any call: a request naming another origin (``Origin``: a form or a ``text/plain``
fetch is sent without asking the server first, so any page could spend the keys of a server
without an API key, or vote in the viewer), and, on a loopback interface, a ``Host`` that is no
loopback name (DNS rebinding: a page's own name pointed at 127.0.0.1 is "same origin", and reads
the replies). The interface is the one each request arrived on, so a server bound to every
interface (``0.0.0.0``) still refuses a rebound name from the user's own browser. API clients send
neither."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from moa._loopback import LOOPBACK_NAMES, on_loopback

__all__ = ["BrowserGuard", "openai_error", "refusal"]


def _hostname(host_header: str) -> str | None:
    try:
        return urlsplit(f"//{host_header}").hostname  # lowercased, the port and IPv6 brackets dropped
    except ValueError:
        return None


def _foreign_host(address: str, given: str) -> bool:
    """Whether a request to a server listening at ``address`` names, in its ``Host`` header
    ``given``, no loopback name while the server is on loopback."""
    return on_loopback(address) and _hostname(given) not in LOOPBACK_NAMES | {address.lower()}


#: ``_foreign_host`` kept for the few pairs a server sees: parsing the header cost a served request
#: as much as reading its body. Only for a header a host name and port fit in (262 characters), so
#: a client sending huge ones cannot make the cache hold megabytes
_kept_foreign_host = functools.lru_cache(maxsize=256)(_foreign_host)
_KEPT_HOST_CHARS = 262


def refusal(scope: dict[str, Any]) -> str | None:
    """Why the HTTP request of ``scope`` comes from a web page (see the module docstring), or None.
    The interface is the one the request reached (the ASGI ``server``), so an app served by
    ``create_app`` under any ASGI server is guarded as ``moa serve`` is."""
    headers = dict(scope["headers"])
    given = headers.get(b"host", b"").decode("latin-1")
    server = scope.get("server")
    address = str(server[0]) if server else ""
    foreign = _kept_foreign_host if len(given) <= _KEPT_HOST_CHARS else _foreign_host
    if address and foreign(address, given):
        return f"Host `{given[:100]}` is not a loopback name, and this server listens on loopback only"
    origin = headers.get(b"origin")
    if origin is not None and _netloc(origin.decode("latin-1")) != given.lower():
        return "a request from a web page of another origin is refused"
    return None


def _netloc(origin: str) -> str | None:
    try:
        return urlsplit(origin).netloc.lower()
    except ValueError:  # `http://[::1` is no origin of this server's (it was a 500 and a traceback)
        return None


def openai_error(why: str) -> dict[str, Any]:
    """The refusal as an OpenAI-style error body (``moa serve``'s clients read that shape)."""
    return {"error": {"message": why, "type": "forbidden", "code": "forbidden"}}


class BrowserGuard:
    """ASGI middleware answering a web page's request (``refusal``) with a 403 naming why, in the
    body ``error_body`` makes of the reason (the server's own error shape)."""

    def __init__(self, app: Any, error_body: Callable[[str], dict[str, Any]] = openai_error) -> None:
        self.app = app
        self.error_body = error_body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        why = refusal(scope) if scope["type"] == "http" else None
        if why is None:
            await self.app(scope, receive, send)
            return
        if isinstance(scope.get("state"), dict):
            scope["state"]["status"] = 403  # the request log's status
        body = json.dumps(self.error_body(why)).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send({"type": "http.response.body", "body": body})
