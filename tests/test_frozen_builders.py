"""The per-call builders of frozen values (``build_usage``, ``build_attempt``, ``build_request``,
``build_reply``) make exactly what the classes' own constructors make: the same type, every field
set, equal and hashed alike, and just as frozen."""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import pytest

from moa.models.base import ModelReply, ModelRequest, build_reply, build_request
from moa.results import Attempt, Usage, build_attempt, build_usage


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
