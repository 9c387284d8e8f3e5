"""Continuous batching for the embedded model: calls running at once decode in one llama.cpp batch.

One llama.cpp context holds ``n_seq_max`` sequences, each in its own KV cache stream of ``n_ctx``
cells (``kv_unified`` off): a sequence attends only to its own cells, and each call keeps the whole
window the agent's ``n_ctx`` promised. The price is memory: the KV cache is ``n_seq_max`` times that
of one sequence.

One engine thread runs steps. A step is one ``llama_decode``: either a chunk of one sequence's
prompt, or the next token of every generating sequence, each then sampled with its own sampler
chain. A call that arrives while others run takes a free sequence at the next step (continuous
batching); while every sequence is busy it waits in the queue, and that wait is the caller's
``queued_s``, not its latency. The thread exits when it has nothing to do and starts again with the
next call: with llama.cpp built with OpenMP, every thread that has decoded keeps a team of worker
threads, and an idle team left behind slows every other decode in the process (1.6x and more on 2
cores).

A call's tokens depend on its prompt and its sampler only, not on what runs beside it or on what
its sequence held before (tested at temperature 1 with fixed seeds). llama.cpp gives the same floats
for a token whichever sequences share its step and however a prompt is cut into chunks of two
tokens or more; a single query (a chunk of one prompt token) takes another attention path whose sums
differ enough to flip a sampled token. So prompts are decoded alone, never in a chunk of one token,
and a free sequence's cells are reused only for the prompt prefix a new call shares with the last
one's prompt (generated tokens were decoded one at a time). At temperature 0 the text equals
llama-cpp-python's ``create_chat_completion``: same chat template, same sampler chain (a greedy call,
neutral penalties and no logit bias, takes the largest logit itself: what that chain picks, without
copying the vocabulary into candidates each token), stop strings, ``max_tokens`` clipping (the reply
then ends with ``length``), finish reasons and usage (generated tokens, the end-of-generation token
not counted).
"""

from __future__ import annotations

import bisect
import codecs
import concurrent.futures
import contextlib
import ctypes
import math
import threading
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from moa.errors import ProviderError, RequestRejected, UserError
from moa.models import llama_log

__all__ = ["BatchEngine", "BatchJob", "BatchStats", "Generated", "Sampling", "batching_supported"]

#: tokens per ``llama_decode`` call (llama-cpp-python's ``n_batch``); longer prompts go in chunks
N_BATCH = 512
#: the history llama-cpp-python's repeat penalties look at (its ``last_n_tokens_size``)
PENALTY_LAST_N = 64
#: the candidates mirostat v1 estimates from, as in llama-cpp-python
MIROSTAT_M = 100
_PIECE_BYTES = 256

_FLOAT_PARAMS = frozenset(
    {
        "temperature",
        "top_p",
        "min_p",
        "typical_p",
        "repeat_penalty",
        "frequency_penalty",
        "presence_penalty",
        "mirostat_tau",
        "mirostat_eta",
    }
)
_INT_PARAMS = frozenset({"top_k", "mirostat_mode", "seed"})
#: accepted and ignored, as llama-cpp-python ignores them (tfs_z left llama.cpp)
_IGNORED = frozenset({"max_tokens", "stop", "tfs_z"})


def batching_supported(llama_cpp: Any) -> bool:
    """Whether this llama-cpp-python exposes what the engine calls (per-sequence memory, separate
    KV streams); older versions keep the serialised high-level path."""
    needed = (
        "llama_init_from_model",
        "llama_get_memory",
        "llama_memory_seq_rm",
        "llama_batch_init",
        "llama_decode",
        "llama_sampler_sample",
        "llama_sampler_init_logit_bias",
        "llama_model_get_vocab",
        "llama_vocab_is_eog",
        "llama_vocab_n_tokens",
        "llama_get_logits_ith",
    )
    if not all(hasattr(llama_cpp, n) for n in needed):
        return False
    fields = {f[0] for f in getattr(llama_cpp.llama_context_params, "_fields_", ())}
    penalties = getattr(llama_cpp, "llama_sampler_init_penalties", None)
    arity = len(getattr(penalties, "argtypes", None) or ())
    return {"n_seq_max", "kv_unified"} <= fields and arity in (4, 5)


@dataclass(frozen=True, slots=True)
class Generated:
    """What one generation produced."""

    text: str
    prompt_tokens: int
    #: tokens the model generated (the end-of-generation token not counted), as llama-cpp-python counts
    completion_tokens: int
    #: ``stop``, ``length``, or ``cancelled`` when the caller left
    finish_reason: str | None


@dataclass(frozen=True, slots=True)
class Sampling:
    """One call's sampler settings: llama-cpp-python's chat defaults, except temperature and top_p,
    which moa always sets (OpenAI's defaults, 1 and 1)."""

    temperature: float = 1.0
    top_p: float = 1.0
    seed: int = 0
    top_k: int = 40
    min_p: float = 0.05
    typical_p: float = 1.0
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    mirostat_mode: int = 0
    mirostat_tau: float = 5.0
    mirostat_eta: float = 0.1
    #: (token id, bias) pairs
    logit_bias: tuple[tuple[int, float], ...] = ()

    @property
    def greedy(self) -> bool:
        """Whether the chain llama-cpp-python builds for these settings picks the largest logit and
        nothing else: temperature 0 (the greedy sampler, before any mirostat) behind penalties
        that change nothing (llama.cpp skips neutral ones) and no logit bias."""
        return (
            self.temperature == 0
            and not self.logit_bias
            and self.repeat_penalty == 1
            and self.frequency_penalty == 0
            and self.presence_penalty == 0
        )

    @classmethod
    def from_kwargs(cls, kwargs: Mapping[str, Any], *, model: str, node: str | None = None) -> Sampling:
        """The settings from the generation kwargs of the high-level path; a value of the wrong type
        is refused in one line naming the param (llama.cpp would fail in ctypes, or worse)."""
        values: dict[str, Any] = {}
        for key, value in kwargs.items():
            if key in _IGNORED:
                continue
            if key == "logit_bias":
                values[key] = _logit_bias(value, model, node)
            elif key in _INT_PARAMS:
                integral = isinstance(value, int) or (isinstance(value, float) and value.is_integer())
                if isinstance(value, bool) or not integral:
                    raise RequestRejected(
                        f"params.{key} must be an integer, got {value!r}", model=model, node=node
                    )
                number = int(value)
                # ctypes keeps the low 32 bits without a word: top_k 2**32 + 1 would sample as top_k 1
                if key == "mirostat_mode" and number not in (0, 1, 2):
                    raise RequestRejected(
                        f"params.mirostat_mode must be 0, 1 or 2, got {value!r}", model=model, node=node
                    )
                if key != "seed" and not -(2**31) <= number < 2**31:
                    raise RequestRejected(
                        f"params.{key} must fit in 32 bits, got {value!r}", model=model, node=node
                    )
                values[key] = number & 0xFFFFFFFF if key == "seed" else number
            elif key in _FLOAT_PARAMS:
                if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                    raise RequestRejected(
                        f"params.{key} must be a number, got {value!r}", model=model, node=node
                    )
                values[key] = float(value)
            else:
                raise RequestRejected(f"params.{key} is not a sampling parameter", model=model, node=node)
        return cls(**values)


def _logit_bias(value: Any, model: str, node: str | None) -> tuple[tuple[int, float], ...]:
    bad = RequestRejected(
        f"params.logit_bias must map token ids to numbers, got {value!r}"[:200], model=model, node=node
    )
    if not isinstance(value, Mapping):
        raise bad
    out: list[tuple[int, float]] = []
    for k, v in value.items():
        try:
            token = int(k)
        except (TypeError, ValueError):
            raise bad from None
        # -inf is a ban on the token, as in OpenAI's API; NaN means nothing
        if isinstance(v, bool) or not isinstance(v, int | float) or v != v:
            raise bad
        out.append((token, float(v)))
    return tuple(out)


@dataclass(eq=False, slots=True)
class BatchJob:
    """One call handed to the engine. The callbacks run on the engine thread; one that raises
    cancels its job, never the engine."""

    messages: list[dict[str, str]]
    sampling: Sampling
    #: ``None`` or <= 0: what the window leaves after the prompt; larger values are clipped to it
    max_tokens: int | None
    stop: tuple[str, ...]
    model: str
    node: str | None = None
    #: set by the caller to stop the call between two tokens
    cancel: threading.Event = field(default_factory=threading.Event)
    #: called once the call holds a sequence: the end of its queueing, the start of its latency
    on_start: Callable[[], None] | None = None
    #: called with each piece of text, withholding what may be the start of a stop string
    emit: Callable[[str], None] | None = None
    future: concurrent.futures.Future[Generated] = field(default_factory=concurrent.futures.Future)


@dataclass(frozen=True, slots=True)
class BatchStats:
    """How the engine has batched so far (the benchmark and the tests read it)."""

    #: ``llama_decode`` calls
    steps: int
    #: the most sequences one call decoded
    widest: int
    #: sequences decoded, summed over calls (divided by ``steps``: the mean width)
    sequence_steps: int
    #: sequences running now
    running: int
    #: prompt tokens not decoded because a free sequence still held them from an earlier call
    reused_tokens: int


@dataclass(eq=False, slots=True)
class _Seq:
    job: BatchJob
    sid: int
    #: the llama.cpp sampler chain; ``None`` for a greedy call, which takes the largest logit itself
    sampler: Any
    prompt_tokens: int
    max_tokens: int
    stops: tuple[bytes, ...]
    #: the longest stop string's length, and the bytes a held-back stop prefix can end with
    longest: int
    stop_tails: frozenset[int]
    #: tokens to decode next: the rest of the prompt, then the last sampled token
    pending: list[int]
    #: the prompt and the tokens sampled so far; the first ``pos`` are in the sequence's cells
    history: list[int]
    pos: int = 0
    prompting: bool = True
    generated: int = 0
    text: bytearray = field(default_factory=bytearray)
    emitted: int = 0
    parts: list[str] = field(default_factory=list)
    decoder: codecs.IncrementalDecoder = field(
        default_factory=lambda: codecs.getincrementaldecoder("utf-8")(errors="ignore")
    )


Render = Callable[[list[dict[str, str]]], tuple[list[int], list[str]]]


class BatchEngine:
    """A llama.cpp context of ``n_seq_max`` sequences of ``n_ctx`` tokens and the thread that
    decodes them. ``render`` turns messages into prompt tokens and the template's stop strings."""

    def __init__(self, llama: Any, *, n_ctx: int, n_seq_max: int, render: Render, name: str) -> None:
        import llama_cpp
        import numpy  # a dependency of llama-cpp-python

        self._lib: Any = llama_cpp
        self._np: Any = numpy
        # the context reads the weights the Llama object owns: keep it alive as long as the context
        self._llama = llama
        self.n_ctx = n_ctx
        self.n_seq_max = n_seq_max
        self.name = name
        self._render = render
        params = type(llama.context_params).from_buffer_copy(llama.context_params)
        params.n_seq_max = n_seq_max
        params.n_ctx = n_ctx * n_seq_max
        # separate streams: in a unified cache every attention row also spans the other
        # sequences' (masked) cells, which changed greedy tokens against a lone sequence here
        params.kv_unified = False
        params.n_batch = params.n_ubatch = N_BATCH
        ctx = llama_cpp.llama_init_from_model(llama.model, params)
        if not ctx:
            raise UserError(
                f"model `{name}`: llama.cpp could not create a context for n_seq_max={n_seq_max} "
                f"sequences of n_ctx={n_ctx} tokens; lower n_seq_max or n_ctx"
            )
        made = int(llama_cpp.llama_n_ctx(ctx))
        if made < n_ctx * n_seq_max:
            # the u32 field wraps (2**31 x 2 is 0, which llama.cpp reads as "the training window"):
            # the engine would admit prompts the cells cannot hold, each then failing in llama_decode
            llama_cpp.llama_free(ctx)
            raise UserError(
                f"model `{name}`: llama.cpp made a context of {made} tokens, not the n_ctx={n_ctx} x "
                f"n_seq_max={n_seq_max} asked for; lower n_ctx or n_seq_max"
            )
        self._ctx = ctx
        self._mem = llama_cpp.llama_get_memory(ctx)
        self._n_batch = int(llama_cpp.llama_n_batch(ctx))
        self._batch = llama_cpp.llama_batch_init(self._n_batch, 0, 1)
        self._vocab = llama_cpp.llama_model_get_vocab(llama.model)
        self._n_vocab = int(llama_cpp.llama_vocab_n_tokens(self._vocab))
        self._piece = ctypes.create_string_buffer(_PIECE_BYTES)
        # one logits row, viewed in place by numpy for a greedy call's argmax
        self._row = ctypes.c_float * self._n_vocab
        # each token's bytes, ``None`` for an end-of-generation token: two ctypes calls per sampled
        # token otherwise, for an answer that never changes
        self._pieces: dict[int, bytes | None] = {}
        self._cond = threading.Condition()
        self._queue: deque[BatchJob] = deque()
        self._thread: threading.Thread | None = None
        self._closed = False
        # sorted, the lowest first: llama.cpp puts only consecutive sequence ids in one ubatch
        self._free = list(range(n_seq_max))
        # what a free sequence's cells still hold: a call with the same prompt prefix decodes only
        # the rest (as llama-cpp-python's prefix reuse does for a repeated prompt)
        self._kept: dict[int, list[int]] = {}
        self._running: dict[int, _Seq] = {}
        self._steps = self._widest = self._sequence_steps = self._reused_tokens = 0
        # prompt tokens decoded since the last generation step
        self._prompted = 0

    def __repr__(self) -> str:
        return f"BatchEngine({self.name!r}, n_ctx={self.n_ctx}, n_seq_max={self.n_seq_max})"

    @property
    def stats(self) -> BatchStats:
        return BatchStats(
            self._steps, self._widest, self._sequence_steps, len(self._running), self._reused_tokens
        )

    def submit(self, job: BatchJob) -> bool:
        """Queue a call; its future completes with a ``Generated`` or the error that stopped it.
        False when the engine was closed: nothing was queued."""
        with self._cond:
            if self._closed:
                return False
            self._queue.append(job)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="moa-llama-batch")
                self._thread.start()
            return True

    def close(self) -> None:
        """Let the calls already submitted finish, then free the context (blocking)."""
        with self._cond:
            self._closed = True
            while self._thread is not None:
                self._cond.wait()
            if self._ctx is None:
                return
            ctx, self._ctx = self._ctx, None
        self._lib.llama_batch_free(self._batch)
        self._lib.llama_free(ctx)

    # --- the engine thread -------------------------------------------------------------------

    @llama_log.quiet()
    def _run(self) -> None:
        try:
            while True:
                with self._cond:
                    # deciding to exit and leaving happen under one lock: a call submitted in
                    # between would otherwise find a thread that is about to leave
                    if not self._queue and not self._running:
                        self._thread = None
                        self._cond.notify_all()
                        return
                    taken = self._take()
                for job in taken:
                    self._admit(job)
                self._drop_cancelled()
                if self._running:
                    self._step()
        except BaseException as e:  # a bug here must fail the calls, not hang them
            self._fail_all(e)

    def _take(self) -> list[BatchJob]:
        taken: list[BatchJob] = []
        while self._queue and len(taken) < len(self._free):
            job = self._queue.popleft()
            if job.cancel.is_set() or job.future.cancelled():
                _resolve(job.future, Generated("", 0, 0, "cancelled"))
                continue
            taken.append(job)
        return taken

    def _admit(self, job: BatchJob) -> None:
        """Give a call a sequence, or refuse it before it holds one (it was never sent)."""
        try:
            tokens, template_stops = self._render(job.messages)
        except RequestRejected as e:  # already names the culprit
            e.node = e.node or job.node
            _fail(job, e)
            return
        except Exception as e:
            reason = f"{type(e).__name__}: {e}" if not str(e) else str(e)
            _fail(
                job,
                RequestRejected(f"the chat template refused the messages: {reason}"[:300], model=job.model),
            )
            return
        n = len(tokens)
        if n == 0:
            _fail(job, RequestRejected("the prompt renders to no tokens", model=job.model, node=job.node))
            return
        if n >= self.n_ctx:
            _fail(
                job,
                RequestRejected(
                    f"prompt is {n} tokens but the context window of {job.model} is {self.n_ctx} (n_ctx); "
                    "shorten it or raise n_ctx",
                    model=job.model,
                    node=job.node,
                ),
            )
            return
        bad = next((t for t, _ in job.sampling.logit_bias if not 0 <= t < self._n_vocab), None)
        if bad is not None:
            _fail(
                job,
                RequestRejected(
                    f"params.logit_bias names token {bad}, outside the vocabulary of {self._n_vocab}",
                    model=job.model,
                    node=job.node,
                ),
            )
            return
        room = self.n_ctx - n
        limit = job.max_tokens
        max_tokens = room if limit is None or limit <= 0 else min(limit, room)
        stops = tuple(s.encode("utf-8") for s in (*job.stop, *template_stops) if s)
        sid, keep = self._slot(tokens)
        seq = _Seq(
            job,
            sid,
            None if job.sampling.greedy else self._sampler(job.sampling),
            n,
            max_tokens,
            stops,
            max((len(s) for s in stops), default=0),
            frozenset(b for s in stops for b in s[:-1]),
            tokens[keep:],
            list(tokens),
            keep,
        )
        self._running[sid] = seq
        if job.on_start is not None:
            self._call(seq, job.on_start)

    def _slot(self, tokens: list[int]) -> tuple[int, int]:
        """A free sequence for a prompt, and how many of its first tokens the sequence's cells
        already hold: the longest kept prefix wins, else the lowest id."""
        best, keep = self._free[0], 0
        for sid in self._free:
            common = 0
            for a, b in zip(self._kept.get(sid, ()), tokens, strict=False):
                if a != b:
                    break
                common += 1
            if common > keep:
                best, keep = sid, common
        self._free.remove(best)
        # at least the last two prompt tokens are decoded again: the last one's logits give the
        # first sample, and a chunk of one token takes llama.cpp's single-query attention, whose
        # float sums differ from a whole prompt's enough to change a sampled token
        keep = max(0, min(keep, len(tokens) - 2))
        self._kept.pop(best, None)
        if not self._lib.llama_memory_seq_rm(self._mem, best, keep, -1):
            # a memory that cannot drop part of a sequence (recurrent models) starts it afresh
            self._lib.llama_memory_seq_rm(self._mem, best, -1, -1)
            keep = 0
        self._reused_tokens += keep
        return best, keep

    def _sampler(self, s: Sampling) -> Any:
        """The chain llama-cpp-python's ``Llama._init_sampler`` builds, in its order."""
        lib = self._lib
        chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())

        def add(sampler: Any) -> None:
            lib.llama_sampler_chain_add(chain, sampler)

        if s.logit_bias:
            biases = (lib.llama_logit_bias * len(s.logit_bias))(*s.logit_bias)
            add(lib.llama_sampler_init_logit_bias(self._n_vocab, len(s.logit_bias), biases))
        penalties: tuple[float, ...] = (
            PENALTY_LAST_N,
            s.repeat_penalty,
            s.frequency_penalty,
            s.presence_penalty,
        )
        if len(lib.llama_sampler_init_penalties.argtypes) == 5:  # builds differ: some take n_vocab first
            penalties = (self._n_vocab, *penalties)
        add(lib.llama_sampler_init_penalties(*penalties))
        if s.temperature < 0:
            add(lib.llama_sampler_init_dist(s.seed))
        elif s.temperature == 0:
            add(lib.llama_sampler_init_greedy())
        elif s.mirostat_mode == 1:
            add(
                lib.llama_sampler_init_mirostat(
                    self._n_vocab, s.seed, s.mirostat_tau, s.mirostat_eta, MIROSTAT_M
                )
            )
        elif s.mirostat_mode == 2:
            add(lib.llama_sampler_init_mirostat_v2(s.seed, s.mirostat_tau, s.mirostat_eta))
        else:
            add(lib.llama_sampler_init_top_k(s.top_k))
            add(lib.llama_sampler_init_typical(s.typical_p, 1))
            add(lib.llama_sampler_init_top_p(s.top_p, 1))
            add(lib.llama_sampler_init_min_p(s.min_p, 1))
            add(lib.llama_sampler_init_temp(s.temperature))
            add(lib.llama_sampler_init_dist(s.seed))
        return chain

    def _drop_cancelled(self) -> None:
        for seq in list(self._running.values()):
            if seq.job.cancel.is_set() or seq.job.future.cancelled():
                self._finish(seq, "cancelled")

    def _step(self) -> None:
        """One ``llama_decode``: a chunk of one sequence's prompt, or the next token of every
        generating sequence. Prompts go first (the samples of a node start together) until a batch
        worth of prompt tokens has passed; then the running sequences get a step, so a long prompt
        that arrives delays them by one chunk at a time."""
        prompting = [s for s in self._running.values() if s.prompting]
        generating = [s for s in self._running.values() if not s.prompting]
        if prompting and (not generating or self._prompted < self._n_batch):
            seq = min(prompting, key=lambda s: s.sid)
            take = _chunk(len(seq.pending), self._n_batch)
            self._prompted += take
            self._decode([(seq, take)])
        else:
            self._prompted = 0
            # in id order: llama.cpp puts only ascending consecutive sequence ids in one ubatch
            self._decode([(seq, 1) for seq in sorted(generating, key=lambda s: s.sid)])

    def _decode(self, work: list[tuple[_Seq, int]]) -> None:
        """Decode the next ``take`` pending tokens of each sequence, then sample the sequences that
        have no pending token left."""
        batch = self._batch
        n = 0
        sampled: list[tuple[_Seq, int]] = []
        for seq, take in work:
            for j in range(take):
                batch.token[n] = seq.pending[j]
                batch.pos[n] = seq.pos + j
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = seq.sid
                batch.logits[n] = 0
                n += 1
            del seq.pending[:take]
            seq.pos += take
            if not seq.pending:
                seq.prompting = False
                batch.logits[n - 1] = 1
                sampled.append((seq, n - 1))
        batch.n_tokens = n
        rc = self._lib.llama_decode(self._ctx, batch)
        self._steps += 1
        self._sequence_steps += len(work)
        self._widest = max(self._widest, len(work))
        if rc != 0:
            for seq, _ in work:
                self._finish(
                    seq, None, ProviderError(f"llama.cpp could not decode (llama_decode returned {rc})")
                )
            return
        for seq, idx in sampled:
            if seq.sampler is None:
                # what the chain's greedy sampler picks (the first of equal largest logits), without
                # copying the whole vocabulary into candidates first: a tenth of the time
                row = self._lib.llama_get_logits_ith(self._ctx, idx)
                logits = self._np.frombuffer(self._row.from_address(ctypes.addressof(row.contents)), "f4")
                token = int(logits.argmax())
            else:
                token = int(self._lib.llama_sampler_sample(seq.sampler, self._ctx, idx))
            self._advance(seq, token)

    def _advance(self, seq: _Seq, token: int) -> None:
        """Take one sampled token; the checks in llama-cpp-python's order: end of generation, stop
        strings, then max_tokens."""
        try:
            piece = self._pieces[token]
        except KeyError:
            piece = self._pieces[token] = self._token_bytes(token)
        if piece is None:
            self._finish(seq, "stop")
            return
        seq.generated += 1
        seq.pending.append(token)
        seq.history.append(token)
        before = len(seq.text)
        seq.text += piece
        if seq.stops:
            start = max(0, before - seq.longest + 1)
            hits = [i for i in (seq.text.find(s, start) for s in seq.stops) if i >= 0]
            if hits:
                del seq.text[min(hits) :]
                self._finish(seq, "stop")
                return
        if seq.generated >= seq.max_tokens:
            self._finish(seq, "length")
            return
        ready = len(seq.text)
        if seq.text and seq.text[-1] in seq.stop_tails:
            ready -= _held_back(seq.text, seq.stops)
        if ready > seq.emitted:
            text = seq.decoder.decode(bytes(seq.text[seq.emitted : ready]))
            seq.emitted = ready
            if text:
                self._deliver(seq, text)

    def _token_bytes(self, token: int) -> bytes | None:
        """A token's bytes as llama-cpp-python detokenizes it; ``None`` for an end of generation."""
        if self._lib.llama_vocab_is_eog(self._vocab, token):
            return None
        n = self._lib.llama_token_to_piece(self._vocab, token, self._piece, _PIECE_BYTES, 0, False)
        if n < 0:  # a piece longer than the buffer: llama.cpp says how long
            buf = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._vocab, token, buf, -n, 0, False)
            return buf.raw[:n]
        return self._piece.raw[:n]

    def _finish(self, seq: _Seq, reason: str | None, error: BaseException | None = None) -> None:
        """Free the sequence (its sampler, its id; its cells stay for a later prompt with the same
        prefix) and complete the call."""
        del self._running[seq.sid]
        if seq.sampler is not None:
            self._lib.llama_sampler_free(seq.sampler)
        bisect.insort(self._free, seq.sid)
        if error is not None:
            self._lib.llama_memory_seq_rm(self._mem, seq.sid, -1, -1)
            _fail(seq.job, error)
            return
        # only prompt cells: generated tokens were decoded one at a time (single-query attention)
        # and differ slightly from what decoding them as part of a later prompt would give
        self._kept[seq.sid] = seq.history[: min(seq.pos, seq.prompt_tokens)]
        if reason != "cancelled":
            rest = seq.decoder.decode(bytes(seq.text[seq.emitted :]), final=True)
            if rest:
                self._deliver(seq, rest)
        _resolve(seq.job.future, Generated("".join(seq.parts), seq.prompt_tokens, seq.generated, reason))

    def _deliver(self, seq: _Seq, piece: str) -> None:
        seq.parts.append(piece)
        if seq.job.emit is not None and not seq.job.cancel.is_set():
            self._call(seq, seq.job.emit, piece)

    def _call(self, seq: _Seq, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception:
            # the caller can no longer take what it asked for (its loop closed): stop its sequence
            seq.job.cancel.set()

    def _fail_all(self, error: BaseException) -> None:
        wrapped = ProviderError(f"the embedded model's batch engine failed: {type(error).__name__}: {error}")
        running, self._running = list(self._running.values()), {}
        for seq in running:
            with contextlib.suppress(Exception):
                self._lib.llama_memory_seq_rm(self._mem, seq.sid, -1, -1)
                if seq.sampler is not None:
                    self._lib.llama_sampler_free(seq.sampler)
            _fail(seq.job, wrapped)
        self._free = list(range(self.n_seq_max))
        self._kept = {}
        with contextlib.suppress(Exception):
            self._lib.llama_memory_clear(self._mem, True)
        with self._cond:
            queued, self._queue = list(self._queue), deque()
            self._thread = None
            self._cond.notify_all()
        for job in queued:
            _fail(job, wrapped)


def _chunk(pending: int, n_batch: int) -> int:
    """How many prompt tokens to decode in one call: up to ``n_batch``, never leaving a last chunk
    of one token (single-query attention would give it slightly different floats)."""
    if pending <= n_batch:
        return pending
    return n_batch - 1 if pending == n_batch + 1 else n_batch


def _held_back(text: bytearray, stops: tuple[bytes, ...]) -> int:
    """How many trailing bytes may be the start of a stop string: not shown until they are not."""
    hold = 0
    for s in stops:
        for i in range(min(len(s) - 1, len(text)), hold, -1):
            if text.endswith(s[:i]):
                hold = i
                break
    return hold


def _resolve(future: concurrent.futures.Future[Generated], value: Generated) -> None:
    with contextlib.suppress(concurrent.futures.InvalidStateError):  # the caller cancelled it
        future.set_result(value)


def _fail(job: BatchJob, error: BaseException) -> None:
    if isinstance(error, RequestRejected | ProviderError) and error.model is None:
        error.model = job.model
    with contextlib.suppress(concurrent.futures.InvalidStateError):
        job.future.set_exception(error)
