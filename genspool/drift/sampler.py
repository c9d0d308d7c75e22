"""Sampling for drift: the hook on :attr:`Queue.on_ended` that takes a share of each model's
succeeded chat jobs (``drift: sample_rate:`` in the models file; default 0, off) and records
their prompt and output lengths and an embedding of the output.

The embedding is made through the queue, as a job of the model's ``embed_model`` (the bundled
MiniLM by default) at a low priority, so a worker serving that model does it with its batching
and limits, and a sample costs the chat job's worker nothing but an enqueue. That job carries
the sample's fields in its metadata under :data:`DRIFT_META` (a reserved key: a client cannot
plant one), and when it succeeds the same hook, wherever it runs, stores the sample. Its
idempotency key ``drift:{job id}`` samples a job at most once however often its end is seen.
With no model sampled, nothing is attached: jobs pay nothing.
"""

from __future__ import annotations

import logging
import random
import weakref
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from genspool.config import DriftConfig, ModelConfig
from genspool.core.job import Job, JobStatus
from genspool.core.models import DRIFT
from genspool.core.queue import Queue
from genspool.core.roles import DriftSample, DriftSamples

__all__ = ["DRIFT_META", "DriftSampler", "drift_sampler_of"]

log = logging.getLogger("genspool.drift")
#: ``Job.metadata`` key of an embedding job made for a sample (reserved: clients cannot set it).
DRIFT_META = DRIFT
CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"
#: Characters of an output sent to be embedded (MiniLM reads 256 tokens, ~1,000 characters).
MAX_EMBED_CHARS = 2_000
_ATTACHED: weakref.WeakKeyDictionary[Queue, DriftSampler] = weakref.WeakKeyDictionary()


def drift_sampler_of(queue: Queue, models: Iterable[ModelConfig]) -> DriftSampler | None:
    """The queue's sampler, made and hooked on first call; None when no model is sampled or
    the store keeps no samples. One per queue, however many parts (API, worker) ask."""
    store = queue.storage.drift
    if queue in _ATTACHED:
        return _ATTACHED[queue]
    configs = list(models)
    rates = {c.name: c.drift for c in configs if c.drift.sample_rate > 0}
    if store is None or not rates:
        return None
    sampler = _ATTACHED[queue] = DriftSampler(queue, store, rates, {c.name for c in configs})
    queue.on_ended.append(sampler.jobs_ended)
    return sampler


def text_of(content: Any) -> str:
    """A message's text: a string, or the text parts of a list of parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


def chat_output(job: Job) -> str | None:
    """The first choice's text of a succeeded chat job, if it has one."""
    try:
        return text_of((job.result or {})["body"]["choices"][0]["message"]["content"])
    except (KeyError, IndexError, TypeError):
        return None


def prompt_chars(body: dict[str, Any]) -> int:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return 0
    return sum(len(text_of(m.get("content"))) for m in messages if isinstance(m, dict))


class DriftSampler:
    def __init__(
        self,
        queue: Queue,
        store: DriftSamples,
        rates: dict[str, DriftConfig],
        served: set[str],
        *,
        rng: random.Random | None = None,
    ) -> None:
        self.queue, self.store, self.rates, self.served = queue, store, rates, served
        self.rng = rng or random.Random()
        self._warned: set[str] = set()

    async def jobs_ended(self, jobs: Sequence[Job]) -> None:
        """The hook on the queue: embed a share of the chat jobs, store embedded samples."""
        asks: list[Job] = []
        done: list[DriftSample] = []
        for job in jobs:
            if job.status is not JobStatus.SUCCEEDED:
                continue
            if DRIFT_META in job.metadata and job.url == EMBEDDINGS:
                if (made := self._sample(job)) is not None:
                    done.append(made)
            elif job.url == CHAT and (ask := self._ask(job)) is not None:
                asks.append(ask)
        if asks:
            await self.queue.submit_many(asks)
        if done:
            await self.store.drift_put(done)

    def _ask(self, job: Job) -> Job | None:
        """The embedding job of a chat job drawn for a sample (None: not drawn)."""
        cfg = self.rates.get(job.model)
        if cfg is None or self.rng.random() >= cfg.sample_rate:
            return None
        if cfg.embed_model not in self.served:
            if cfg.embed_model not in self._warned:
                self._warned.add(cfg.embed_model)
                log.warning("drift: model %s's embed_model %s is not served", job.model,
                            cfg.embed_model)  # fmt: skip
            return None
        output = chat_output(job)
        if output is None:
            return None
        meta = {"job": job.id, "model": job.model, "at": job.finished_at or self.queue.clock(),
                "prompt_chars": prompt_chars(job.body), "output_chars": len(output)}  # fmt: skip
        return Job(
            url=EMBEDDINGS, body={"model": cfg.embed_model, "input": output[:MAX_EMBED_CHARS]},
            model=cfg.embed_model, tenant=job.tenant, priority=-10,
            idempotency_key=f"drift:{job.id}", metadata={DRIFT_META: meta},
        )  # fmt: skip

    def _sample(self, job: Job) -> DriftSample | None:
        meta = job.metadata[DRIFT_META]
        try:
            vector = (job.result or {})["body"]["data"][0]["embedding"]
            embedding = np.asarray(vector, dtype=np.float32).tobytes()
            return DriftSample(
                str(meta["job"]), str(meta["model"]), float(meta["at"]),
                int(meta["prompt_chars"]), int(meta["output_chars"]), job.model, embedding,
                job.tenant,
            )  # fmt: skip
        except (KeyError, IndexError, TypeError, ValueError):
            log.warning("drift: embedding job %s answered no vector", job.id)
            return None
