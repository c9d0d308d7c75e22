"""Answer jobs: retrieval-augmented generation with citations that point at the evidence.

The shape is OpenAI's Responses API with its ``file_search`` tool, so the official SDK asks
unchanged::

    client.responses.create(
        model="smollm2-135m-instruct",
        input="How long is the warranty?",
        tools=[{"type": "file_search", "vector_store_ids": [store.id],
                "max_num_results": 8, "filters": {...}}],
    )

(``POST /v1/responses``, or ``POST /v1/jobs`` with ``url: /v1/responses``). The request
becomes a job of the internal model :data:`~genspool.config.ANSWER_MODEL`, run by
:class:`AnswerProvider` in a worker:

1. **retrieve**: the question is searched in each store (exact, the filter applied before
   ranking: :class:`~genspool.rag.search.Searcher`), the hits merged best first;
2. **fit**: sources are placed in the prompt, best first, as many as the target model's
   context window holds beside the question, the conversation and ``max_output_tokens``,
   counted by the model's own tokenizer;
3. **generate**: one child job of the target model (its limits, batching, retries and breaker
   apply), whose idempotency key is the prompt's hash, so a retried answer job reuses it;
4. **cite**: each ``[n]`` marker of the answer becomes a ``file_citation`` annotation of the
   ``n``-th source placed (file id, filename, the chunk's character offsets in the document,
   page, score, and the marker's ``index`` in the text). A marker naming a source that was not
   given is dropped from the text and reported in ``genspool.dropped_citations``.

The answer is a ``response`` object: a ``file_search_call`` item (its ``results`` when
``include`` asks for ``file_search_call.results``) and a ``message`` item whose
``output_text`` carries the annotations; ``response.output_text`` in the SDK reads it.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from genspool.core.filters import parse_filter
from genspool.core.job import Job, JobStatus
from genspool.core.models import BRANCH, PARENT, SCOPES, Models
from genspool.core.queue import Queue
from genspool.exceptions import InvalidRequest, ModelError
from genspool.providers.base import CHAT, JobRef, Provider, Request, Result
from genspool.providers.plugins import ModelCard, ModelSpec, ProviderOptions, ProviderPlugin
from genspool.rag.search import Hit, Searcher

__all__ = [
    "ANSWER_ENDPOINT",
    "AnswerProvider",
    "AnswerSpec",
    "answer_spec",
    "cite",
    "is_answer",
    "plugin",
]

ANSWER_ENDPOINT = "/v1/responses"

#: What the model is told; the numbered sources and the question follow in the user turn.
SYSTEM = (
    "Answer the question using only the numbered sources. After each sentence that uses a"
    " source, cite it by its number in square brackets, like [1] or [2]. If the sources do not"
    " hold the answer, say that you do not know."
)
#: Tokens kept free beyond the counted prompt (the chat template's own tokens are counted;
#: this covers a tokenizer that merges across a source's boundary).
MARGIN = 8
#: The answer's length when the request does not say.
DEFAULT_OUTPUT = 256

_MARKER = re.compile(r"\[(\d{1,4}(?:\s*,\s*\d{1,4})*)\]")


class FileSearch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["file_search"]
    vector_store_ids: list[str] = Field(min_length=1, max_length=16)
    max_num_results: int = Field(8, ge=1, le=100)
    filters: dict[str, Any] | None = None
    ranking_options: dict[str, Any] | None = None

    @property
    def score_threshold(self) -> float | None:
        value = (self.ranking_options or {}).get("score_threshold")
        return float(value) if isinstance(value, int | float) else None


class AnswerSpec(BaseModel):
    """A ``/v1/responses`` body with a ``file_search`` tool, as far as an answer reads it."""

    model_config = ConfigDict(extra="allow")

    model: str
    input: str | list[dict[str, Any]] = Field(min_length=1)
    instructions: str | None = None
    tools: list[dict[str, Any]]
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    include: list[str] | None = None
    stream: bool | None = None

    @property
    def file_search(self) -> FileSearch:
        (tool,) = (t for t in self.tools if t.get("type") == "file_search")
        return FileSearch.model_validate(tool)


def is_answer(url: str, body: Any) -> bool:
    """Whether a request is an answer job: ``/v1/responses`` with a ``file_search`` tool."""
    if url != ANSWER_ENDPOINT or not isinstance(body, dict):
        return False
    tools = body.get("tools")
    return isinstance(tools, list) and any(
        isinstance(t, dict) and t.get("type") == "file_search" for t in tools
    )


def answer_spec(body: dict[str, Any], card: Any = None) -> AnswerSpec:
    """The checked request, or an :class:`InvalidRequest` naming what is wrong. ``card``: a
    function from a model name to its card (the target must serve chat)."""
    try:
        spec = AnswerSpec.model_validate(body)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InvalidRequest(f"body.{where}: {err['msg']}", param=where) from exc
    searches = [t for t in spec.tools if isinstance(t, dict) and t.get("type") == "file_search"]
    others = [t.get("type") for t in spec.tools if t not in searches]
    if len(searches) != 1 or others:
        raise InvalidRequest(
            "tools: an answer takes one file_search tool and no other"
            + (f" (got {', '.join(map(str, others))})" if others else ""),
            param="tools",
        )
    try:
        tool = spec.file_search
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        where = ".".join(str(p) for p in err["loc"])
        raise InvalidRequest(f"tools[0].{where}: {err['msg']}", param="tools") from exc
    if tool.filters is not None:
        parse_filter(tool.filters, "tools[0].filters")
    if spec.stream:
        raise InvalidRequest(
            "stream: an answer with file_search is returned whole; leave stream out and read"
            " the answer, or submit it as a job and follow its events",
            param="stream",
        )
    if not _question(spec).strip():
        raise InvalidRequest("input: give the question (a user message with text)", param="input")
    if card is not None:
        target: ModelCard = card(spec.model)
        if CHAT not in target.endpoints:
            raise InvalidRequest(
                f"model: {spec.model} does not serve chat; an answer needs a chat model",
                param="model",
            )
        wanted = spec.max_output_tokens or DEFAULT_OUTPUT
        if wanted >= target.context_window:
            raise InvalidRequest(
                f"max_output_tokens: {wanted} leaves no room for the sources in"
                f" {spec.model}'s window of {target.context_window} tokens",
                param="max_output_tokens",
            )
    return spec


# -- the worker side -------------------------------------------------------------------------


class AnswerProvider(Provider):
    endpoints = frozenset({ANSWER_ENDPOINT})
    #: Each answer its own task: cancelling one stops its generation alone.
    per_request = True

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.queue: Queue | None = None
        self.models: Models | None = None
        self.searcher: Searcher | None = None

    def bind(self, queue: Queue, models: Models) -> None:
        self.queue, self.models = queue, models
        storage = queue.storage
        if storage.chunks is not None:
            self.searcher = Searcher(storage.chunks, storage.files, queue)

    async def handle(self, batch: Sequence[Request]) -> list[Result]:
        return list(await asyncio.gather(*(self._one(r) for r in batch)))

    async def _one(self, request: Request) -> Result:
        queue, models, job = self.queue, self.models, request.job
        if queue is None or models is None or job is None:
            raise ModelError("an answer runs as a job in a worker", retryable=False)
        try:
            spec = answer_spec(request.body, models.card)
        except InvalidRequest as exc:
            return ModelError(exc.message, retryable=False)
        hits = await self._retrieve(spec, job.tenant)
        card = models.card(spec.model)
        messages, placed, prompt_tokens = fit(spec, hits, card)
        answer = await self._generate(queue, spec, messages, job)
        return respond(spec, job, hits, placed, answer, prompt_tokens)

    async def _retrieve(self, spec: AnswerSpec, tenant: str) -> list[Hit]:
        queue, searcher = self.queue, self.searcher
        assert queue is not None
        records = queue.storage.vectors
        if records is None or searcher is None:
            raise ModelError("this deployment keeps no vector stores", retryable=False)
        tool, question = spec.file_search, _question(spec)
        hits: list[Hit] = []
        for store_id in dict.fromkeys(tool.vector_store_ids):
            store = await records.store_get(store_id, tenant)
            if store is None:
                raise ModelError(f"no vector store {store_id!r}", retryable=False)
            hits += await searcher.search(
                store,
                question,
                k=tool.max_num_results,
                filters=tool.filters,
                score_threshold=tool.score_threshold,
            )
        hits.sort(key=lambda h: -h.score)
        return hits[: tool.max_num_results]

    async def _generate(
        self, queue: Queue, spec: AnswerSpec, messages: list[dict[str, Any]], parent: JobRef
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": spec.model,
            "messages": messages,
            "max_tokens": spec.max_output_tokens or DEFAULT_OUTPUT,
        }
        for name in ("temperature", "top_p"):
            if getattr(spec, name) is not None:
                body[name] = getattr(spec, name)
        digest = hashlib.sha256(orjson.dumps(body, option=orjson.OPT_SORT_KEYS)).hexdigest()
        metadata: dict[str, Any] = {PARENT: parent.id, BRANCH: "generate"}
        if SCOPES in parent.metadata:
            metadata[SCOPES] = parent.metadata[SCOPES]
        child = Job(
            url=CHAT,
            body=body,
            model=spec.model,
            tenant=parent.tenant,
            priority=parent.priority,
            metadata=metadata,
            # The prompt's hash: a retried answer whose retrieval found the same sources
            # reuses the first attempt's generation instead of calling the model again.
            idempotency_key=f"answer:{parent.id}:{digest[:24]}",
        )
        stored = await queue.submit(child)
        try:
            done = await queue.outcome(stored)
        except asyncio.CancelledError:
            await asyncio.shield(_cancel(queue, stored.id, parent.tenant))
            raise
        if done.status == JobStatus.SUCCEEDED.value and isinstance(done.result, dict):
            result = done.result.get("body")
            if isinstance(result, dict):
                return result
        message = (done.error or {}).get("message", done.status)
        raise ModelError(f"model {spec.model} (job {stored.id}): {message}", retryable=False)


async def _cancel(queue: Queue, job_id: str, tenant: str) -> None:
    try:
        await queue.cancel(job_id, tenant)
    except Exception:  # it ended meanwhile, or the backend is down: nothing more to do
        return


# -- the pieces, pure ------------------------------------------------------------------------


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text", ""))
            for part in content
            if isinstance(part, dict) and part.get("type") in ("input_text", "text", "output_text")
        )
    return ""


def _turns(spec: AnswerSpec) -> list[dict[str, str]]:
    """The conversation as chat messages (``input`` a string: one user turn)."""
    if isinstance(spec.input, str):
        return [{"role": "user", "content": spec.input}]
    turns = []
    for item in spec.input:
        role = item.get("role")
        if role in ("user", "assistant", "system", "developer"):
            turns.append(
                {
                    "role": "system" if role == "developer" else str(role),
                    "content": _text_of(item.get("content")),
                }
            )
    return turns


def _question(spec: AnswerSpec) -> str:
    users = [t["content"] for t in _turns(spec) if t["role"] == "user"]
    return users[-1] if users else ""


def _source_block(n: int, hit: Hit) -> str:
    where = hit.filename + (f", page {hit.chunk.page}" if hit.chunk.page is not None else "")
    return f"[{n}] ({where})\n{hit.chunk.text.strip()}"


def _messages(spec: AnswerSpec, sources: Sequence[Hit]) -> list[dict[str, str]]:
    system = SYSTEM + (f"\n\n{spec.instructions}" if spec.instructions else "")
    turns = _turns(spec)
    history, question = turns[:-1], turns[-1]["content"] if turns else ""
    blocks = "\n\n".join(_source_block(n, h) for n, h in enumerate(sources, 1))
    user = (f"Sources:\n\n{blocks}\n\n" if sources else "Sources: none found.\n\n") + (
        f"Question: {question}"
    )
    return [{"role": "system", "content": system}, *history, {"role": "user", "content": user}]


def _count(card: ModelCard, messages: list[dict[str, str]]) -> int:
    counts = card.count(CHAT, {"model": card.name, "messages": messages}) if card.count else None
    if counts is not None:
        return sum(counts)
    return sum(len(m["content"]) for m in messages) // 3 + 4 * len(messages)  # no tokenizer


def fit(
    spec: AnswerSpec, hits: Sequence[Hit], card: ModelCard
) -> tuple[list[dict[str, str]], list[Hit], int]:
    """The prompt with as many of ``hits`` (best first) as ``card``'s window holds beside the
    conversation and the answer's tokens; the sources placed; the prompt's tokens."""
    budget = card.context_window - (spec.max_output_tokens or DEFAULT_OUTPUT) - MARGIN
    bare = _messages(spec, [])
    if (size := _count(card, bare)) > budget:
        raise ModelError(
            f"the question and conversation are {size} tokens; with max_output_tokens"
            f" {spec.max_output_tokens or DEFAULT_OUTPUT} they do not fit {spec.model}'s"
            f" window of {card.context_window}",
            retryable=False,
        )
    lo, hi, best = 0, len(hits), (bare, size)
    while lo < hi:  # the most sources that fit: a binary search over how many
        mid = (lo + hi + 1) // 2
        messages = _messages(spec, hits[:mid])
        size = _count(card, messages)
        if size <= budget:
            lo, best = mid, (messages, size)
        else:
            hi = mid - 1
    return best[0], list(hits[:lo]), best[1]


@dataclass(frozen=True, slots=True)
class Cited:
    text: str
    #: ``(index in text, source number)`` of each marker kept.
    markers: list[tuple[int, int]]
    dropped: list[dict[str, Any]]


def cite(text: str, sources: int) -> Cited:
    """Find the ``[n]`` (and ``[n, m]``) markers of ``text``; keep those naming one of the
    ``sources`` placed, drop the others from the text and report them."""
    out: list[str] = []
    markers: list[tuple[int, int]] = []
    dropped: list[dict[str, Any]] = []
    last = 0
    for match in _MARKER.finditer(text):
        out.append(text[last : match.start()])
        numbers = [int(n) for n in re.split(r"\s*,\s*", match.group(1))]
        good = [n for n in numbers if 1 <= n <= sources]
        for n in numbers:
            if not 1 <= n <= sources:
                given = f"{sources} were given" if sources != 1 else "1 was given"
                dropped.append(
                    {
                        "marker": f"[{n}]",
                        "index": match.start(),
                        "reason": f"no source {n}: {given}",
                    }
                )
        if good:
            at = sum(map(len, out))
            marker = "[" + ", ".join(map(str, good)) + "]"
            markers += [(at, n) for n in good]
            out.append(marker)
        elif out and out[-1].endswith(" ") and text[match.end() : match.end() + 1] in " .,;:?!)":
            out[-1] = out[-1][:-1]  # "text [9]." -> "text."
        last = match.end()
    out.append(text[last:])
    return Cited("".join(out), markers, dropped)


def _citation(hit: Hit, n: int, index: int) -> dict[str, Any]:
    chunk = hit.chunk
    return {
        "type": "file_citation",
        "file_id": chunk.file_id,
        "filename": hit.filename,
        "index": index,
        # genspool's: where the passage is in the document, and how it ranked.
        "source": n,
        "vector_store_id": chunk.store_id,
        "score": round(hit.score, 6),
        "chunk": {
            "seq": chunk.seq,
            "start": chunk.start,
            "end": chunk.end,
            "page": chunk.page,
            "headings": list(chunk.headings),
        },
    }


def respond(
    spec: AnswerSpec,
    job: JobRef,
    hits: Sequence[Hit],
    placed: Sequence[Hit],
    answer: dict[str, Any],
    prompt_tokens: int,
) -> dict[str, Any]:
    """The ``response`` object of an answer."""
    choice = (answer.get("choices") or [{}])[0]
    raw = str((choice.get("message") or {}).get("content") or "")
    cited = cite(raw, len(placed))
    annotations = [_citation(placed[n - 1], n, at) for at, n in cited.markers]
    usage = answer.get("usage") or {}
    tokens_in = int(usage.get("prompt_tokens") or prompt_tokens)
    tokens_out = int(usage.get("completion_tokens") or 0)
    wants_results = "file_search_call.results" in (spec.include or [])
    results = [
        {
            "file_id": h.chunk.file_id,
            "filename": h.filename,
            "score": round(h.score, 6),
            "text": h.chunk.text,
            "attributes": h.chunk.attributes,
        }
        for h in hits
    ]
    finish = choice.get("finish_reason")
    return {
        "id": f"resp_{job.id}",
        "object": "response",
        "created_at": int(time.time()),
        "status": "completed" if finish != "length" else "incomplete",
        "incomplete_details": {"reason": "max_output_tokens"} if finish == "length" else None,
        "error": None,
        "model": spec.model,
        "instructions": spec.instructions,
        "output": [
            {
                "type": "file_search_call",
                "id": f"fs_{job.id}",
                "status": "completed",
                "queries": [_question(spec)],
                "results": results if wants_results else None,
            },
            {
                "type": "message",
                "id": f"msg_{job.id}",
                "status": "completed",
                "role": "assistant",
                "content": [
                    {
                        "type": "output_text",
                        "text": cited.text,
                        "annotations": annotations,
                        "logprobs": [],
                    }
                ],
            },
        ],
        "tools": spec.tools,
        "tool_choice": "auto",
        "parallel_tool_calls": False,
        "max_output_tokens": spec.max_output_tokens,
        "temperature": spec.temperature,
        "top_p": spec.top_p,
        "text": {"format": {"type": "text"}},
        "metadata": {},
        "usage": {
            "input_tokens": tokens_in,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": tokens_out,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": tokens_in + tokens_out,
        },
        "genspool": {
            "retrieved": len(hits),
            "placed": len(placed),
            "prompt_tokens": prompt_tokens,
            "sources": [
                {
                    "source": n,
                    "file_id": h.chunk.file_id,
                    "filename": h.filename,
                    "score": round(h.score, 6),
                    "start": h.chunk.start,
                    "end": h.chunk.end,
                    "page": h.chunk.page,
                }
                for n, h in enumerate(placed, 1)
            ],
            "dropped_citations": cited.dropped,
        },
    }


def _create(config: ModelSpec, env: Any) -> Provider:
    return AnswerProvider(config.name)


def _card(config: ModelSpec) -> ModelCard:
    return ModelCard(config.name, frozenset({ANSWER_ENDPOINT}), config.context_window)


plugin = ProviderPlugin(
    name="answer",
    options=ProviderOptions,
    endpoints=frozenset({ANSWER_ENDPOINT}),
    create=_create,
    card=_card,
)
