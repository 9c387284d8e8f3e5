"""OpenTelemetry: spans per run, node and call attempt with the GenAI semantic conventions, the two
GenAI client metrics, content only when opted in; checked with the SDK's in-memory exporter and by
OTLP/HTTP export to a loopback receiver started by the test. Off unless configured."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

pytest.importorskip("opentelemetry.sdk", reason="needs the otel extra")

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import moa
from moa.models.base import ModelReply, ModelRequest
from moa.otel import Telemetry
from moa.results import Usage
from moa.testing import FunctionModel, ScriptedModel
from moa.testing.sim import FaultPlan, SimModel, SimServer
from moa.topology.loader import load_data


def _parallel(base: str) -> moa.Topology:
    def agent(model: str) -> dict[str, Any]:
        return {
            "model": f"openai/{model}",
            "api_base": base,
            "temperature": 0.3,
            "max_tokens": 64,
            "retry": {"max_attempts": 3, "backoff_base_s": 0.01, "backoff_max_s": 0.02},
            "pricing": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
        }

    return load_data(
        {
            "name": "p2",
            "kind": "parallel",
            "workers": ["a", "b"],
            "aggregator": "agg",
            "agents": {"a": agent("m-a"), "b": agent("m-b"), "agg": agent("m-agg")},
        }
    )


@pytest.fixture
def sdk() -> Iterator[tuple[TracerProvider, InMemorySpanExporter, MeterProvider, InMemoryMetricReader]]:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    yield tp, exporter, mp, reader
    tp.shutdown()
    mp.shutdown()


async def test_spans_follow_the_genai_conventions(sdk: Any) -> None:
    tp, exporter, mp, reader = sdk
    with SimServer(default=SimModel(answer="four words of answer")) as srv:
        async with moa.Runner(telemetry=Telemetry(tracer_provider=tp, meter_provider=mp)) as runner:
            result = await _parallel(srv.base_url).run("what is two plus two", runner=runner)
    spans = exporter.get_finished_spans()
    by_name = {s.name: s for s in spans}
    run = by_name["invoke_agent p2"]
    assert run.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert run.attributes["moa.run_id"] == result.run_id and result.run_id
    assert run.attributes["moa.cost_usd"] == pytest.approx(result.cost_usd)
    nodes = [s for s in spans if s.name.startswith("execute_node ")]
    assert {s.name for s in nodes} == {"execute_node a", "execute_node b", "execute_node aggregate"}
    assert all(s.parent is not None and s.parent.span_id == run.context.span_id for s in nodes)
    chats = [s for s in spans if s.name.startswith("chat ")]
    assert len(chats) == 3
    node_ids = {s.context.span_id for s in nodes}
    for c in chats:
        a = c.attributes
        assert c.parent is not None and c.parent.span_id in node_ids
        assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.provider.name"] == "openai"
        assert a["gen_ai.request.model"] == c.name.removeprefix("chat ")
        assert a["gen_ai.response.model"] == a["gen_ai.request.model"]
        assert a["gen_ai.request.temperature"] == 0.3 and a["gen_ai.request.max_tokens"] == 64
        assert a["gen_ai.usage.input_tokens"] > 0 and a["gen_ai.usage.output_tokens"] == 4
        assert "gen_ai.usage.cache_read.input_tokens" not in a
        assert a["moa.cost_usd"] > 0 and a["moa.attempts"] == 1
        assert "gen_ai.input.messages" not in a and "gen_ai.output.messages" not in a  # content is opt-in
    metrics = {
        m.name: m
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    usage = metrics["gen_ai.client.token.usage"].data.data_points
    assert {p.attributes["gen_ai.token.type"] for p in usage} == {"input", "output"}
    assert sum(p.count for p in metrics["gen_ai.client.operation.duration"].data.data_points) == 3


async def test_retried_attempts_each_get_a_span_with_the_error_type(sdk: Any) -> None:
    tp, exporter, mp, reader = sdk
    faults = FaultPlan(rate=1.0, kinds=("500",), models=("m-a",), seed=1)
    with SimServer(default=SimModel(), faults=faults) as srv:
        async with moa.Runner(telemetry=Telemetry(tracer_provider=tp, meter_provider=mp)) as runner:
            topo = _parallel(srv.base_url)
            with pytest.raises(moa.MoAError) as raised:
                await topo.run("hello", runner=runner)
    spans = exporter.get_finished_spans()
    failed = [s for s in spans if s.name == "chat openai/m-a"]
    assert [s.attributes["moa.attempts"] for s in failed] == [1, 2, 3]
    assert all(s.attributes["error.type"] == "ProviderError" and not s.status.is_ok for s in failed)
    assert not any("gen_ai.response.model" in s.attributes for s in failed)  # no response came
    run = next(s for s in spans if s.name == "invoke_agent p2")
    assert not run.status.is_ok and run.attributes["error.type"] == "ProviderError"
    # the failed run's span still says what its calls cost (m-b answered, and was paid)
    paid = raised.value.calls
    assert run.attributes["moa.cost_usd"] == pytest.approx(sum(c.cost_usd for c in paid))
    assert run.attributes["moa.cost_usd"] > 0
    assert run.attributes["moa.calls"] == len(paid)
    assert run.attributes["gen_ai.usage.output_tokens"] == sum(c.usage.completion_tokens for c in paid)
    # the metric's error.type is the class too: one series per kind of error, not per message
    durations = [
        p
        for rm in reader.get_metrics_data().resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == "gen_ai.client.operation.duration"
        for p in m.data.data_points
    ]
    assert {p.attributes.get("error.type") for p in durations if p.attributes.get("error.type")} == {
        "ProviderError"
    }


class _Cached:
    """A backend whose every reply read 60 of its 100 prompt tokens from the provider's cache and
    wrote 10 to it."""

    local = False

    async def complete(self, request: ModelRequest, on_token: Any = None) -> ModelReply:
        return ModelReply("ok", Usage(100, 5, 60, 10), "m", "stop")

    async def aclose(self) -> None:
        pass


async def test_prompt_cache_counts_follow_the_genai_conventions(sdk: Any) -> None:
    """The cache's tokens, parts of the input's, on the call and run spans under the conventions'
    names; a reply without cached tokens sets neither (see the test above: no zeros)."""
    tp, exporter, mp, _ = sdk
    topology = load_data(
        {"name": "one", "kind": "single", "agent": "a", "agents": {"a": {"model": "fake/m"}}}
    )
    async with moa.Runner(
        models={"fake/m": _Cached()}, telemetry=Telemetry(tracer_provider=tp, meter_provider=mp)
    ) as runner:
        await topology.run("hi", runner=runner)
    by_name = {s.name: s.attributes for s in exporter.get_finished_spans()}
    for name in ("chat fake/m", "invoke_agent one"):
        a = by_name[name]
        assert a["gen_ai.usage.input_tokens"] == 100 and a["gen_ai.usage.output_tokens"] == 5
        assert a["gen_ai.usage.cache_read.input_tokens"] == 60
        assert a["gen_ai.usage.cache_creation.input_tokens"] == 10


async def test_content_only_when_opted_in(sdk: Any) -> None:
    tp, exporter, mp, _ = sdk
    with SimServer(default=SimModel(answer="the reply text")) as srv:
        tel = Telemetry(tracer_provider=tp, meter_provider=mp, capture_content=True)
        async with moa.Runner(telemetry=tel) as runner:
            await _parallel(srv.base_url).run("secret question", runner=runner)
    chat = next(s for s in exporter.get_finished_spans() if s.name == "chat openai/m-a")
    assert "secret question" in chat.attributes["gen_ai.input.messages"]
    assert json.loads(chat.attributes["gen_ai.output.messages"])[0]["content"] == "the reply text"


async def test_no_telemetry_unless_configured(sdk: Any) -> None:
    _, exporter, _, _ = sdk
    with SimServer(default=SimModel()) as srv:
        async with moa.Runner() as runner:
            await _parallel(srv.base_url).run("hi", runner=runner)
    assert exporter.get_finished_spans() == ()


class _Receiver(BaseHTTPRequestHandler):
    bodies: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        n = int(self.headers.get("content-length", "0"))
        _Receiver.bodies.append((self.path, self.rfile.read(n)))
        self.send_response(200)
        self.send_header("content-type", "application/x-protobuf")
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


async def test_otlp_http_export_to_a_loopback_receiver() -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
        tp = TracerProvider()
        tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, timeout=10)))
        with SimServer(default=SimModel()) as srv:
            async with moa.Runner(telemetry=Telemetry(tracer_provider=tp)) as runner:
                await _parallel(srv.base_url).run("exported", runner=runner)
        tp.shutdown()
    finally:
        server.shutdown()
    names = set()
    for path, body in _Receiver.bodies:
        assert path == "/v1/traces"
        req = ExportTraceServiceRequest.FromString(body)
        names |= {s.name for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans}
    assert {"invoke_agent p2", "execute_node aggregate", "chat openai/m-agg"} <= names


@pytest.mark.parametrize("transport", ["litellm", "openai-http"])
async def test_a_failed_run_records_its_exception_without_the_key(
    sdk: Any, transport: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A provider that quotes the refused key: the node and run spans still get an `exception`
    event with the provider's words, but no attribute, event or status holds the key (OpenTelemetry's
    own recording wrote litellm's chained raw exception, key and all)."""
    from tests.test_secrets import K_ODD, echoing_provider

    tp, exporter, mp, _ = sdk
    monkeypatch.setenv("MOA_T_OTEL_KEY", K_ODD)
    with echoing_provider() as base:
        agent = {
            "model": "openai/refuse",
            "api_base": base,
            "api_key_env": "MOA_T_OTEL_KEY",
            "transport": transport,
            "retry": {"max_attempts": 1},
        }
        topo = load_data({"name": "one", "kind": "single", "agent": "a", "agents": {"a": agent}})
        async with moa.Runner(telemetry=Telemetry(tracer_provider=tp, meter_provider=mp)) as runner:
            with pytest.raises(moa.errors.RequestRejected):
                await topo.run("hi", runner=runner)
    spans = exporter.get_finished_spans()
    dump = json.dumps(
        [
            {
                "attributes": dict(s.attributes or {}),
                "status": s.status.description,
                "events": [dict(e.attributes or {}) for e in s.events],
            }
            for s in spans
        ]
    )
    assert "Wombat" not in dump and "Quince" not in dump
    run = next(s for s in spans if s.name == "invoke_agent one")
    event = next(e for e in run.events if e.name == "exception")
    assert "Incorrect API key provided" in event.attributes["exception.message"]
    assert "Traceback" in event.attributes["exception.stacktrace"]
    assert run.status.description and "RequestRejected" in run.status.description


async def test_a_cascades_stages_nest_under_its_span_with_its_run_id(sdk: Any) -> None:
    """A cascade's stages' runs are children of one `invoke_agent <cascade>` span, which carries
    the run id its RunResult (and `moa serve`'s reply) gives and the whole cascade's cost; they
    were separate traces, and no span had that id."""
    tp, exporter, mp, _ = sdk
    answers = iter(["one", "two", "final"])
    topology = load_data(
        {
            "name": "casc",
            "kind": "cascade",
            "stages": [{"agent": "cheap", "samples": 2, "accept": {"agree": 2}}, {"agent": "big"}],
            "agents": {"cheap": {"model": "fake/cheap", "temperature": 0.7}, "big": {"model": "fake/big"}},
        }
    )
    fake = FunctionModel(lambda r: next(answers))
    async with moa.Runner(
        models={"fake/*": fake}, telemetry=Telemetry(tracer_provider=tp, meter_provider=mp)
    ) as runner:
        result = await topology.run("q", runner=runner)
    spans = exporter.get_finished_spans()
    top = next(s for s in spans if s.name == "invoke_agent casc")
    assert top.parent is None and top.attributes["moa.run_id"] == result.run_id
    assert top.attributes["moa.calls"] == len(result.calls) == 3
    stages = [s for s in spans if s.name.startswith("invoke_agent casc/")]
    assert len(stages) == 2 and all(
        s.parent is not None and s.parent.span_id == top.context.span_id for s in stages
    )
    assert {s.context.trace_id for s in spans} == {top.context.trace_id}


async def test_a_cascades_recorded_stages_nest_under_one_span(sdk: Any) -> None:
    """`record_stages` (what cascade tuning runs per item) left each stage's run a root trace of
    its own: they nest under one `invoke_agent <cascade>` span with the cascade's cost."""
    from moa.cascade.execute import record_stages

    tp, exporter, mp, _ = sdk
    topology = load_data(
        {
            "name": "casc",
            "kind": "cascade",
            "stages": [{"agent": "cheap", "samples": 2, "accept": {"agree": 2}}, {"agent": "big"}],
            "agents": {"cheap": {"model": "fake/cheap", "temperature": 0.7}, "big": {"model": "fake/big"}},
        }
    )
    async with moa.Runner(
        models={"fake/*": FunctionModel(lambda r: "42")},
        telemetry=Telemetry(tracer_provider=tp, meter_provider=mp),
    ) as runner:
        records = await record_stages("casc", topology.stage_list, runner, "q", budget=None, deadline_s=None)
    spans = exporter.get_finished_spans()
    top = next(s for s in spans if s.name == "invoke_agent casc")
    assert top.parent is None and top.attributes["moa.calls"] == sum(r.calls for r in records) == 3
    stages = [s for s in spans if s.name.startswith("invoke_agent casc/")]
    assert len(stages) == 2 and all(
        s.parent is not None and s.parent.span_id == top.context.span_id for s in stages
    )
    assert {s.context.trace_id for s in spans} == {top.context.trace_id}


class _BrokenProcessor(SpanProcessor):
    """A host's span processor with a bug: it raises on every span's start and end."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        raise RuntimeError("enrichment processor bug")

    def on_end(self, span: Any) -> None:
        raise RuntimeError("enrichment processor bug")


async def test_a_span_processor_that_raises_costs_the_spans_not_the_run() -> None:
    """The run's result and its calls come back untraced; a raising processor failed the run
    after its calls were paid (the SDK guards exporters, not processors)."""
    tp = TracerProvider()
    tp.add_span_processor(_BrokenProcessor())
    with SimServer(default=SimModel(answer="still here")) as srv:
        async with moa.Runner(telemetry=Telemetry(tracer_provider=tp)) as runner:
            result = await _parallel(srv.base_url).run("hi", runner=runner)
    assert result.output == "still here" and len(result.calls) == 3 and result.cost_usd > 0
    tp.shutdown()


async def test_runs_at_once_keep_their_own_span_trees(sdk: Any) -> None:
    """Runs of one runner in flight together: every node span's parent is its own run's span, and
    every call's is a node of that run (spans are parented through each task's context)."""
    import asyncio

    tp, exporter, mp, _ = sdk
    with SimServer(default=SimModel(latency_s=0.01)) as srv:
        async with moa.Runner(telemetry=Telemetry(tracer_provider=tp, meter_provider=mp)) as runner:
            topo = _parallel(srv.base_url)
            results = await asyncio.gather(*(topo.run(f"q{i}", runner=runner) for i in range(4)))
    spans = exporter.get_finished_spans()
    by_id = {s.context.span_id: s for s in spans}
    for result in results:
        run = next(s for s in spans if s.attributes.get("moa.run_id") == result.run_id)
        mine = [s for s in spans if s.context.trace_id == run.context.trace_id and s is not run]
        assert len([s for s in mine if s.name.startswith("chat ")]) == len(result.calls) == 3
        for s in mine:
            assert s.parent is not None
            parent = by_id[s.parent.span_id]
            assert (
                parent is run
                if s.name.startswith("execute_node ")
                else parent.name.startswith("execute_node ")
            )
            if s.name.startswith("chat "):
                assert s.attributes["moa.node.id"] == parent.attributes["moa.node.id"]


async def test_each_attempts_span_carries_its_own_cost(sdk: Any) -> None:
    """A reply the output schema rejects is paid, then retried: each attempt's span says what that
    attempt cost, so the spans add up to the call's cost (they carried the call's running total,
    and summed to more than was spent)."""
    tp, exporter, mp, _ = sdk
    script = ScriptedModel([ModelReply("not json", Usage(100, 50)), ModelReply('{"a": 1}', Usage(100, 50))])
    topology = load_data(
        {
            "name": "one",
            "kind": "single",
            "agent": "a",
            "agents": {
                "a": {
                    "model": "fake/m",
                    "pricing": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
                    "retry": {"max_attempts": 2, "backoff_base_s": 0.001},
                }
            },
        }
    )
    async with moa.Runner(
        models={"fake/m": script}, telemetry=Telemetry(tracer_provider=tp, meter_provider=mp)
    ) as runner:
        result = await topology.run("q", runner=runner, output_type={"type": "object"})
    chats = [s for s in exporter.get_finished_spans() if s.name == "chat fake/m"]
    assert [s.attributes["moa.attempts"] for s in chats] == [1, 2]
    each = [s.attributes["moa.cost_usd"] for s in chats]
    assert (
        each[0] == pytest.approx(each[1])
        and sum(each) == pytest.approx(result.cost_usd)
        and result.cost_usd > 0
    )


async def test_a_call_the_budget_refuses_has_an_error_type_and_no_metric(sdk: Any) -> None:
    """Refused before it was sent, the call's span has an error status and its `error.type`
    (it had the status alone), and no duration is recorded for an attempt never made."""
    tp, exporter, mp, reader = sdk
    topology = load_data(
        {
            "name": "one",
            "kind": "single",
            "agent": "a",
            "agents": {
                "a": {
                    "model": "fake/m",
                    "max_tokens": 1000,
                    "pricing": {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0},
                }
            },
        }
    )
    sent: list[object] = []
    fake = FunctionModel(lambda r: sent.append(r) or "x")
    async with moa.Runner(
        models={"*": fake}, telemetry=Telemetry(tracer_provider=tp, meter_provider=mp)
    ) as runner:
        with pytest.raises(moa.BudgetExceeded):
            await topology.run("q", runner=runner, budget_usd=0.0001)
    chat = next(s for s in exporter.get_finished_spans() if s.name == "chat fake/m")
    assert not chat.status.is_ok and chat.attributes["error.type"] == "BudgetExceeded"
    assert sent == []
    data = reader.get_metrics_data()
    names = {
        m.name
        for rm in (data.resource_metrics if data else [])
        for sm in rm.scope_metrics
        for m in sm.metrics
    }
    assert "gen_ai.client.operation.duration" not in names
