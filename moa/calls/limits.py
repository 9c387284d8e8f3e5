"""Rate limits: a ``Limiter`` per endpoint key, each holding a requests-per-period window, a
tokens-per-period window and a cap on requests in flight (``moa.calls._windows``, shared by every
event loop and thread of the process), kept in a ``RateLimits`` registry (a ``Runner`` holds one; by
default the process-wide registry that ``set_rate_limit`` configures).

Tokens are reserved before the rpm stamp, so the stamp is taken right before the request starts; the
``Permit`` a slot yields takes both again right before the send (``ModelRequest.before_send``), as a
request may still wait, or its event loop stall, between the two.
"""

from __future__ import annotations

import contextlib
import math
import threading
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Literal, get_args
from urllib.parse import urlsplit, urlunsplit

from moa.calls._windows import Gate, Rpm, Tokens
from moa.errors import UserError

__all__ = [
    "Limiter",
    "Limiters",
    "Permit",
    "Permits",
    "RateLimit",
    "RateLimits",
    "clear_rate_limits",
    "endpoint_key",
    "limiter_for",
    "set_rate_limit",
    "shared_rate_limits",
]


# --------------------------------------------------------------------------------------------------
# Rate limits

#: the scopes a limit behind an ``api_base`` may have (``RateLimit.per``); checked at run time too,
#: for callers of the Python API that pass any string
LimitScope = Literal["endpoint", "model"]
_SCOPES: tuple[LimitScope, ...] = get_args(LimitScope)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """Limits on one endpoint (a model or an api_base), shared by every run in the process."""

    #: request starts per ``period_s`` (per minute by default)
    rpm: float | None = None
    #: requests in flight at once
    max_concurrent: int | None = None
    #: tokens per ``period_s``: a request reserves its estimate (prompt bound + max_tokens) when it
    #: starts, and its reply's real total (prompt + completion) replaces it when it arrives
    tpm: int | None = None
    #: the window length; 60 s in production, shorter in tests
    period_s: float = 60.0
    #: behind an ``api_base``, whose limit this is: the server's, shared by every model sent there
    #: (``"endpoint"``, a self-hosted server), or each model's own (``"model"``, a gateway that
    #: counts per model); without an ``api_base`` the model is the endpoint and both are the same
    per: LimitScope = "endpoint"

    def __post_init__(self) -> None:
        if self.per not in _SCOPES:
            raise UserError(f"rate_limit.per must be `endpoint` or `model`, got {self.per!r}")
        # checked by type too: the Python API takes anything, and a NaN max_concurrent used to pass
        # (every comparison with NaN is false) and then hold every request forever, a NaN tpm to
        # limit nothing, and a string to fail with a TypeError deep in the first call
        for name in ("rpm", "period_s"):
            value = getattr(self, name)
            if name == "rpm" and value is None:
                continue
            if not (_is_number(value) and value > 0 and math.isfinite(value)):
                raise UserError(f"rate_limit.{name} must be a number > 0, got {value!r}")
        for name in ("max_concurrent", "tpm"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, int) and not isinstance(value, bool) and value >= 1
            ):
                raise UserError(f"rate_limit.{name} must be a whole number >= 1, got {value!r}")

    @property
    def is_unlimited(self) -> bool:
        """True when no field limits anything."""
        return self.rpm is None and self.max_concurrent is None and self.tpm is None

    def stricter(self, other: RateLimit) -> RateLimit:
        """The field-by-field stricter of two limits (rates compared over the longer period)."""
        period = max(self.period_s, other.period_s)

        def rate(a: RateLimit, value: float | None) -> float | None:
            return None if value is None else value * period / a.period_s

        def low(x: float | None, y: float | None) -> float | None:
            return y if x is None else x if y is None else min(x, y)

        tpm = low(rate(self, self.tpm), rate(other, other.tpm))
        mc = low(self.max_concurrent, other.max_concurrent)
        return RateLimit(
            rpm=low(rate(self, self.rpm), rate(other, other.rpm)),
            max_concurrent=None if mc is None else int(mc),
            tpm=None if tpm is None else max(1, math.floor(tpm)),
            period_s=period,
            per=self.per,
        )


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class Limiter:
    """The shared limits of one endpoint key; ``slot()`` around each request."""

    def __init__(self, key: str, limit: RateLimit) -> None:
        self.key = key
        self.limit = limit
        self._rpm = Rpm(limit.rpm, limit.period_s) if limit.rpm is not None else None
        self._tokens = Tokens(limit.tpm, limit.period_s) if limit.tpm is not None else None
        self._gate = Gate(limit.max_concurrent) if limit.max_concurrent is not None else None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Limiter({self.key!r}, {self.limit!r})"

    def tighten(self, limit: RateLimit) -> None:
        """Apply the field-by-field stricter of the current limit and ``limit``."""
        with self._lock:
            merged = self.limit.stricter(limit)
            if merged == self.limit:
                return
            self.limit = merged
            # retuned in place, not replaced: requests already waiting on a window must meet the
            # stricter limit too (on a replaced window they passed under the old one, together),
            # and the starts already made still count against it
            if merged.rpm is not None:
                if self._rpm is None:
                    self._rpm = Rpm(merged.rpm, merged.period_s)
                else:
                    self._rpm.retune(merged.rpm, merged.period_s)
            if merged.tpm is not None:
                if self._tokens is None:
                    self._tokens = Tokens(merged.tpm, merged.period_s)
                else:
                    self._tokens.retune(merged.tpm, merged.period_s)
            if merged.max_concurrent is not None:
                if self._gate is None:
                    self._gate = Gate(merged.max_concurrent)
                else:
                    self._gate.set_capacity(merged.max_concurrent)

    @property
    def in_flight(self) -> int:
        """Requests holding a concurrency slot now (0 when concurrency is not capped)."""
        return self._gate.in_use if self._gate is not None else 0

    def slot(self, tokens: int = 0) -> AbstractAsyncContextManager[Permit]:
        """Wait for a concurrency slot, then for the rpm and tpm windows; release the slot on exit.

        The concurrency slot comes first so a request is stamped in the windows when it really
        starts, not while it still queues for a slot. The ``Permit`` yielded renews the stamps
        just before the request is sent (see ``Permit.renew``).
        """
        return self._slot(max(0, tokens))

    @contextlib.asynccontextmanager
    async def _slot(self, tokens: int) -> AsyncIterator[Permit]:
        gate = self._gate
        if gate is not None:
            await gate.acquire()
        try:
            # tokens first, then the rpm stamp right before the request starts
            permit = Permit(self)
            try:
                if self._tokens is not None:
                    permit.token_entry = await self._tokens.reserve(tokens)
                if self._rpm is not None:
                    permit.stamp = await self._rpm.acquire()
            except BaseException:
                # cancelled in the rpm queue (a quorum's straggler, a deadline): never sent, so its
                # tokens go to requests that are (kept, sent requests waited behind them)
                permit.give_back()
                raise
            yield permit
        finally:
            if gate is not None:
                gate.release()


class Permit:
    """One request's stamps in its endpoint's windows, taken when it was let through.

    Between that moment and the send, the request may still wait: for a connection, for litellm's
    worker threads, or for an event loop held by a garbage collection or blocking code. Stamps
    taken before such a stall no longer say when the request reached the provider, and requests
    let through in one window reach it together in the next (19 within 75 ms under a limit of 10
    per second). ``renew`` gives the stamps back and takes them again just before the send, waiting
    if the window is full by then, so the limit holds where the provider counts, up to what
    happens after the last await before the request's bytes leave."""

    __slots__ = ("limiter", "stamp", "token_entry")

    def __init__(self, limiter: Limiter) -> None:
        self.limiter = limiter
        self.stamp: float | None = None
        self.token_entry: tuple[float, int] | None = None

    async def renew(self) -> None:
        """Re-take the stamps now, waiting for room in the windows: called right before the send.
        The limiter's current windows are used: a ``tighten`` since keeps the stamps made."""
        tokens, rpm = self.limiter._tokens, self.limiter._rpm
        if self.token_entry is not None and tokens is not None:
            self.token_entry = await tokens.reserve(self.token_entry[1], replacing=self.token_entry)
        if self.stamp is not None and rpm is not None:
            self.stamp = await rpm.acquire(replacing=self.stamp)

    def give_back(self) -> None:
        """Take the stamps out of the windows: the request will not be sent (the budget refused
        it when its turn came), so the window's room goes to one that is."""
        tokens, rpm = self.limiter._tokens, self.limiter._rpm
        if self.token_entry is not None and tokens is not None:
            tokens.remove(self.token_entry)
        if self.stamp is not None and rpm is not None:
            rpm.remove(self.stamp)
        self.token_entry = self.stamp = None

    def settle(self, tokens: int, *, estimated: bool = False) -> None:
        """The reply is in: its token window counts ``tokens`` (prompt and completion, all choices)
        instead of the estimate reserved up front, which held only the prompt when the request set
        no max_tokens, so replies ran a tpm limit over by their length. The window takes the
        difference either way: a reply shorter than its max_tokens gives back what it did not use.
        ``estimated``: the provider reported no usage and ``tokens`` is moa's count of the text; the
        window then keeps the larger of that and the reservation."""
        window = self.limiter._tokens
        if self.token_entry is None or window is None:
            return
        if estimated:
            tokens = max(tokens, self.token_entry[1])
        if tokens > 0 and tokens != self.token_entry[1]:
            self.token_entry = window.settle(self.token_entry, tokens)

    def sent(self) -> None:
        """The request is leaving (``on_sent``): move the stamps to now without waiting, so the
        requests after it are counted from when it left. For a backend that cannot wait right
        before its send (litellm hands the request to worker threads after its ``before_send``),
        this is all that can be done; after a ``renew`` it moves them by microseconds."""
        tokens, rpm = self.limiter._tokens, self.limiter._rpm
        if self.token_entry is not None and tokens is not None:
            self.token_entry = tokens.move(self.token_entry)
        if self.stamp is not None and rpm is not None:
            self.stamp = rpm.move(self.stamp)


class Limiters:
    """Two limiters a request passes, each in turn: its endpoint's (an ``api_base``'s) and its
    model's (a limit set for the model, or its provider, whatever URL it is reached through). Always
    in that order, and an agent without an ``api_base`` takes only its model's, so no two requests
    wait for each other's limiter in a circle."""

    __slots__ = ("limiters",)

    def __init__(self, *limiters: Limiter) -> None:
        self.limiters = limiters

    def __repr__(self) -> str:
        return f"Limiters{self.limiters!r}"

    @property
    def in_flight(self) -> int:
        """Requests holding a concurrency slot of the first limiter now."""
        return self.limiters[0].in_flight

    def slot(self, tokens: int = 0) -> AbstractAsyncContextManager[Permits]:
        """Each limiter's slot in turn (see ``Limiter.slot``); the permits renew together."""
        return self._slot(max(0, tokens))

    @contextlib.asynccontextmanager
    async def _slot(self, tokens: int) -> AsyncIterator[Permits]:
        async with contextlib.AsyncExitStack() as stack:
            permits: list[Permit] = []
            try:
                for limiter in self.limiters:
                    permits.append(await stack.enter_async_context(limiter.slot(tokens)))
            except BaseException:
                # cut while it waited for a later limiter: never sent, the earlier windows' room
                # goes to requests that are
                for permit in permits:
                    permit.give_back()
                raise
            yield Permits(permits)


class Permits:
    """A request's permits from each of its ``Limiters``, used as one ``Permit``."""

    __slots__ = ("permits",)

    def __init__(self, permits: list[Permit]) -> None:
        self.permits = permits

    async def renew(self) -> None:
        for permit in self.permits:
            await permit.renew()

    def give_back(self) -> None:
        for permit in self.permits:
            permit.give_back()

    def settle(self, tokens: int, *, estimated: bool = False) -> None:
        for permit in self.permits:
            permit.settle(tokens, estimated=estimated)

    def sent(self) -> None:
        for permit in self.permits:
            permit.sent()


# --------------------------------------------------------------------------------------------------
# Registries of limiters


def endpoint_key(key: str) -> str:
    """One spelling per endpoint: an ``api_base`` URL without its trailing slashes, its scheme and
    host in lower case (``HTTP://Host:8000/v1/`` is ``http://host:8000/v1``); anything else as is.
    The limit set for one spelling held nothing for an agent writing the other."""
    text = key.strip()
    if "://" not in text:
        return key
    parts = urlsplit(text)
    host = parts.netloc
    creds, at, hostport = host.rpartition("@")
    return urlunsplit(
        (parts.scheme.lower(), creds + at + hostport.lower(), parts.path.rstrip("/"), parts.query, "")
    )


class RateLimits:
    """A registry of limits and limiters, one limiter per endpoint key. A ``Runner`` holds one: by
    default the process-wide registry (``shared_rate_limits()``, configured by ``set_rate_limit``),
    so every run in the process shares each endpoint's window; pass ``RateLimits()`` to a runner
    for limits of its own."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._global: dict[str, RateLimit] = {}
        self._limiters: dict[str, Limiter] = {}
        #: changes whenever a limit is set or a limiter made: what an agent resolved before may
        #: now get another limiter (a runner resolves its agents again when it changed)
        self.version = 0

    def set(
        self,
        key: str,
        *,
        rpm: float | None = None,
        max_concurrent: int | None = None,
        tpm: int | None = None,
        period_s: float = 60.0,
        per: LimitScope = "endpoint",
    ) -> None:
        """Set a limit for a provider prefix (``"openai"``), a model or an api_base URL.

        A provider limit applies to each model of that provider separately (each model keeps its
        own window, as providers count per model); so does an api_base URL's with ``per="model"``
        (a gateway's), where by default every model sent there shares it (a server's). A model's
        or provider's limit holds the model whatever ``api_base`` an agent reaches it through,
        and beside that URL's limit: a request waits for both (``limiter_for``). Limiters
        already handed out are dropped so the next ``limiter_for`` sees the new limit; set limits
        before starting runs. ``period_s`` shortens the window (``rpm`` then counts requests per
        ``period_s``), for tests.
        """
        limit = RateLimit(rpm=rpm, max_concurrent=max_concurrent, tpm=tpm, period_s=period_s, per=per)
        with self._lock:
            self._global[endpoint_key(key)] = limit
            self._limiters.clear()
            self.version += 1

    def clear(self) -> None:
        """Forget every limit and every limiter."""
        with self._lock:
            self._global.clear()
            self._limiters.clear()
            self.version += 1

    def register(self, model: str, api_base: str | None, agent_limit: RateLimit) -> None:
        """Make (or tighten) the limiter an agent's own limit gives its endpoint before any agent is
        resolved, so an agent of that endpoint without a limit shares it whichever a run meets
        first (met first, it was resolved unlimited for good)."""
        self.limiter_for(model, api_base, agent_limit)

    def limiter_for(
        self, model: str, api_base: str | None, agent_limit: RateLimit | None
    ) -> Limiter | Limiters | None:
        """The limiters for an agent's calls, or None when no limit applies.

        Without an ``api_base`` the model is the endpoint: its limiter takes the agent's own limit,
        else one set for the exact model, then for its provider prefix (each model its own window).

        Behind an ``api_base`` two limits may hold, and a request waits for each: the endpoint's
        (the agent's own limit, else one set for the api_base; keyed by the URL, or by URL and
        model when it is ``per`` model, as a gateway counts), and the model's (one set for the exact
        model, else its provider; the same limiter as the model's without an ``api_base``, so a
        model's limit holds whatever URL it is reached through). When agents give different limits
        for one key, the limiter keeps the stricter of each field (it only ever tightens until
        ``clear``/``set``). An agent with no limit of its own gets the limiter another agent's
        limit made for its model there, else for its endpoint (``register``): the server counts
        the endpoint's requests, whoever sends them.
        """
        if agent_limit is None and not self._global and not self._limiters:
            return None  # nothing configured: the hot path pays nothing
        with self._lock:
            if api_base is None:
                return self._keyed(model, model, agent_limit or self._model_limit(model))
            api_base = endpoint_key(api_base)
            # a space never appears in a URL: no api_base's own key can be this
            endpoint = self._keyed(api_base, f"{api_base} {model}", agent_limit or self._global.get(api_base))
            limit = self._model_limit(model)
            own = self._keyed(model, model, limit) if limit is not None else None
        if endpoint is None or own is None:
            return endpoint or own
        return Limiters(endpoint, own)

    def applies(self, model: str, api_base: str | None, agent_limit: RateLimit | None) -> bool:
        """Whether any limit holds an agent's calls to ``model`` (``limiter_for`` would give a
        limiter), found without making one: what the experiment asks before it moves a setup to
        worker processes, which would call the model outside this registry."""
        if agent_limit is not None and not agent_limit.is_unlimited:
            return True
        with self._lock:
            limit = self._model_limit(model)
            if limit is not None and not limit.is_unlimited:
                return True
            keys = [model]
            if api_base is not None:
                api_base = endpoint_key(api_base)
                limit = self._global.get(api_base)
                if limit is not None and not limit.is_unlimited:
                    return True
                keys += [api_base, f"{api_base} {model}"]
            return any(k in self._limiters for k in keys)

    def _model_limit(self, model: str) -> RateLimit | None:
        """The limit set for ``model``, else for its provider prefix. Hold the lock."""
        found = self._global.get(model)
        if found is None and "/" in model:
            found = self._global.get(model.split("/", 1)[0])
        return found

    def _keyed(self, key: str, model_key: str, limit: RateLimit | None) -> Limiter | None:
        """The limiter at ``key`` (``model_key`` for a limit ``per`` model) made or tightened to
        ``limit``; without one, the limiter already made there, if any. Hold the lock."""
        if limit is None or limit.is_unlimited:
            return self._limiters.get(model_key) or self._limiters.get(key)
        if limit.per == "model":
            key = model_key
        limiter = self._limiters.get(key)
        if limiter is None:
            limiter = self._limiters[key] = Limiter(key, limit)
            self.version += 1
        elif limiter.limit != limit:
            limiter.tighten(limit)
        return limiter


_shared: RateLimits | None = None
_shared_lock = threading.Lock()


def shared_rate_limits() -> RateLimits:
    """The process-wide registry (made on first use, never at import)."""
    global _shared
    if _shared is None:
        with _shared_lock:
            if _shared is None:
                _shared = RateLimits()
    return _shared


def set_rate_limit(
    key: str,
    *,
    rpm: float | None = None,
    max_concurrent: int | None = None,
    tpm: int | None = None,
    period_s: float = 60.0,
    per: LimitScope = "endpoint",
) -> None:
    """Set a process-wide limit for a provider prefix (``"openai"``), a model or an api_base URL
    (see ``RateLimits.set``; ``per="model"``: each model behind the URL keeps its own limit, as a
    gateway counts); every runner using the shared registry obeys it."""
    shared_rate_limits().set(key, rpm=rpm, max_concurrent=max_concurrent, tpm=tpm, period_s=period_s, per=per)


def clear_rate_limits() -> None:
    """Forget every process-wide limit and shared limiter (for tests)."""
    shared_rate_limits().clear()


def limiter_for(model: str, api_base: str | None, agent_limit: RateLimit | None) -> Limiter | Limiters | None:
    """The process-wide limiter for an agent's endpoint (see ``RateLimits.limiter_for``)."""
    return shared_rate_limits().limiter_for(model, api_base, agent_limit)
