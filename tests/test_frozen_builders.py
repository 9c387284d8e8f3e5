"""The per-call builders (``build_usage``, ``build_attempt``, ``build_request``, ``build_reply``,
``build_call_record``, ``build_node_result``, ``build_run_result``) make exactly what the
classes' own constructors make: the same type, every field set, equal and hashed alike, and the
frozen ones just as frozen."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import pytest

from moa.calls.call import CallContext, build_call_context
from moa.models.base import ModelReply, ModelRequest, build_reply, build_request
from moa.results import (
    Attempt,
    CallRecord,
    NodeResult,
    RunResult,
    Usage,
    build_attempt,
    build_call_record,
    build_node_result,
    build_run_result,
    build_usage,
)


async def _before_send() -> None:
    return None


def _on_sent() -> None:
    return None


_REQUEST: dict[str, Any] = {
    "model": "openai/m",
    "messages": [{"role": "user", "content": "hi"}],
    "temperature": 0.5,
    "max_tokens": 9,
    "top_p": 0.9,
    "stop": ["x"],
    "api_base": "http://127.0.0.1:1/v1",
    "api_key": "k-123",
    "timeout_s": 3.0,
    "params": {"seed": 1},
    "node": "n",
    "on_sent": _on_sent,
    "before_send": _before_send,
}

PAIRS = [
    (build_usage(3, 4, 1, 2, 1), Usage(3, 4, 1, 2, 1)),
    (build_usage(3, 4), Usage(3, 4)),
    (
        build_attempt("error", 0.25, None, "Timeout: late", 0.5, 0.0, "flex"),
        Attempt("error", 0.25, None, "Timeout: late", 0.5, 0.0, "flex"),
    ),
    (build_request(**_REQUEST), ModelRequest(**_REQUEST)),
    (
        build_reply("Paris.", Usage(1, 2), "m-1", "stop", True, "default"),
        ModelReply("Paris.", Usage(1, 2), "m-1", "stop", usage_estimated=True, service_tier="default"),
    ),
]


def _hash(value: Any) -> int | str:
    """The value's hash, or the error's name when it holds a list or a dict (a request does)."""
    try:
        return hash(value)
    except TypeError as e:
        return type(e).__name__


@pytest.mark.parametrize(("built", "made"), PAIRS, ids=lambda v: type(v).__name__)
def test_a_built_value_is_the_constructed_one(built: Any, made: Any) -> None:
    """Same class, every field set (astuple reads them all), equal, hashed and shown alike."""
    assert type(built) is type(made)
    assert dataclasses.astuple(built) == dataclasses.astuple(made)
    assert built == made
    assert _hash(built) == _hash(made)
    assert repr(built) == repr(made)


@pytest.mark.parametrize(("built", "made"), PAIRS, ids=lambda v: type(v).__name__)
def test_a_built_value_stays_frozen(built: Any, made: Any) -> None:
    """Assigning or deleting a field of a built value raises, as for a constructed one."""
    name = dataclasses.fields(built)[0].name
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(built, name, None)
    with pytest.raises(dataclasses.FrozenInstanceError):
        delattr(built, name)


@pytest.mark.parametrize(
    ("built", "made"),
    [p for p in PAIRS if not isinstance(p[0], ModelRequest)],
    ids=lambda v: type(v).__name__,
)
def test_a_built_value_copies_and_pickles(built: Any, made: Any) -> None:
    """``dataclasses.replace`` and a pickle round trip give the class's own values."""
    first = dataclasses.fields(built)[0].name
    assert dataclasses.replace(built) == made
    assert type(dataclasses.replace(built, **{first: getattr(made, first)})) is type(made)
    assert pickle.loads(pickle.dumps(built)) == made


_MESSAGES = [{"role": "user", "content": "hi"}]


def _mutable_pairs() -> list[tuple[Any, Any]]:
    """(built, constructed) for each mutable per-run value: fresh each call, as runs make them."""
    record = CallRecord(
        node="n",
        model="openai/m",
        requested_model="openai/a",
        started_s=0.5,
        priced=False,
        local=True,
        attempts=0,
        messages=_MESSAGES,
    )
    run = RunResult(
        output="Paris.",
        topology="single",
        usage=Usage(1, 2),
        cost_usd=0.25,
        latency_s=1.5,
        critical_path_s=1.25,
        calls=[record],
        nodes={"n": NodeResult("n")},
        unpriced_models=["openai/m"],
        cost_note="local",
        run_id="0123456789abcdef",
        finish_reason="length",
    )
    return [
        (build_call_record("n", "openai/m", "openai/a", 0.5, False, True, _MESSAGES), record),
        (build_node_result("n"), NodeResult("n")),
        (
            build_run_result(
                "Paris.",
                "single",
                Usage(1, 2),
                0.25,
                1.5,
                1.25,
                [build_call_record("n", "openai/m", "openai/a", 0.5, False, True, _MESSAGES)],
                {"n": build_node_result("n")},
                ["openai/m"],
                "local",
                "0123456789abcdef",
                "length",
            ),
            run,
        ),
    ]


@pytest.mark.parametrize("index", range(3), ids=["CallRecord", "NodeResult", "RunResult"])
def test_a_built_record_is_the_constructed_one(index: int) -> None:
    """Same class, every field set and equal (asdict reads them all), shown and serialised alike,
    pickled and copied as the class's own."""
    built, made = _mutable_pairs()[index]
    assert type(built) is type(made)
    assert dataclasses.asdict(built) == dataclasses.asdict(made)
    assert built == made
    assert repr(built) == repr(made)
    assert built.to_dict() == made.to_dict()
    assert pickle.loads(pickle.dumps(built)) == made
    assert dataclasses.replace(built) == made


def test_a_built_record_owns_its_lists() -> None:
    """Each built record has lists of its own, as a default factory gives: one run's attempts or
    inputs never show in another's."""
    first = build_call_record("n", "m", "m", 0.0, True, False, None)
    second = build_call_record("n", "m", "m", 0.0, True, False, None)
    first.attempt_log.append(Attempt("ok"))
    assert second.attempt_log == []
    a, b = build_node_result("n"), build_node_result("n")
    a.used_inputs.append("x")
    assert b.used_inputs == []


def test_a_built_call_context_is_the_constructed_one() -> None:
    """``build_call_context`` makes what ``CallContext(...)`` does, with a list of calls of its own."""
    logger = "the run's events"
    made = CallContext(t0=1.5, budgets=(), cache=None, logger=logger, telemetry=None)
    built = build_call_context(1.5, (), None, logger, None)
    assert type(built) is CallContext
    assert dataclasses.asdict(built) == dataclasses.asdict(made)
    assert built == made and repr(built) == repr(made)
    assert built.calls is not build_call_context(1.5, (), None, logger, None).calls
