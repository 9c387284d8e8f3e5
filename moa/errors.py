"""moa's one exception tree.

::

    MoAError                      everything moa raises; carries ``calls`` made so far
    ├── UserError                 bad input: a file, a flag, a dataset, an unknown model or preset
    │   ├── TopologyError         a topology that fails validation (``problems``: one line each)
    │   ├── DatasetError          a dataset file or row that cannot be read
    │   ├── RequestRefused        a run refused for what its caller asked (``field`` names the argument)
    │   ├── MissingExtra          an optional dependency is not installed (names the install command)
    │   └── StoreError            an experiment's store could not be written (a full disk, a lock)
    ├── ModelError                a model call failed after its retries and fallbacks
    │   ├── RateLimited           429 / quota; ``retry_after_s`` when the provider said
    │   ├── TimedOut               a call or a whole run passed its time limit
    │   ├── ProviderError         5xx, connection reset, unavailable; ``retry_after_s`` as above
    │   ├── MalformedReply        a reply that could not be parsed (bad JSON, no choices, bad plan)
    │   └── RequestRejected       4xx that will not change on retry (bad request, auth, not found)
    ├── BudgetExceeded            a call was not made because its worst case would pass the budget
    └── QuorumNotReached          fewer than ``quorum`` inputs of a fan-in answered

Every error raised out of a run carries ``calls``: the ``CallRecord`` of every call the run made,
so nothing paid for disappears from the accounts.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from moa.results import CallRecord, NodeResult, Usage

__all__ = [
    "BudgetExceeded",
    "DatasetError",
    "MalformedReply",
    "MissingExtra",
    "MoAError",
    "ModelError",
    "ProviderError",
    "QuorumNotReached",
    "RateLimited",
    "RequestRefused",
    "RequestRejected",
    "StoreError",
    "TimedOut",
    "TopologyError",
    "UserError",
]


class MoAError(Exception):
    """Base of every error moa raises."""

    def __init__(self, message: str) -> None:
        if not message.isascii():
            # a provider's error body may decode to a lone surrogate (`"\ud800"`): the message is
            # stored, logged and printed, and none of them can encode one
            message = message.encode(errors="backslashreplace").decode()
        super().__init__(message)
        self.message = message
        #: every call the failed run made, successful or not, in the order they finished
        self.calls: list[CallRecord] = []
        #: per-node results the failed run had computed
        self.nodes: dict[str, NodeResult] = {}
        #: the failed run's id (as on its log events), when it failed inside a run
        self.run_id: str | None = None

    def __str__(self) -> str:
        return self.message

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled (a Dask worker's error, back on the driver): rebuilt from its attributes, not by
        # calling __init__ with its message alone, which failed for the subclasses with keyword-only
        # arguments (QuorumNotReached, RequestRefused) and lost the pair's error and its calls
        return (_rebuilt, (type(self), self.args), self.__dict__)


def _rebuilt(cls: type[MoAError], args: tuple[Any, ...]) -> MoAError:
    error = cls.__new__(cls)
    error.args = args
    return error


class UserError(MoAError):
    """Bad input: a file, a flag, a dataset row, an unknown preset or model."""


class TopologyError(UserError):
    """A topology that fails validation; ``problems`` holds one line per problem."""

    def __init__(self, problems: Sequence[str], *, source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        prefix = f"{source}: " if source else ""
        if len(self.problems) == 1:
            text = prefix + self.problems[0]
        else:
            text = f"{prefix}{len(self.problems)} problems:\n" + "\n".join(f"  {p}" for p in self.problems)
        super().__init__(text)

    def lines(self) -> list[str]:
        """One line per problem, each prefixed with the source when known."""
        prefix = f"{self.source}: " if self.source else ""
        return [prefix + p for p in self.problems]


class DatasetError(UserError):
    """A dataset file or row that cannot be read."""


class RequestRefused(UserError):
    """A run refused before any call for what its caller asked of it (an output schema the answer's
    check cannot read, JSON from a cascade), not for how the topology or the machine is set up.

    ``field`` names the run's argument at fault (``output_type``, ``prompt``) and ``reason`` says
    why without naming it, so a server can answer its client in the client's own terms (``moa
    serve``: a 400 naming the request field) where any other ``UserError`` is the server's own
    configuration."""

    def __init__(self, reason: str, *, field: str, source: str | None = None) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"{source + ': ' if source else ''}{field}: {reason}")


class MissingExtra(UserError):
    """An optional dependency is missing; the message names the command that installs it."""


class StoreError(UserError):
    """An experiment's store could not be written (or read) in a run: a reply paid for that cannot be
    cached (a full disk, a read-only file, another program's write lock). Not the model's failure: it
    is never retried nor fallen back from, no quorum absorbs it, and the run stops at once, so the
    experiment pays for no call it could not keep. The message names the store and the write."""


class ModelError(MoAError):
    """A model call failed; ``model``, ``node`` and the provider's own message are kept."""

    #: whether a retry of the same request may succeed
    retryable: bool = True

    def __init__(
        self,
        message: str,
        *,
        model: str | None = None,
        node: str | None = None,
        status_code: int | None = None,
        provider_message: str | None = None,
        never_sent: bool = False,
    ) -> None:
        self.model = model
        self.node = node
        self.status_code = status_code
        #: the request surely never reached the provider (the connection was refused, or not
        #: made in time): the attempt is billed nothing
        self.never_sent = never_sent
        self.provider_message = provider_message if provider_message is not None else message
        super().__init__(message)

    def __str__(self) -> str:
        where = []
        if self.node:
            where.append(f"node `{self.node}`")
        if self.model:
            where.append(f"model `{self.model}`")
        prefix = ", ".join(where)
        return f"{prefix}: {self.message}" if prefix else self.message


class RateLimited(ModelError):
    """The provider refused for rate or quota reasons (429)."""

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after_s = retry_after_s


class TimedOut(ModelError):
    """A call passed its ``timeout_s`` or a run passed its ``deadline_s``."""


class ProviderError(ModelError):
    """A 5xx reply, a reset connection or an unavailable endpoint; ``retry_after_s`` when a 5xx
    said how long to wait (a 503 with ``Retry-After``)."""

    def __init__(self, message: str, *, retry_after_s: float | None = None, **kw: object) -> None:
        super().__init__(message, **kw)  # type: ignore[arg-type]
        self.retry_after_s = retry_after_s


class MalformedReply(ModelError):
    """A reply that could not be parsed: bad JSON, no choices, an invalid structured output.

    ``usage``: the counts the reply did report, readable beside what was not (a reply with no
    message content, or none moa can read, is billed like any other): the attempt is booked at
    them instead of as unknown usage. None when the reply said nothing readable about its usage.

    ``rejected``: the reply was read and its text refused (empty, no content, only reasoning, or
    failing a check such as a judge's verdict), not a body that could not be read as a reply (not
    JSON, no choices, a stream cut short): a judge's reply without a verdict, not the provider
    failing."""

    usage: Usage | None = None
    #: ``usage`` holds moa's estimate of what the reply did not count (a reply of reasoning only)
    usage_estimated: bool = False
    rejected: bool = False


class RequestRejected(ModelError):
    """A 4xx that will not change on retry: bad request, authentication, unknown model."""

    retryable = False


class BudgetExceeded(MoAError):
    """A call was not made because its worst-case cost would pass the budget."""

    def __init__(
        self,
        message: str,
        *,
        node: str | None = None,
        model: str | None = None,
        needed_usd: float | None = None,
        spent_usd: float | None = None,
    ) -> None:
        self.node = node
        self.model = model
        #: the refused call's worst case: the least the budget must have left for it to be made
        self.needed_usd = needed_usd
        #: what the budget had spent when it refused
        self.spent_usd = spent_usd
        super().__init__(message)


class BaselineFailed(MoAError):
    """An experiment whose baseline has no quality because every run of it that was stored failed
    (a server down, a key refused): the runs failed, the input was fine."""


class QuorumNotReached(MoAError):
    """Fewer inputs of a fan-in answered than its ``quorum``."""

    def __init__(
        self, message: str, *, node: str, needed: int, answered: int, errors: Sequence[MoAError] = ()
    ) -> None:
        self.node = node
        self.needed = needed
        self.answered = answered
        self.errors = list(errors)
        super().__init__(message)


def __getattr__(name: str) -> type[MoAError]:
    # ``Timeout`` clashed with asyncio.Timeout and httpx.Timeout; the old name keeps working, warned
    if name == "Timeout":
        warnings.warn("moa.errors.Timeout is now moa.errors.TimedOut", DeprecationWarning, stacklevel=2)
        return TimedOut
    raise AttributeError(f"module 'moa.errors' has no attribute {name!r}")
