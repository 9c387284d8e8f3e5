"""The embedded llama.cpp model: loads the real bundled SmolLM2-135M GGUF and generates a few tokens."""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'moa-sdk[local]')")

from moa.errors import RequestRejected, TimedOut, UserError
from moa.models.base import Model, ModelRequest
from moa.models.local import LocalModel, default_n_threads, resolve_local_model

pytestmark = pytest.mark.local_model

MODEL = "local/smollm2-135m"
REPO = Path(__file__).resolve().parents[1]


def ask(content: str, **kw: object) -> ModelRequest:
    fields: dict[str, object] = {"temperature": 0.0, "max_tokens": 8}
    fields.update(kw)
    return ModelRequest(model=MODEL, messages=[{"role": "user", "content": content}], **fields)  # type: ignore[arg-type]


@pytest.fixture
def model() -> LocalModel:
    return resolve_local_model(MODEL, {})


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, check=False
    )


async def test_bundled_model_generates_with_real_token_counts(model: LocalModel) -> None:
    """The bundled model answers, and usage holds llama.cpp's real prompt and completion counts."""
    reply = await model.complete(ask("What is 2+2?"))
    assert isinstance(model, Model) and model.local
    assert reply.text.strip()
    assert reply.usage.prompt_tokens > 5
    assert 0 < reply.usage.completion_tokens <= 8
    assert reply.model == MODEL


async def test_streaming_calls_on_token_on_the_loop_thread(model: LocalModel) -> None:
    """With on_token, each delta arrives on the event loop's thread and they add up to the text."""
    seen: list[tuple[str, threading.Thread]] = []
    reply = await model.complete(
        ask("Name a fruit.", max_tokens=12), on_token=lambda d: seen.append((d, threading.current_thread()))
    )
    assert len(seen) >= 2
    assert all(t is threading.current_thread() for _, t in seen)
    assert "".join(d for d, _ in seen) == reply.text


async def test_concurrent_calls_do_not_interleave_with_n_seq_max_one() -> None:
    """With n_seq_max 1 two concurrent calls on one shared model run one after the other, each whole."""
    model = resolve_local_model(MODEL, {"n_seq_max": 1})
    order: list[int] = []
    replies = await asyncio.gather(
        *(
            model.complete(ask(q, max_tokens=10), on_token=lambda _d, i=i: order.append(i))
            for i, q in enumerate(["Name a color.", "Name an animal."])
        )
    )
    assert all(r.text for r in replies)
    # one block of call 0's tokens and one of call 1's, never mixed
    assert sum(1 for a, b in itertools.pairwise(order) if a != b) == 1


async def test_same_file_resolves_to_one_shared_instance() -> None:
    """Two agents naming the bundled model (by alias or by path) share one loaded instance."""
    first = resolve_local_model(MODEL, {"temperature_is_not_local": 1})
    by_path = resolve_local_model("local/whatever", {"model_path": str(first.path)})
    assert resolve_local_model(MODEL, {"seed": 3}) is first
    assert by_path is first
    assert resolve_local_model(MODEL, {"n_ctx": 512}) is not first


async def test_fresh_seed_per_call_and_fixed_seed_repeats(model: LocalModel) -> None:
    """Sampled calls differ unless params fix the seed, which is not passed on as a generation kwarg."""
    req = ask("Write a random word.", temperature=1.0, max_tokens=12)
    free = {(await model.complete(req)).text for _ in range(3)}
    seeded = ask("Write a random word.", temperature=1.0, max_tokens=12, params={"seed": 7, "n_ctx": 2048})
    fixed = {(await model.complete(seeded)).text for _ in range(2)}
    assert len(free) > 1
    assert len(fixed) == 1


def test_missing_extra_is_raised_by_resolve() -> None:
    """Without llama_cpp, resolving a local model raises MissingExtra naming the install command."""
    out = run_python(
        "import sys; sys.modules['llama_cpp'] = None\n"
        "from moa.models.local import resolve_local_model\n"
        "from moa.errors import MissingExtra\n"
        "try:\n    resolve_local_model('local/smollm2-135m', {})\n"
        "except MissingExtra as e:\n    print(e)\n"
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    assert "pip install 'moa-sdk[local]'" in lines[0] and "CMAKE_ARGS" in lines[0]


def test_missing_extra_is_raised_by_the_first_call() -> None:
    """Without llama_cpp, a LocalModel made directly raises MissingExtra on its first call."""
    out = run_python(
        "import sys, asyncio; sys.modules['llama_cpp'] = None\n"
        "from moa.models.local import LocalModel\n"
        "from moa.models.base import ModelRequest\n"
        "from moa.errors import MissingExtra\n"
        "m = LocalModel('/nonexistent.gguf')\n"
        "try:\n    asyncio.run(m.complete(ModelRequest(model='local/x', messages=[{'role': 'user', 'content': 'hi'}])))\n"
        "except MissingExtra as e:\n    print(e)\n"
    )
    assert out.returncode == 0, out.stderr
    assert "pip install 'moa-sdk[local]'" in out.stdout and len(out.stdout.strip().splitlines()) == 1


def test_load_and_generate_print_nothing() -> None:
    """Loading the model and generating write nothing to stdout or stderr (llama.cpp logs muted)."""
    out = run_python(
        "import asyncio\n"
        "from moa.models.local import resolve_local_model\n"
        "from moa.models.base import ModelRequest\n"
        "m = resolve_local_model('local/smollm2-135m', {})\n"
        "r = asyncio.run(m.complete(ModelRequest(model='local/smollm2-135m',"
        " messages=[{'role': 'user', 'content': 'hi'}], max_tokens=4)))\n"
        "assert r.usage.completion_tokens > 0\n"
        "import logging\n"
        "# never configured before: left at llama-cpp-python's ERROR, not NOTSET (which prints all)\n"
        "assert logging.getLogger('llama-cpp-python').level == logging.ERROR\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "" and out.stderr == ""


def test_models_loading_at_once_leave_stdout_and_stderr_alone() -> None:
    """Three shapes of the model loading in three threads at once: the process's stdout and
    stderr still reach their pipes afterwards (llama-cpp-python swaps fds 1 and 2 around a load),
    and nothing of llama.cpp's reaches stderr. Each n_ctx here is one llama.cpp warns about when
    it creates the batch context (not a multiple of 256 per sequence), which another thread's
    load used to let through."""
    out = run_python(
        "import asyncio, sys\n"
        "from moa.models.local import resolve_local_model\n"
        "from moa.models.base import ModelRequest\n"
        "models = [resolve_local_model('local/smollm2-135m', {'n_ctx': n}) for n in (384, 640, 896)]\n"
        "req = ModelRequest(model='local/smollm2-135m', messages=[{'role': 'user', 'content': 'hi'}],"
        " max_tokens=2)\n"
        "async def main():\n"
        "    await asyncio.gather(*(m.complete(req) for m in models))\n"
        "asyncio.run(main())\n"
        "print('out-still-here', flush=True)\n"
        "print('err-still-here', file=sys.stderr, flush=True)\n"
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "out-still-here\n"
    assert out.stderr == "err-still-here\n"


async def test_batch_context_is_created_under_the_load_lock_in_a_quiet_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The batch context is created inside the load's lock, and it and every decode step run in
    threads whose llama.cpp lines are dropped: no warning of theirs can reach stderr whatever
    another thread's open does to the llama-cpp-python logger meanwhile. Checked every time,
    unlike the subprocess test above."""
    import logging

    import moa.models.local as local_mod
    from moa.models import llama_log

    seen: list[tuple[bool, bool]] = []
    steps_quiet: set[bool] = set()

    class Watched(local_mod.BatchEngine):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            seen.append((local_mod._loading().locked(), llama_log.is_quiet()))
            super().__init__(*args, **kwargs)

        def _step(self) -> None:  # on the engine thread: every decode is quiet too
            steps_quiet.add(llama_log.is_quiet())
            super()._step()

    monkeypatch.setattr(local_mod, "BatchEngine", Watched)
    logger = logging.getLogger(llama_log.LOGGER)
    monkeypatch.setattr(logger, "level", logging.WARNING)  # as a user's configuration might set it
    # a shape no other test loads, so this load happens here
    fresh = LocalModel(resolve_local_model(MODEL, {}).path, n_ctx=320, name=MODEL)
    try:
        assert (await fresh.complete(ask("hi", max_tokens=1))).usage.completion_tokens == 1
    finally:
        await fresh.aclose()
    assert seen == [(True, True)] and steps_quiet == {True}
    # moa's open reset the level to ERROR (llama-cpp-python's verbose=False) and put it back
    assert logger.level == logging.WARNING
    assert not llama_log.is_quiet()


def test_a_users_verbose_model_keeps_its_log_and_moa_adds_nothing_to_it() -> None:
    """A user's own ``Llama(verbose=True)`` in the same process: moa loading and generating with it
    around prints nothing, and the user's model still prints its timings afterwards (moa used to
    raise the llama-cpp-python logger's level for the whole process, silencing it)."""
    out = run_python(
        "import asyncio, sys, llama_cpp\n"
        "from moa.models.local import resolve_local_model\n"
        "from moa.models.base import ModelRequest\n"
        "req = ModelRequest(model='local/smollm2-135m', messages=[{'role': 'user', 'content': 'hi'}],"
        " max_tokens=2)\n"
        "def mark(s):\n"
        "    print(s, file=sys.stderr, flush=True)\n"
        "first = resolve_local_model('local/smollm2-135m', {'n_ctx': 384})\n"
        "asyncio.run(first.complete(req))\n"
        "mark('@A')\n"
        "user = llama_cpp.Llama(model_path=str(first.path), n_ctx=256, verbose=True)\n"
        "mark('@B')\n"
        "second = resolve_local_model('local/smollm2-135m', {'n_ctx': 640})\n"
        "asyncio.run(second.complete(req))\n"
        "asyncio.run(first.complete(req))\n"
        "mark('@C')\n"
        "user.create_completion('hi', max_tokens=1)\n"
        "mark('@D')\n"
    )
    assert out.returncode == 0, out.stderr[-2000:]
    err = out.stderr
    before_a, rest = err.split("@A\n")
    _user_open, rest = rest.split("@B\n")
    moa_again, rest = rest.split("@C\n")
    user_generates, _ = rest.split("@D\n")
    assert before_a == "" and moa_again == "", err[-2000:]
    assert "llama_perf_context_print" in user_generates, err[-2000:]


def test_nonexistent_path_is_a_user_error(tmp_path: Path) -> None:
    """A GGUF path that does not exist raises UserError naming the path."""
    missing = tmp_path / "nope.gguf"
    with pytest.raises(UserError, match=r"nope\.gguf does not exist"):
        resolve_local_model(f"local/{missing}", {})


def test_non_gguf_file_is_a_user_error(tmp_path: Path) -> None:
    """A file without the GGUF magic is refused before llama.cpp sees it."""
    fake = tmp_path / "fake.gguf"
    fake.write_bytes(b"PK\x03\x04 not a model")
    with pytest.raises(UserError, match="not a GGUF file"):
        resolve_local_model("local/x", {"model_path": str(fake)})


async def test_corrupt_gguf_is_a_user_error_on_first_call(tmp_path: Path, model: LocalModel) -> None:
    """A file with the GGUF magic that llama.cpp cannot load raises UserError, not a crash."""
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(model.path.read_bytes()[:4000])
    local = resolve_local_model(f"local/{broken}", {})
    with pytest.raises(UserError, match=r"cannot load .*broken\.gguf"):
        await local.complete(ask("hi"))


async def test_a_gguf_llama_cpp_refuses_is_one_line_with_its_reason(
    tmp_path: Path, model: LocalModel
) -> None:
    """A GGUF of an architecture llama.cpp does not know, or cut short, names the file and the
    reason llama.cpp logged (moa keeps its log quiet), not only "Failed to load model"."""
    other = tmp_path / "other.gguf"
    shutil.copyfile(model.path, other)
    with other.open("r+b") as f:
        head = f.read(1 << 16)
        at = head.index(b"llama", head.index(b"general.architecture"))
        f.seek(at)
        f.write(b"lxama")
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(model.path.read_bytes()[: model.path.stat().st_size // 2])
    for path, reason in (
        (other, r"unknown model architecture: 'lxama'"),
        (cut, r"not within the file bounds"),
    ):
        local = resolve_local_model(f"local/{path}", {})
        with pytest.raises(UserError, match=rf"cannot load .*{path.name}: .*{reason}") as info:
            await local.complete(ask("hi"))
        assert "\n" not in str(info.value)


async def test_a_gguf_without_a_chat_template_counts_the_prompt_llama_cpp_decodes(
    tmp_path: Path, model: LocalModel
) -> None:
    """A GGUF without a chat template runs llama-cpp-python's built-in format (``llama-2``) on the
    serialised path; its prompt_tokens are the tokens of that format, as llama-cpp-python's own usage
    says, not a count of a format moa made up."""
    from llama_cpp import Llama

    bare = tmp_path / "bare.gguf"
    shutil.copyfile(model.path, bare)
    with bare.open("r+b") as f:
        head = f.read(1 << 24)
        f.seek(head.index(b"tokenizer.chat_template") + len("tokenizer.chat_templat"))
        f.write(b"X")
    local = resolve_local_model(f"local/{bare}", {"n_ctx": 256})
    request = ask("Count from one to ten in words.", max_tokens=4)
    reply = await local.complete(request)
    assert local.batch_stats is None
    reference = Llama(model_path=str(bare), n_ctx=256, verbose=False)
    try:
        usage = reference.create_chat_completion(
            messages=list(request.messages), max_tokens=4, temperature=0
        )["usage"]  # type: ignore[index]
    finally:
        reference.close()
    assert reply.usage.prompt_tokens == usage["prompt_tokens"]
    await local.aclose()


def test_unknown_alias_lists_the_known_ones() -> None:
    """An unknown local/<name> that is not a path raises UserError listing the aliases."""
    with pytest.raises(UserError, match="local/smollm2-135m") as info:
        resolve_local_model("local/gpt-5-tiny", {})
    assert "\n" not in str(info.value)


async def test_overlong_prompt_is_rejected_not_retryable() -> None:
    """A prompt longer than n_ctx raises RequestRejected with both sizes; max_tokens is clipped."""
    small = resolve_local_model(MODEL, {"n_ctx": 64})
    with pytest.raises(
        RequestRejected, match=r"prompt is \d+ tokens but the context window .* is 64 \(n_ctx\)"
    ) as info:
        await small.complete(ask("word " * 200))
    assert not info.value.retryable
    fits = await small.complete(ask("Hi", max_tokens=500))
    assert fits.usage.prompt_tokens + fits.usage.completion_tokens <= 64


async def test_cancellation_stops_and_releases_the_model(model: LocalModel) -> None:
    """A call cancelled mid-generation leaves the batch (no decode step carries it any more) and a
    second call afterwards is decoded alone. Checked by the engine's step counts, not by the clock:
    beside busy processes ggml's threads make every step many times slower."""
    started = asyncio.Event()
    count: list[str] = []

    def on_token(d: str) -> None:
        count.append(d)
        started.set()

    task = asyncio.create_task(
        model.complete(ask("Write a long story about a dragon.", max_tokens=1500), on_token)
    )
    await asyncio.wait_for(started.wait(), 120)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(1200):  # a hang guard, not a speed check
        stats = model.batch_stats
        if stats is not None and stats.running == 0:
            break
        await asyncio.sleep(0.1)
    else:
        pytest.fail("the cancelled call was still decoding 120 s after its cancellation")
    before = stats
    reply = await asyncio.wait_for(model.complete(ask("Say yes.", max_tokens=4)), 300)
    after = model.batch_stats
    assert reply.text and after is not None
    # every step since decoded the second call alone: the cancelled one never came back
    assert after.steps > before.steps
    assert after.sequence_steps - before.sequence_steps == after.steps - before.steps
    assert len(count) < 1500


async def test_timeout_raises_and_frees_the_model(model: LocalModel) -> None:
    """A call past its timeout_s raises moa's TimedOut, and the model still answers afterwards."""
    with pytest.raises(TimedOut):
        await model.complete(ask("Write a long story about a castle.", max_tokens=1500, timeout_s=0.05))
    assert (await model.complete(ask("Say yes.", max_tokens=4))).text


async def test_unknown_param_is_rejected(model: LocalModel) -> None:
    """A params key llama.cpp does not take is refused in one line, not passed through."""
    with pytest.raises(RequestRejected, match=r"params\.frobnicate"):
        await model.complete(ask("hi", params={"frobnicate": 1}))


@pytest.mark.parametrize(
    ("messages", "kw", "culprit"),
    [
        ([], {}, r"messages is empty"),
        ([{"role": "user"}], {}, r"messages\[0\] has no content"),
        ([{"role": "user", "content": None}], {}, r"messages\[0\]\.content must be a string, got None"),
        (
            [
                {"role": "system", "content": "x"},
                {"role": "user", "content": [{"type": "text", "text": "hi"}]},
            ],
            {},
            r"messages\[1\]\.content must be a string",
        ),
        (
            [{"role": "user", "content": "hi \ud800"}],
            {},
            r"messages\[0\]\.content is not valid text: '\\ud800'",
        ),
        ([{"role": "user", "content": "hi"}], {"max_tokens": 0}, r"max_tokens must be at least 1, got 0"),
        (
            [{"role": "user", "content": "hi"}],
            {"params": {"seed": "abc"}},
            r"params\.seed must be an integer",
        ),
        ([{"role": "user", "content": "hi"}], {"params": {"seed": 1.5}}, r"params\.seed must be an integer"),
    ],
)
async def test_hostile_messages_and_params_are_one_non_retryable_line(
    model: LocalModel, messages: list[Any], kw: dict[str, Any], culprit: str
) -> None:
    """Messages the chat template cannot render, max_tokens 0 (llama.cpp's "whole window") and a
    seed that is not an integer are refused naming the culprit, not retried as a backend crash
    (KeyError, UnicodeEncodeError, int("abc")) or answered with noise."""
    fields: dict[str, Any] = {"temperature": 0.0, "max_tokens": 8, **kw}
    with pytest.raises(RequestRejected, match=culprit) as info:
        await model.complete(ModelRequest(model=MODEL, messages=messages, node="n1", **fields))
    assert not info.value.retryable and "\n" not in str(info.value) and "`n1`" in str(info.value)


def test_local_self_moa_preset_end_to_end() -> None:
    """The local-self-moa preset runs: 3 samples and an aggregation, all local, with real tokens."""
    import moa

    result = moa.load("local-self-moa").run_sync("What is 2+2? Answer with one number.")
    assert len(result.calls) == 4
    assert all(
        c.ok and c.local and c.usage.prompt_tokens > 0 and c.usage.completion_tokens > 0 for c in result.calls
    )
    assert result.cost_usd == 0
    assert result.cost_note and "local" in result.cost_note.lower()
    assert result.output.strip()


def _sysfs(root: Path, core_of: dict[int, int]) -> Path:
    for cpu, core in core_of.items():
        topology = root / f"cpu{cpu}" / "topology"
        topology.mkdir(parents=True)
        (topology / "physical_package_id").write_text("0\n")
        (topology / "core_id").write_text(f"{core}\n")
    return root


def test_default_threads_are_the_physical_cores_the_process_may_use(tmp_path: Path) -> None:
    """One llama.cpp thread per physical core, as llama.cpp defaults: hyper-threads of one core count
    once; without a readable topology, every core the process may use."""
    cpus = sorted(os.sched_getaffinity(0))
    siblings = _sysfs(tmp_path / "ht", {cpu: cpu // 2 for cpu in cpus})
    assert default_n_threads(siblings) == len({cpu // 2 for cpu in cpus})
    distinct = _sysfs(tmp_path / "cores", {cpu: cpu for cpu in cpus})
    assert default_n_threads(distinct) == len(cpus)
    assert default_n_threads(tmp_path / "none") == len(cpus)
    # an agent that names no n_threads gets it
    assert resolve_local_model("local/smollm2-135m", {}).n_threads == default_n_threads()


@pytest.mark.parametrize(
    ("env", "spins"),
    [({}, "2000"), ({"GOMP_SPINCOUNT": "123"}, "123"), ({"OMP_WAIT_POLICY": "ACTIVE"}, None)],
    ids=["default", "the-users-spin-count", "the-users-wait-policy"],
)
def test_libgomp_is_told_to_spin_briefly_unless_the_user_chose(
    env: dict[str, str], spins: str | None
) -> None:
    """Loading llama.cpp sets ``GOMP_SPINCOUNT`` first (libgomp reads it once, as the library loads
    it): beside busy processes, ggml's threads spinning 300,000 times at each barrier held the cores
    their partners waited for, and a 49-token reply took from 27 s to minutes. A user's own
    OpenMP setting is kept."""
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    code = (
        "import os; from moa.models.gguf import import_llama_cpp; import_llama_cpp(); "
        "print(os.environ.get('GOMP_SPINCOUNT'))"
    )
    p = subprocess.run(
        [sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True, timeout=120
    )
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.strip() == str(spins)


def test_a_loop_that_waited_for_the_model_is_not_kept_after_it_ends() -> None:
    """Each loop's lock on the model was kept in a weak-keyed map, but a contended asyncio.Lock holds
    its loop: every `asyncio.run` in which two closes (two runners sharing the model) met stayed alive."""
    import gc
    import weakref

    model = LocalModel(resolve_local_model(MODEL, {}).path)  # its own instance: closed below
    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def use_then_close_twice() -> None:
        loops.append(weakref.ref(asyncio.get_running_loop()))
        assert (await model.complete(ask("Say hi.", max_tokens=2))).text is not None
        await asyncio.gather(model.aclose(), model.aclose())

    for _ in range(2):
        asyncio.run(use_then_close_twice())
    gc.collect()
    assert [r() is None for r in loops] == [True, True]
