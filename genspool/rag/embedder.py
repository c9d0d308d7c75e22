"""Vectors of texts by a served embedding model: through the queue, with a cache.

Each group of texts is an ordinary ``/v1/embeddings`` job, so the model's dynamic batching,
limits, retries and fair share apply, and at most ``concurrency`` groups are in flight (sized
to the model's capacity, not to the CPUs). Vectors are kept by the sha256 of their text, the
model and the dimensions (:meth:`~genspool.core.roles.ChunkStore.cache_get`): a document edited
in one paragraph re-embeds only the chunks whose text changed, and an unchanged one none.
Vectors are stored L2-normalised float32, so a dot product is their cosine.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from genspool.core.job import Job
from genspool.core.queue import Queue
from genspool.core.roles import ChunkStore
from genspool.exceptions import ModelError
from genspool.providers.base import EMBEDDINGS

__all__ = ["Embedder", "EmbeddingFailed", "text_key", "unit"]


class EmbeddingFailed(ModelError):
    """An embedding job failed (after its retries): the document stays as it was."""


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def unit(values: Sequence[float]) -> bytes:
    """A vector as stored: float32, little-endian, of length 1 (a zero vector stays zero)."""
    v = np.asarray(values, dtype="<f4")
    norm = float(np.linalg.norm(v))
    return (v / norm if norm else v).astype("<f4").tobytes()


@dataclass(slots=True)
class EmbedStats:
    texts: int = 0
    cached: int = 0
    jobs: int = 0


class Embedder:
    #: Texts per job (one request of the model's batch).
    PER_JOB = 32

    def __init__(
        self,
        queue: Queue,
        cache: ChunkStore,
        model: str,
        dimensions: int | None,
        *,
        tenant: str,
        priority: int = -5,
        concurrency: int = 4,
    ) -> None:
        self.queue, self.cache, self.model, self.dimensions = queue, cache, model, dimensions
        self.tenant, self.priority = tenant, priority
        self._slots = asyncio.Semaphore(concurrency)
        self.stats = EmbedStats()

    async def embed(self, texts: Sequence[str], *, cached: bool = True) -> list[bytes]:
        """The vector of each text, in order; EmbeddingFailed names the model and why."""
        keys = [text_key(t) for t in texts]
        found = await self._cached(keys) if cached else {}
        missing = sorted({k: i for i, k in enumerate(keys) if k not in found}.values())
        self.stats.texts += len(texts)
        self.stats.cached += len(texts) - len(missing)
        groups = [missing[i : i + self.PER_JOB] for i in range(0, len(missing), self.PER_JOB)]
        made: dict[str, bytes] = {}
        for vectors in await asyncio.gather(*(self._job([texts[i] for i in g]) for g in groups)):
            made.update(vectors)
        if made and self.dimensions is None:  # a store's first vectors: their size is its
            self.dimensions = len(next(iter(made.values()))) // 4
        if made and self.dimensions is not None:
            await self.cache.cache_put(self.model, self.dimensions, made)
        return [found.get(k) or made[k] for k in keys]

    async def _cached(self, keys: list[str]) -> dict[str, bytes]:
        if self.dimensions is None:
            return {}
        out: dict[str, bytes] = {}
        for start in range(0, len(keys), 1000):
            out.update(
                await self.cache.cache_get(self.model, self.dimensions, keys[start : start + 1000])
            )
        return out

    async def _job(self, texts: list[str]) -> dict[str, bytes]:
        async with self._slots:
            job = Job(
                url=EMBEDDINGS, body={"model": self.model, "input": texts}, model=self.model,
                tenant=self.tenant, priority=self.priority,
            )  # fmt: skip
            self.stats.jobs += 1
            ended = await self.queue.outcome(await self.queue.submit(job))
        if ended.status != "succeeded" or ended.result is None:
            why = (ended.error or {}).get("message") or ended.status
            raise EmbeddingFailed(f"embedding model {self.model}: {why}")
        body = ended.result.get("body") or {}
        data = sorted(body.get("data") or [], key=lambda d: d.get("index", 0))
        if len(data) != len(texts):
            raise EmbeddingFailed(
                f"embedding model {self.model} answered {len(data)} vectors for {len(texts)} texts"
            )
        out: dict[str, bytes] = {}
        for text, item in zip(texts, data, strict=True):
            vector = unit(item["embedding"])
            size = len(vector) // 4
            expected = self.dimensions or (len(next(iter(out.values()))) // 4 if out else size)
            if size != expected:
                raise EmbeddingFailed(
                    f"embedding model {self.model} made {size} dimensions; the store holds"
                    f" {expected}"
                )
            out[text_key(text)] = vector
        return out
