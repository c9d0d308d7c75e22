"""The in-memory backend (``memory://``): the reference implementation of every storage role.

Everything lives in this process's dicts and is gone when it ends, like huey's
``MemoryStorage`` or litestar's ``MemoryStore``: for tests, of genspool and of applications
built on it, and for trying genspool out. It passes the same contract suite as the server
backends, and the model-based test holds every other backend to what it does.

Records are copied on the way in and out, so a caller's copy never aliases the stored one (the
state machine changes the copies it is given in place). One asyncio loop runs every method, and
none awaits in the middle, so each is atomic. ``memory://name`` names a store shared by every
backend opened with that URL in this process (an API and a worker in one test); plain
``memory://`` is a fresh one.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from genspool.backends._drift import MemoryDrift
from genspool.backends._pipelines import MemoryPipelines, PipelineState
from genspool.backends._prompts import MemoryPrompts, PromptState
from genspool.backends._vectors import ChunkState, MemoryChunks, MemoryVectors, VectorState
from genspool.backends._webhooks import MemoryWebhooks
from genspool.core.batch import Batch
from genspool.core.gcra import gcra
from genspool.core.job import WAITING, Job
from genspool.core.machine import Change, LeaseSpec, leased
from genspool.core.roles import (
    BatchFilter,
    BatchStore,
    Coordination,
    DriftSample,
    FileFilter,
    FileObject,
    FileStore,
    JobFilter,
    JobQueue,
    JobStore,
    KeyValue,
    Outbox,
    RouteStore,
    Signals,
    Webhook,
)

__all__ = ["MemoryBackend"]


@dataclass
class _State:
    jobs: dict[str, Job] = field(default_factory=dict)
    by_key: dict[tuple[str, str], str] = field(default_factory=dict)  # idempotency
    slots: dict[str, dict[str, float]] = field(default_factory=dict)  # name -> holder -> until
    tats: dict[str, float] = field(default_factory=dict)
    kv: dict[tuple[str, str], bytes] = field(default_factory=dict)
    routes: dict[str, bytes] = field(default_factory=dict)
    files: dict[str, FileObject] = field(default_factory=dict)
    batches: dict[str, Batch] = field(default_factory=dict)
    webhooks: dict[str, Webhook] = field(default_factory=dict)
    pipelines: PipelineState = field(default_factory=PipelineState)
    vectors: VectorState = field(default_factory=VectorState)
    chunks: ChunkState = field(default_factory=ChunkState)
    prompts: PromptState = field(default_factory=PromptState)
    drift: dict[str, DriftSample] = field(default_factory=dict)
    routes_revision: int = 0  # kept by destroy: it never goes back
    waiting: dict[str, set[str]] = field(default_factory=dict)  # model -> ids (an index)
    outbox: dict[str, float] | None = None  # id -> mark, once ``epoch`` started marking
    epoch: str = field(default_factory=lambda: uuid.uuid4().hex)

    def mark(self, job_id: str, at: float) -> None:
        if self.outbox is not None:
            self.outbox[job_id] = at

    def store(self, job: Job) -> None:
        self.jobs[job.id] = job
        ids = self.waiting.setdefault(job.model, set())
        if job.status in WAITING:
            ids.add(job.id)
        else:
            ids.discard(job.id)


_NAMED: dict[str, _State] = {}


def _copy(job: Job) -> Job:
    # body/metadata/result/error are JSON values that the core replaces, never mutates.
    return copy.copy(job)


class MemoryBackend(
    JobQueue,
    JobStore,
    Coordination,
    KeyValue,
    Signals,
    Outbox,
    RouteStore,
    FileStore,
    BatchStore,
    MemoryWebhooks,
    MemoryPipelines,
    MemoryVectors,
    MemoryChunks,
    MemoryPrompts,
    MemoryDrift,
):
    def __init__(self, name: str | None = None) -> None:
        super().__init__()
        self.name = name
        self._s = _NAMED.setdefault(name, _State()) if name else _State()
        self._webhooks = self._s.webhooks
        self._pipelines = self._s.pipelines
        self._vectors, self._chunks = self._s.vectors, self._s.chunks
        self._prompts = self._s.prompts
        self._drift = self._s.drift

    @classmethod
    def from_url(cls, url: str) -> MemoryBackend:
        """``memory://`` (a fresh store) or ``memory://name`` (shared in this process)."""
        parts = urlsplit(url)
        return cls((parts.netloc + parts.path).strip("/") or None)

    async def destroy(self) -> None:
        s = self._s
        for part in (s.jobs, s.by_key, s.slots, s.tats, s.kv, s.waiting, s.routes, s.files):
            part.clear()
        s.batches.clear()
        s.webhooks.clear()
        s.pipelines.clear()
        s.vectors.clear()
        s.chunks.clear()
        s.prompts.clear()
        s.drift.clear()
        s.outbox, s.epoch = None, uuid.uuid4().hex
        s.routes_revision += 1

    async def drop(self) -> None:
        await self.destroy()
        if self.name:
            _NAMED.pop(self.name, None)

    # -- queue -------------------------------------------------------------------------------

    async def enqueue(self, jobs: Sequence[Job]) -> list[Job]:
        out = []
        for job in jobs:
            key = (job.tenant, job.idempotency_key) if job.idempotency_key else None
            if key is not None and key in self._s.by_key:
                out.append(_copy(self._s.jobs[self._s.by_key[key]]))
                continue
            stored = _copy(job)
            stored.available_at = job.available_at or job.created_at
            self._s.store(stored)
            self._s.mark(job.id, time.time())
            if key is not None:
                self._s.by_key[key] = job.id
            out.append(job)
        for model in {j.model for j in jobs}:
            self.notify(model)
        return out

    async def lease(self, spec: LeaseSpec) -> list[Job]:
        ids = self._s.waiting.get(spec.model, ())
        due = [
            j
            for j in map(self._s.jobs.__getitem__, ids)
            if j.status in spec.waiting
            and j.available_at <= spec.now
            and (j.expires_at is None or j.expires_at > spec.now)
        ]
        due.sort(key=lambda j: (-j.priority, j.rank, j.available_at))
        out = []
        for job in due[: spec.limit]:
            self._s.store(leased(job, spec))
            self._s.mark(job.id, spec.now)
            out.append(_copy(job))
        return out

    async def extend(self, held: Sequence[tuple[str, str]], until: float) -> int:
        n = 0
        for job_id, token in held:
            job = self._s.jobs.get(job_id)
            if job is not None and job.lease_token == token and job.lease_token is not None:
                job.lease_expires_at = until
                n += 1
        return n

    async def apply(self, changes: Sequence[Change]) -> set[str]:
        written = set()
        for change in changes:
            job = self._s.jobs.get(change.job.id)
            if job is None or (job.status, job.lease_token) != (change.status, change.lease_token):
                continue
            self._s.store(_copy(change.job))
            self._s.mark(job.id, time.time())
            written.add(job.id)
        for model in {c.job.model for c in changes if c.job.id in written}:
            self.notify(model)
        return written

    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        return [_copy(self._s.jobs[i]) for i in dict.fromkeys(job_ids) if i in self._s.jobs]

    async def stale_leases(self, now: float, limit: int) -> list[Job]:
        stale = [
            j
            for j in self._s.jobs.values()
            if j.lease_expires_at is not None and j.lease_expires_at < now
        ]
        stale.sort(key=lambda j: j.lease_expires_at or 0.0)
        return [_copy(j) for j in stale[:limit]]

    async def overdue(self, now: float, limit: int) -> list[Job]:
        late = [
            j
            for j in self._s.jobs.values()
            if j.status in WAITING and j.expires_at is not None and j.expires_at <= now
        ]
        return [_copy(j) for j in late[:limit]]

    async def purge(self, statuses: Sequence[str], finished_before: float) -> int:
        gone = [
            j
            for j in self._s.jobs.values()
            if j.status in statuses
            and j.finished_at is not None
            and j.finished_at < finished_before
            and j.id not in (self._s.outbox or ())  # the store has not copied it yet
        ]
        for job in gone:
            del self._s.jobs[job.id]
            self._s.waiting.get(job.model, set()).discard(job.id)
            if job.idempotency_key:
                self._s.by_key.pop((job.tenant, job.idempotency_key), None)
        return len(gone)

    async def depth(self, statuses: Sequence[str]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        for job in self._s.jobs.values():
            if job.status in statuses:
                counts = out.setdefault(job.model, {})
                counts[job.status.value] = counts.get(job.status.value, 0) + 1
        return out

    async def oldest_waiting(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for job in self._s.jobs.values():
            if job.status in WAITING:
                out[job.model] = min(out.get(job.model, job.created_at), job.created_at)
        return out

    # -- outbox ------------------------------------------------------------------------------

    async def epoch(self) -> str:
        if self._s.outbox is None:
            self._s.outbox = {}
        return self._s.epoch

    async def pending(self, before: float, limit: int) -> list[tuple[Job, float]]:
        marks = self._s.outbox or {}
        for gone in [i for i in marks if i not in self._s.jobs]:
            del marks[gone]
        due = sorted((at, i) for i, at in marks.items() if at < before)[:limit]
        return [(_copy(self._s.jobs[i]), at) for at, i in due]

    async def copied(self, marks: Sequence[tuple[str, float]]) -> None:
        outbox = self._s.outbox or {}
        for job_id, at in marks:
            if outbox.get(job_id) == at:
                del outbox[job_id]

    # -- store -------------------------------------------------------------------------------

    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        found = [
            j
            for j in self._s.jobs.values()
            if (flt.status is None or j.status == flt.status)
            and (flt.model is None or j.model == flt.model)
            and (flt.tenant is None or j.tenant == flt.tenant)
            and (flt.before is None or j.id < flt.before)
        ]
        found.sort(key=lambda j: j.id, reverse=True)
        return [_copy(j) for j in found[: flt.limit]]

    async def put(self, jobs: Sequence[Job]) -> None:
        for job in jobs:
            self._s.store(_copy(job))
            if job.idempotency_key:
                self._s.by_key[job.tenant, job.idempotency_key] = job.id

    # -- coordination --------------------------------------------------------------------------

    async def acquire_slot(
        self, name: str, holder: str, limit: int, ttl_s: float, now: float
    ) -> bool:
        held = self._s.slots.setdefault(name, {})
        for other, until in list(held.items()):
            if until <= now:
                del held[other]
        if holder not in held and len(held) >= limit:
            return False
        held[holder] = now + ttl_s
        return True

    async def release_slot(self, name: str, holder: str) -> None:
        self._s.slots.get(name, {}).pop(holder, None)

    async def reserve(
        self, key: str, cost: float, rate_per_s: float, burst: float, now: float
    ) -> float:
        tat, wait = gcra(self._s.tats.get(key), now, cost, rate_per_s, burst)
        if wait == 0.0:
            self._s.tats[key] = tat
        return wait

    async def server_time(self) -> float:
        return time.time()  # every user of this backend is in this process

    # -- key-value ---------------------------------------------------------------------------

    async def kv_put(self, namespace: str, key: str, value: bytes) -> None:
        self._s.kv[namespace, key] = bytes(value)

    async def kv_get(self, namespace: str, key: str) -> bytes | None:
        return self._s.kv.get((namespace, key))

    async def kv_list(self, namespace: str) -> dict[str, bytes]:
        return {k: v for (ns, k), v in sorted(self._s.kv.items()) if ns == namespace}

    async def kv_delete(self, namespace: str, key: str) -> bool:
        return self._s.kv.pop((namespace, key), None) is not None

    # -- routes ------------------------------------------------------------------------------

    async def route_put(self, name: str, doc: bytes) -> int:
        self._s.routes[name] = bytes(doc)
        self._s.routes_revision += 1
        return self._s.routes_revision

    async def route_get(self, name: str) -> bytes | None:
        return self._s.routes.get(name)

    async def route_list(self) -> dict[str, bytes]:
        return dict(sorted(self._s.routes.items()))

    async def route_delete(self, name: str) -> bool:
        if self._s.routes.pop(name, None) is None:
            return False
        self._s.routes_revision += 1
        return True

    async def routes_revision(self) -> int:
        return self._s.routes_revision

    # -- files -------------------------------------------------------------------------------

    def blob_home(self) -> str:
        return f"memory://{self.name}" if self.name else "memory://"

    async def file_put(self, record: FileObject) -> None:
        self._s.files[record.id] = record  # frozen: shared safely

    async def file_get(self, file_id: str, tenant: str | None) -> FileObject | None:
        found = self._s.files.get(file_id)
        return found if found is not None and tenant in (None, found.tenant) else None

    async def file_list(self, flt: FileFilter) -> list[FileObject]:
        desc = flt.order == "desc"
        found = [
            f
            for f in self._s.files.values()
            if flt.tenant in (None, f.tenant)
            and flt.purpose in (None, f.purpose)
            and (flt.alive_at is None or f.expires_at is None or f.expires_at > flt.alive_at)
            and (flt.after is None or (f.id < flt.after if desc else f.id > flt.after))
        ]
        return sorted(found, key=lambda f: f.id, reverse=desc)[: flt.limit]

    async def file_delete(self, file_id: str, tenant: str | None) -> FileObject | None:
        if await self.file_get(file_id, tenant) is None:
            return None
        return self._s.files.pop(file_id)

    async def files_expired(self, now: float, limit: int) -> list[FileObject]:
        files = self._s.files.values()
        late = [f for f in files if f.expires_at is not None and f.expires_at <= now]
        return sorted(late, key=lambda f: (f.expires_at or 0.0, f.id))[:limit]

    # -- batches -----------------------------------------------------------------------------
    # Records are frozen: stored and handed out as they are.

    async def batch_put(self, batch: Batch) -> None:
        self._s.batches[batch.id] = batch

    async def batch_get(self, batch_id: str, tenant: str | None) -> Batch | None:
        found = self._s.batches.get(batch_id)
        return found if found is not None and tenant in (None, found.tenant) else None

    async def batch_list(self, flt: BatchFilter) -> list[Batch]:
        found = [
            b
            for b in self._s.batches.values()
            if flt.tenant in (None, b.tenant) and (flt.after is None or b.id < flt.after)
        ]
        return sorted(found, key=lambda b: b.id, reverse=True)[: flt.limit]

    async def batch_update(self, batch: Batch, version: int) -> bool:
        stored = self._s.batches.get(batch.id)
        if stored is None or stored.version != version:
            return False
        self._s.batches[batch.id] = batch
        return True

    async def batches_active(self, limit: int) -> list[Batch]:
        active = [b for b in self._s.batches.values() if not b.terminal]
        return sorted(active, key=lambda b: b.id)[:limit]
