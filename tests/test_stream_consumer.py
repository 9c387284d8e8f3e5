"""A caller's ``on_token`` callback that raises: the caller's failure, named as such, not the
model's; not retried, and the attempt it cut short booked at its worst case."""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from collections.abc import Iterator

import pytest

import moa
from moa import build
from moa.testing import FunctionModel
from moa.testing.sim import SimModel, SimServer
from tests.dict_cache import DictCache

#: varied words: litellm stops a stream that repeats one chunk
ANSWER = " ".join(f"w{i}" for i in range(200))


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[SimServer]:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test-consumer")
    with SimServer(default=SimModel(answer=ANSWER)) as srv:
        yield srv


@pytest.mark.parametrize("transport", ["openai-http", "litellm"])
@pytest.mark.parametrize("on_piece", [3, "last"])
async def test_a_callback_that_raises_ends_the_call_naming_the_callback(
    server: SimServer, transport: str, on_piece: int | str
) -> None:
    """It was a `ProviderError: KeyError: 'boom'` on the direct path and a `MalformedReply`
    through litellm: the model's fault, retried where the stream had not started."""
    agent = build.agent(
        "openai/sim",
        api_base=server.base_url,
        transport=transport,
        max_tokens=300,
        pricing={"input_per_mtok": 1.0, "output_per_mtok": 2.0},
    )
    topology = build.single(agent)
    pieces: list[str] = []

    def on_token(piece: str) -> None:
        pieces.append(piece)
        if on_piece == "last" and "".join(pieces) == ANSWER:
            raise KeyError("boom")
        if len(pieces) == on_piece:
            raise KeyError("boom")

    async with moa.Runner() as runner:
        with pytest.raises(moa.UserError) as info:
            await runner.run(topology, "hi", on_token=on_token)
    e = info.value
    assert str(e) == "node `answer`: the on_token callback raised KeyError: 'boom'"
    assert isinstance(e.__cause__, KeyError)
    [rec] = e.calls
    assert rec.attempts == 1 and len(rec.attempt_log) == 1
    assert rec.error == f"UserError: {e}"
    # the model was answering when the callback stopped the call: its usage is unknown, and the
    # record says what it may cost
    assert rec.cost_usd_max is not None and rec.cost_usd_max > 0


async def test_a_callback_that_raises_on_a_reduce_output_is_named_too() -> None:
    """A reduce output streams its answer whole, outside any call: the callback's exception became
    a `ProviderError` (the model's fault, which a cascade escalates and pays a later stage for)."""
    from moa.testing import FunctionModel

    def on_token(_piece: str) -> None:
        raise KeyError("boom")

    topology = build.parallel(["fake/a", "fake/b"], reduce="first")
    async with moa.Runner(models={"fake/*": FunctionModel(lambda r: "x")}) as runner:
        with pytest.raises(moa.UserError) as info:
            await runner.run(topology, "hi", on_token=on_token)
    assert str(info.value) == "node `first`: the on_token callback raised KeyError: 'boom'"
    assert isinstance(info.value.__cause__, KeyError) and len(info.value.calls) == 2


async def test_a_callback_that_raises_on_a_replayed_reply_is_named_too() -> None:
    """A reply replayed from the call cache reaches the callback whole: its failure was a raw
    KeyError out of the run, outside moa's exception tree."""
    topology = build.single("fake/m")

    def on_token(piece: str) -> None:
        raise KeyError("boom")

    async with moa.Runner(models={"fake/m": FunctionModel(lambda r: "an answer")}, cache=DictCache()) as rt:
        await rt.run(topology, "hi")  # stores the reply
        with pytest.raises(moa.UserError) as info:
            await rt.run(topology, "hi", on_token=on_token)
    assert str(info.value) == "node `answer`: the on_token callback raised KeyError: 'boom'"
    assert isinstance(info.value.__cause__, KeyError)
