"""OpenTelemetry traces and metrics following the GenAI semantic conventions (optional extra
``moa-sdk[otel]``; off unless configured).

One span per run (``invoke_agent <topology>``), one per node (``execute_node <id>``) under it, and
one per model call attempt (``chat <model>``) under its node, with the ``gen_ai.*`` attributes
(operation, provider, request and response model, token usage, temperature, max_tokens,
``error.type``) plus ``moa.cost_usd`` and ``moa.attempts``; and the metrics
``gen_ai.client.token.usage`` and ``gen_ai.client.operation.duration``. Prompt and reply text is
recorded only with ``capture_content=True`` (``gen_ai.input.messages`` / ``gen_ai.output.messages``).

::

    from moa.otel import Telemetry
    runner = moa.Runner(telemetry=Telemetry())            # the global tracer and meter providers
    runner = moa.Runner(telemetry=Telemetry(tracer_provider=tp, meter_provider=mp, capture_content=True))

Spans are parented through ``contextvars``: node tasks are created inside the run span and attempts
run inside their node's task, so the tree holds without passing spans around.
"""

from __future__ import annotations

import contextlib
import json
import traceback
from collections.abc import Awaitable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from moa.errors import UserError
from moa.results import Usage
from moa.scrub import environment_secrets, scrub

if TYPE_CHECKING:
    from moa.models.base import ModelRequest
    from moa.results import Attempt, CallRecord, RunResult

__all__ = ["INSTALL_HINT", "Telemetry"]

INSTALL_HINT = "OpenTelemetry needs the `otel` extra: pip install 'moa-sdk[otel]'"
_SCOPE = "moa"


def _provider_name(model: str) -> str:
    return model.split("/", 1)[0] if "/" in model else "openai"


class Telemetry:
    """Where moa's spans and metrics go (the OpenTelemetry API's providers)."""

    def __init__(
        self, *, tracer_provider: Any = None, meter_provider: Any = None, capture_content: bool = False
    ) -> None:
        try:
            from opentelemetry import metrics, trace
        except ImportError:
            raise UserError(INSTALL_HINT) from None
        from moa import __version__

        self._trace = trace
        self.tracer = (tracer_provider or trace.get_tracer_provider()).get_tracer(_SCOPE, __version__)
        meter = (meter_provider or metrics.get_meter_provider()).get_meter(_SCOPE, __version__)
        self.capture_content = capture_content
        self.token_usage = meter.create_histogram(
            "gen_ai.client.token.usage", unit="{token}", description="Tokens used per model call attempt"
        )
        self.duration = meter.create_histogram(
            "gen_ai.client.operation.duration", unit="s", description="Duration of a model call attempt"
        )

    @contextlib.contextmanager
    def _span(self, name: str, attrs: dict[str, Any], kind: Any = None, record: bool = True) -> Iterator[Any]:
        """A span, current inside the block, that records an exception passing through it
        scrubbed (with ``record``; else only its status): OpenTelemetry's own recording writes the
        whole chained traceback, where a provider library's exception quotes the key it was
        refused with. A tracer or span processor that raises (a host's buggy processor) leaves the
        block untraced instead of failing the run, whose result and cost are worth more."""
        try:
            span = self.tracer.start_span(name, kind=kind or self._trace.SpanKind.INTERNAL, attributes=attrs)
        except Exception:
            span = self._trace.INVALID_SPAN
        with self._trace.use_span(
            span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        ):
            try:
                yield span
            except BaseException as e:
                with contextlib.suppress(Exception):
                    self._record_exception(span, e, record)
                raise
            finally:
                with contextlib.suppress(Exception):
                    span.end()

    def _record_exception(self, span: Any, e: BaseException, record: bool = True) -> None:
        secrets = environment_secrets()
        if record:
            text = "".join(traceback.format_exception(type(e), e, e.__traceback__))
            span.record_exception(
                e,
                attributes={
                    "exception.message": scrub(str(e), secrets),
                    "exception.stacktrace": scrub(text, secrets),
                },
                escaped=True,
            )
        span.set_status(
            self._trace.Status(self._trace.StatusCode.ERROR, scrub(f"{type(e).__name__}: {e}", secrets))
        )

    @contextlib.contextmanager
    def run_span(self, topology: str, run_id: str) -> Iterator[Any]:
        attrs = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": topology, "moa.run_id": run_id}
        with self._span(f"invoke_agent {topology}", attrs) as span:
            yield span

    async def traced(
        self, topology: str, run_id: str, run: Awaitable[RunResult], calls: Sequence[CallRecord]
    ) -> RunResult:
        """``run`` awaited inside its ``invoke_agent`` span, which ends with the result's totals or,
        should it fail, with those of ``calls`` (the run's own list, filled as it goes). The tasks
        ``run`` creates inherit the span as their parent: a run's nodes, or a cascade's stages."""
        with self.run_span(topology, run_id) as span:
            try:
                result = await run
            except BaseException as e:
                self.end_run(span, None, e, calls)
                raise
            self.end_run(span, result, None)
            return result

    def end_run(
        self,
        span: Any,
        result: RunResult | None,
        error: BaseException | None,
        calls: Sequence[CallRecord] = (),
    ) -> None:
        """Close a run's span: its totals from ``result``, or, for a run that failed or was
        cancelled, from the ``calls`` it made, which were paid all the same."""
        with contextlib.suppress(Exception):  # see ``_span``: the run's result comes first
            self._end_run(span, result, error, calls)

    def _end_run(
        self, span: Any, result: RunResult | None, error: BaseException | None, calls: Sequence[CallRecord]
    ) -> None:
        if result is None:
            usage = sum((c.usage for c in calls), Usage())
            cost, count = sum(c.cost_usd for c in calls), len(calls)
        else:
            usage, cost, count = result.usage, result.cost_usd, len(result.calls)
        _usage_attributes(span, usage)
        span.set_attribute("moa.cost_usd", cost)
        span.set_attribute("moa.calls", count)
        if error is not None:
            self._error(span, error)

    @contextlib.contextmanager
    def node_span(self, node: str, agent_model: str | None) -> Iterator[Any]:
        attrs: dict[str, Any] = {"moa.node.id": node}
        if agent_model is not None:
            attrs["gen_ai.request.model"] = agent_model
        with self._span(f"execute_node {node}", attrs) as span:
            yield span

    @contextlib.contextmanager
    def call_span(self, request: ModelRequest, number: int) -> Iterator[Any]:
        attrs: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": _provider_name(request.model),
            "gen_ai.request.model": request.model,
            "moa.node.id": request.node,
            "moa.attempts": number,
        }
        if request.temperature is not None:
            attrs["gen_ai.request.temperature"] = request.temperature
        if request.max_tokens is not None:
            attrs["gen_ai.request.max_tokens"] = request.max_tokens
        if self.capture_content:
            attrs["gen_ai.input.messages"] = json.dumps(
                [dict(m) for m in request.messages], ensure_ascii=False
            )
        with self._span(f"chat {request.model}", attrs, self._trace.SpanKind.CLIENT, record=False) as span:
            yield span

    def end_call(
        self,
        span: Any,
        request: ModelRequest,
        rec: CallRecord,
        attempt: Attempt | None,
        error: BaseException | None = None,
        cost_usd: float = 0.0,
    ) -> None:
        """Close an attempt's span from its ``attempt_log`` entry, the exception it raised, if
        any, and what it cost (``rec.cost_usd`` is the call's running total over its attempts),
        and record the metrics."""
        with contextlib.suppress(Exception):  # a broken meter or span must not cost the reply
            self._end_call(span, request, rec, attempt, error, cost_usd)

    def _end_call(
        self,
        span: Any,
        request: ModelRequest,
        rec: CallRecord,
        attempt: Attempt | None,
        error: BaseException | None,
        cost_usd: float,
    ) -> None:
        base = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": _provider_name(request.model),
            "gen_ai.request.model": request.model,
        }
        if attempt is None:
            # refused before anything was sent (the budget): no attempt, no metric, but the span's
            # error status still says of what kind
            if error is not None:
                span.set_attribute("error.type", type(error).__name__)
            return
        if attempt.status == "ok" and rec.model:  # a failed attempt had no response, nor its model
            span.set_attribute("gen_ai.response.model", rec.model)
        if attempt.usage is not None:
            _usage_attributes(span, attempt.usage)
            self.token_usage.record(attempt.usage.prompt_tokens, {**base, "gen_ai.token.type": "input"})
            self.token_usage.record(attempt.usage.completion_tokens, {**base, "gen_ai.token.type": "output"})
        span.set_attribute("moa.cost_usd", cost_usd)
        span.set_attribute("moa.attempt.status", attempt.status)
        extra = {}
        if attempt.status != "ok":
            # the class, as on the run's span: the message's words ("rate limited (429)", "no reply
            # within timeout_s=30") are no type, and as a metric attribute each is a new series
            kind = type(error).__name__ if error is not None else attempt.status
            span.set_attribute("error.type", kind)
            span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, attempt.error or attempt.status))
            extra["error.type"] = kind
        elif self.capture_content and rec.reply is not None:
            span.set_attribute(
                "gen_ai.output.messages",
                json.dumps([{"role": "assistant", "content": rec.reply}], ensure_ascii=False),
            )
        self.duration.record(attempt.latency_s, {**base, **extra})

    def _error(self, span: Any, error: BaseException) -> None:
        span.set_attribute("error.type", type(error).__name__)
        message = scrub(str(error), environment_secrets())[:200]
        span.set_status(self._trace.Status(self._trace.StatusCode.ERROR, message))


def _usage_attributes(span: Any, usage: Usage) -> None:
    """The GenAI conventions' token counts; the cache's (parts of the input's) only when there are
    any, so a provider without prompt caching reports none rather than zeros."""
    span.set_attribute("gen_ai.usage.input_tokens", usage.prompt_tokens)
    span.set_attribute("gen_ai.usage.output_tokens", usage.completion_tokens)
    if usage.cached_tokens:
        span.set_attribute("gen_ai.usage.cache_read.input_tokens", usage.cached_tokens)
    if usage.cache_write_tokens:
        span.set_attribute("gen_ai.usage.cache_creation.input_tokens", usage.cache_write_tokens)
