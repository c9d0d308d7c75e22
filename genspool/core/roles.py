"""The storage roles: what the core asks of a backend, one small interface per job to do.

A backend is a class that fills one or more roles (the built-in ones fill them all); callers type
against the role they use. :class:`Storage` composes the roles of one deployment, each from
whichever backend serves it: with ``GENSPOOL_QUEUE_URL`` the jobs move on one server (Redis,
NATS) while the record of every job lives in another (PostgreSQL), and the queue facade copies
each change it makes into the store.

* :class:`JobQueue` moves jobs: enqueue, lease, extend, and the fenced write of a transition
  decided by :mod:`genspool.core.machine`. It holds no rules of its own: statuses, error bodies
  and new field values arrive as parameters.
* :class:`JobStore` keeps the record: reads, lists, whole-record upserts, purges.
* :class:`Coordination`: slots of a model's ``max_concurrency`` and rate-limit buckets shared by
  every process, and the server's time (the one clock of leases and expiry).
* :class:`KeyValue`: small values (API keys, breaker states, the fair-share clock).
* :class:`Signals`: events between processes and wake-ups of idle workers.
* :class:`Outbox`: a queue's marks of the jobs whose copy in a separate store may be behind,
  so that the copy converges whatever dies between the two writes.
* :class:`RouteStore`: the fan-out routes by name, edited at run time and read by every API
  process, with a revision that tells a process when to read them again.
* :class:`FileStore`: the records of uploaded and generated files (:class:`FileObject`), each
  tenant's own; their bytes live in a blob store (:mod:`genspool.files`). Only the SQL
  backends fill it: a Redis or NATS deployment keeps its files in its SQL store.
* :class:`BatchStore`: the records of OpenAI Batch API runs (:class:`~genspool.core.batch.Batch`),
  each written under a version (compare-and-set). Like files, only the SQL backends (and
  memory) fill it.
* :class:`WebhookStore`: each tenant's webhook subscriptions (:class:`Webhook`); like batches,
  only the SQL backends and memory fill it.

Every role is also a :class:`Resource` (connect, close, and wiping its namespace for tests).
Future capabilities (files, batches, vectors) add roles here, not methods to an existing one.
Like the key-value role, routes live with the store (in a split deployment, at ``url``).
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from genspool.core.batch import Batch
from genspool.core.job import Job, JobStatus
from genspool.core.machine import Change, LeaseSpec
from genspool.core.pipeline import ItemStatus, PipelineRun, RunItem, Tick
from genspool.core.prompt_records import AuditEntry, PromptLabel, PromptVersion
from genspool.core.vectors import Chunk, VectorStore, VectorStoreFile

__all__ = [
    "BatchFilter",
    "BatchStore",
    "ChunkStore",
    "Coordination",
    "DriftSample",
    "DriftSamples",
    "FileFilter",
    "FileObject",
    "FileStore",
    "JobFilter",
    "JobQueue",
    "JobStore",
    "KeyValue",
    "Outbox",
    "PipelineStore",
    "PromptStore",
    "Resource",
    "RouteStore",
    "RunFilter",
    "Signals",
    "Storage",
    "VectorFilter",
    "VectorStoreRecords",
    "Webhook",
    "WebhookStore",
]


@dataclass(frozen=True, slots=True)
class JobFilter:
    status: JobStatus | None = None
    model: str | None = None
    tenant: str | None = None
    before: str | None = None  # cursor: ids strictly older than this one
    limit: int = 50


class Resource(ABC):  # noqa: B024 - every method is an optional hook
    """Connections and a namespace: a SQLite file, a PostgreSQL schema, a Redis key prefix,
    NATS streams and buckets."""

    async def connect(self) -> None:  # noqa: B027
        """Open connections and create the schema; idempotent."""

    async def close(self) -> None:  # noqa: B027
        """Release connections."""

    async def destroy(self) -> None:  # noqa: B027
        """Delete everything stored under this URL; stays connected and empty (tests)."""

    async def drop(self) -> None:
        """Remove the namespace altogether (tests); by default the same as :meth:`destroy`."""
        await self.destroy()


class JobQueue(Resource):
    """Where jobs wait and are leased. Every write is atomic; every write of a leased job is
    fenced by its lease token."""

    @abstractmethod
    async def enqueue(self, jobs: Sequence[Job]) -> list[Job]:
        """Store new jobs as given. A job whose (tenant, idempotency_key) exists yields the
        stored job instead (the caller tells them apart by identity)."""

    @abstractmethod
    async def lease(self, spec: LeaseSpec) -> list[Job]:
        """Apply :func:`genspool.core.machine.leased` to up to ``spec.limit`` due jobs, in the
        order ``spec`` names, atomically; returns them in that order."""

    @abstractmethod
    async def extend(self, held: Sequence[tuple[str, str]], until: float) -> int:
        """Push out the lease of ``(job_id, lease_token)`` pairs still held; returns how many."""

    @abstractmethod
    async def apply(self, changes: Sequence[Change]) -> set[str]:
        """Write each ``change.job`` whose stored record still has ``change.status`` and
        ``change.lease_token``, all in one atomic step; returns the ids written."""

    @abstractmethod
    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        """The jobs that exist among ``job_ids``, in any order."""

    @abstractmethod
    async def stale_leases(self, now: float, limit: int) -> list[Job]:
        """Running jobs whose lease ran out before ``now`` (their worker died or hung)."""

    @abstractmethod
    async def overdue(self, now: float, limit: int) -> list[Job]:
        """Waiting jobs whose ``expires_at`` is at or before ``now``."""

    @abstractmethod
    async def purge(self, statuses: Sequence[str], finished_before: float) -> int:
        """Delete jobs in ``statuses`` that finished before the given time; returns how many."""

    @abstractmethod
    async def depth(self, statuses: Sequence[str]) -> dict[str, dict[str, int]]:
        """Per model, the count of jobs in each of ``statuses`` (those with any)."""

    @abstractmethod
    async def oldest_waiting(self) -> dict[str, float]:
        """Per model, the ``created_at`` of the oldest job waiting to run, for load shedding by
        queue age. A backend that keeps one line per priority may answer with the oldest job
        at the head of a line."""


class JobStore(Resource):
    """The record of every job: what lists, dead letters and results are read from."""

    @abstractmethod
    async def get_many(self, job_ids: Sequence[str]) -> list[Job]: ...

    @abstractmethod
    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        """Jobs matching ``flt``, newest (highest id) first."""

    @abstractmethod
    async def put(self, jobs: Sequence[Job]) -> None:
        """Store whole records as they are, replacing any with the same id (a mirror of the
        queue that changed them)."""

    @abstractmethod
    async def purge(self, statuses: Sequence[str], finished_before: float) -> int: ...


class Coordination(Resource):
    @abstractmethod
    async def acquire_slot(
        self, name: str, holder: str, limit: int, ttl_s: float, now: float
    ) -> bool:
        """Take one of ``limit`` slots of ``name`` for ``holder`` until ``now + ttl_s``; a holder
        that already has one renews it. Slots whose time ran out are free again (a dead
        worker's slots come back by themselves). Returns whether ``holder`` now holds one."""

    @abstractmethod
    async def release_slot(self, name: str, holder: str) -> None:
        """Give back ``holder``'s slot of ``name``; nothing when it holds none."""

    @abstractmethod
    async def reserve(
        self, key: str, cost: float, rate_per_s: float, burst: float, now: float
    ) -> float:
        """Take ``cost`` units from the bucket ``key`` (refilling at ``rate_per_s`` up to
        ``burst``) and return 0.0, or take nothing and return the seconds until it would
        succeed. Atomic; the arithmetic is :func:`genspool.core.gcra.gcra`."""

    @abstractmethod
    async def server_time(self) -> float:
        """The server's clock now, in Unix seconds: the one clock of leases, expiry and
        maintenance, whatever each process's own says (:class:`genspool.core.clock.ServerClock`
        reads it every ~30 s). A backend on this machine (memory, a file) reads the local one."""


class KeyValue(Resource):
    @abstractmethod
    async def kv_put(self, namespace: str, key: str, value: bytes) -> None: ...

    @abstractmethod
    async def kv_get(self, namespace: str, key: str) -> bytes | None: ...

    @abstractmethod
    async def kv_list(self, namespace: str) -> dict[str, bytes]: ...

    @abstractmethod
    async def kv_delete(self, namespace: str, key: str) -> bool:
        """Remove a value; returns whether it existed."""


class Signals(Resource):
    """Events between processes, and wake-ups for idle workers.

    A backend that sets ``cross_process_events`` carries opaque payloads from ``broadcast`` in
    one process to ``listen`` in every process, its own included. Otherwise subscribers poll
    the store, and an idle worker finds work enqueued elsewhere by polling every
    ``poll_interval_s``; an enqueue in this process wakes its idle lanes at once (``notify``).
    """

    #: Whether events published by other processes reach this one by themselves.
    cross_process_events: bool = False
    #: How often an idle worker looks for work that another process enqueued.
    poll_interval_s: float = 0.1

    def __init__(self) -> None:
        self._wakeups: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    async def broadcast(self, payload: bytes) -> None:
        """Send ``payload`` to every process's listener (best effort; subscribers also poll)."""

    async def listen(self, deliver: Callable[[bytes], None]) -> None:
        """Call ``deliver`` with every broadcast payload until cancelled; reconnect by itself."""
        await asyncio.Event().wait()

    def notify(self, model: str) -> None:
        self._wakeups[model].set()

    async def wait_for_work(self, model: str, timeout: float) -> None:
        event = self._wakeups[model]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), min(timeout, self.poll_interval_s))
        event.clear()


class Outbox(Resource):
    """A queue's record of what a separate store has not copied yet (the transactional outbox).

    Once :meth:`epoch` has been called, every write of a job by the queue (enqueue, lease,
    apply) also marks the job, in the same atomic step, with the time of the write; ``purge``
    leaves marked jobs alone. The facade copies a marked job's current record to the store and
    then clears the mark, unless the job was written again meanwhile. A worker killed between
    the queue write and the store write thus leaves a mark, and the next maintenance copies it.
    """

    @abstractmethod
    async def epoch(self) -> str:
        """Start marking, and return this queue's generation: a random name made when the
        queue was first used, that changes when the server lost its data (a restart without
        persistence), so that the store's active jobs are put back into it."""

    @abstractmethod
    async def pending(self, before: float, limit: int) -> list[tuple[Job, float]]:
        """Up to ``limit`` marked jobs whose mark is older than ``before``, with their marks,
        oldest first; a mark left by a job that no longer exists is dropped."""

    @abstractmethod
    async def copied(self, marks: Sequence[tuple[str, float]]) -> None:
        """Clear the marks of ``(job_id, mark)`` pairs that are still as read (a job written
        again meanwhile keeps its newer mark)."""


class RouteStore(Resource):
    """Fan-out routes by name: documents the core encodes (bytes), shared by every process.

    Every write is atomic with the step of :meth:`routes_revision` it causes, so a process that
    reads the revision and then the routes never holds an older set under a newer revision.
    The revision never goes back while the namespace exists: ``destroy`` empties the routes
    and moves it on too (a process polling it then reloads to the empty set)."""

    @abstractmethod
    async def route_put(self, name: str, doc: bytes) -> int:
        """Create or replace the route ``name``; returns the new revision of the set."""

    @abstractmethod
    async def route_get(self, name: str) -> bytes | None: ...

    @abstractmethod
    async def route_list(self) -> dict[str, bytes]:
        """Every route, by name."""

    @abstractmethod
    async def route_delete(self, name: str) -> bool:
        """Remove a route; returns whether it existed (the revision moves only if it did)."""

    @abstractmethod
    async def routes_revision(self) -> int:
        """A counter that grows with every write of the routes, 0 before the first: one cheap
        read, which API processes poll to know when to read the routes again."""


@dataclass(frozen=True, slots=True)
class FileObject:
    """The record of one file (its bytes are in a blob store, at ``blob``)."""

    id: str  # "file-" and a sortable hex: ids of one process grow with time
    tenant: str
    filename: str
    purpose: str
    bytes: int
    sha256: str
    created_at: float
    expires_at: float | None
    blob: str  # the blob store's URL of the content
    status: str = "processed"


@dataclass(frozen=True, slots=True)
class FileFilter:
    tenant: str | None = None  # None: every tenant's (admin)
    purpose: str | None = None
    after: str | None = None  # cursor: ids strictly after this one, in ``order``
    limit: int = 100
    order: str = "desc"  # by id: "desc" (newest first) or "asc"
    alive_at: float | None = None  # leave out files expired at or before this time


class FileStore(Resource):
    """The records of files, tenant-scoped: a ``tenant`` of None reaches every tenant's (an
    admin); any other never sees another tenant's file. The bytes are not here: the core
    streams them to and from a blob store, and writes the record once they are committed."""

    @abstractmethod
    async def file_put(self, record: FileObject) -> None:
        """Store a new record (its id is new)."""

    @abstractmethod
    async def file_get(self, file_id: str, tenant: str | None) -> FileObject | None: ...

    @abstractmethod
    async def file_list(self, flt: FileFilter) -> list[FileObject]:
        """Up to ``flt.limit`` records matching ``flt``, ordered by id as it says."""

    @abstractmethod
    async def file_delete(self, file_id: str, tenant: str | None) -> FileObject | None:
        """Remove a record and return it; None when there was none. Of callers deleting the
        same file at once, one gets the record (and so deletes its blob)."""

    @abstractmethod
    async def files_expired(self, now: float, limit: int) -> list[FileObject]:
        """Up to ``limit`` records whose ``expires_at`` is at or before ``now``, oldest first."""

    def blob_home(self) -> str | None:
        """The URL of the blob store that keeps this store's file contents when the deployment
        names none (a directory beside a SQLite file, the same PostgreSQL schema)."""
        return None


@dataclass(frozen=True, slots=True)
class BatchFilter:
    tenant: str | None = None  # None: every tenant's (admin)
    after: str | None = None  # cursor: ids strictly older than this one (newest first)
    limit: int = 20


class BatchStore(Resource):
    """The records of batches, tenant-scoped as files are. The rules (what a status may become)
    are in :mod:`genspool.batches.machine`; a backend stores whole records under a version."""

    @abstractmethod
    async def batch_put(self, batch: Batch) -> None:
        """Store a new record (its id is new)."""

    @abstractmethod
    async def batch_get(self, batch_id: str, tenant: str | None) -> Batch | None: ...

    @abstractmethod
    async def batch_list(self, flt: BatchFilter) -> list[Batch]:
        """Up to ``flt.limit`` records matching ``flt``, newest (highest id) first."""

    @abstractmethod
    async def batch_update(self, batch: Batch, version: int) -> bool:
        """Replace the stored record by ``batch`` if the stored one's version is still
        ``version`` (``batch.version`` is the next one); returns whether it was written."""

    @abstractmethod
    async def batches_active(self, limit: int) -> list[Batch]:
        """Up to ``limit`` records not in a final status, oldest first (for the runners)."""


@dataclass(frozen=True, slots=True)
class Webhook:
    """A subscription: the events of one tenant (``events``: patterns such as ``batch.*``,
    ``job.succeeded``), narrowed to one batch when ``batch_id`` is set, POSTed to ``url`` and
    signed with ``secret`` (:mod:`genspool.webhooks.signing`)."""

    id: str
    tenant: str
    url: str
    events: tuple[str, ...]
    secret: str
    created_at: float
    batch_id: str | None = None
    description: str | None = None


class WebhookStore(Resource):
    """Webhook subscriptions, tenant-scoped as files are (a ``tenant`` of None: every
    tenant's). Few and rarely written: each process keeps them all in memory and reads them
    again now and then (:mod:`genspool.webhooks.dispatch`)."""

    @abstractmethod
    async def webhook_put(self, hook: Webhook) -> None:
        """Store a new subscription (its id is new)."""

    @abstractmethod
    async def webhook_get(self, hook_id: str, tenant: str | None) -> Webhook | None: ...

    @abstractmethod
    async def webhook_list(self, tenant: str | None) -> list[Webhook]:
        """Every subscription of ``tenant`` (None: of every tenant), oldest first."""

    @abstractmethod
    async def webhook_delete(self, hook_id: str, tenant: str | None) -> bool:
        """Remove a subscription; returns whether it existed."""


@dataclass(frozen=True, slots=True)
class RunFilter:
    tenant: str | None = None  # None: every tenant's (admin)
    pipeline: str | None = None  # None: every pipeline's
    after: str | None = None  # cursor: ids strictly older than this one (newest first)
    limit: int = 20


class PipelineStore(Resource):
    """Pipeline runs, their items and the ticks of schedules, tenant-scoped as batches are. The
    rules (what a status may become) are in :mod:`genspool.pipelines.machine`; a backend stores
    whole records under a version, items one row each by ``(run_id, key)``."""

    @abstractmethod
    async def run_put(self, run: PipelineRun) -> PipelineRun:
        """Store a new record (its id is new) and return it; when ``run.key`` is set and a run
        of the same tenant and pipeline was stored under that key, store nothing and return
        that run instead (so any number of processes may start the run of one tick)."""

    @abstractmethod
    async def run_get(self, run_id: str, tenant: str | None) -> PipelineRun | None: ...

    @abstractmethod
    async def run_list(self, flt: RunFilter) -> list[PipelineRun]:
        """Up to ``flt.limit`` records matching ``flt``, newest (highest id) first."""

    @abstractmethod
    async def run_update(self, run: PipelineRun, version: int) -> bool:
        """Replace the stored record by ``run`` if the stored one's version is still
        ``version`` (``run.version`` is the next one); returns whether it was written."""

    @abstractmethod
    async def runs_active(self, limit: int) -> list[PipelineRun]:
        """Up to ``limit`` records not in a final status, oldest first (for the runners)."""

    @abstractmethod
    async def items_put(self, items: Sequence[RunItem]) -> None:
        """Insert or replace each item, by ``(run_id, key)``."""

    @abstractmethod
    async def items_list(
        self, run_id: str, after_seq: int, limit: int, status: ItemStatus | None = None
    ) -> list[RunItem]:
        """Up to ``limit`` items of the run with ``seq > after_seq`` (and ``status``, when
        given), in ``seq`` order."""

    @abstractmethod
    async def items_finished(
        self, tenant: str, pipeline: str, keys: Sequence[str]
    ) -> dict[str, RunItem]:
        """Those of ``keys`` that some run of ``pipeline`` (of ``tenant``) finished (an item
        of that key is ``done`` or ``skipped`` there), each with that item: the one of the
        latest such run (highest run id)."""

    @abstractmethod
    async def tick_record(self, tick: Tick) -> Tick:
        """Record a tick unless one of the same ``(pipeline, at)`` is recorded; returns the
        recorded one (the first writer's)."""

    @abstractmethod
    async def ticks_list(self, pipeline: str, before: float | None, limit: int) -> list[Tick]:
        """Up to ``limit`` ticks of ``pipeline`` at instants before ``before`` (None: any),
        latest first."""


@dataclass(frozen=True, slots=True)
class VectorFilter:
    """Which vector stores (``store_id`` None) or which files of one store to list."""

    tenant: str | None = None  # None: every tenant's (admin)
    store_id: str | None = None  # files of this store; None with ``status``: of every store
    status: str | None = None
    after: str | None = None  # cursor: ids past this one, in the order asked
    limit: int = 20
    #: ``desc``: newest (highest id) first, as OpenAI lists by default; ``asc``: oldest first.
    order: str = "desc"


class VectorStoreRecords(Resource):
    """Vector stores and their files (:mod:`genspool.core.vectors`), tenant-scoped as files
    are; whole records under a version, each write compare-and-set."""

    @abstractmethod
    async def store_put(self, store: VectorStore) -> None:
        """Store a new record (its id is new)."""

    @abstractmethod
    async def store_get(self, store_id: str, tenant: str | None) -> VectorStore | None: ...

    @abstractmethod
    async def store_list(self, flt: VectorFilter) -> list[VectorStore]:
        """Up to ``flt.limit`` stores of ``flt.tenant``, by id in ``flt.order``."""

    @abstractmethod
    async def store_update(self, store: VectorStore, version: int) -> bool:
        """Replace the record if the stored one's version is still ``version``."""

    @abstractmethod
    async def store_delete(self, store_id: str, tenant: str | None) -> bool:
        """Remove a store and the records of its files; returns whether it existed."""

    @abstractmethod
    async def vfile_put(self, vfile: VectorStoreFile) -> bool:
        """Store a new file record; False (nothing written) when the store already has a
        file of that id."""

    @abstractmethod
    async def vfile_get(
        self, store_id: str, file_id: str, tenant: str | None
    ) -> VectorStoreFile | None: ...

    @abstractmethod
    async def vfile_list(self, flt: VectorFilter) -> list[VectorStoreFile]:
        """Up to ``flt.limit`` files of ``flt.store_id`` (of every store when it is None),
        with ``flt.status`` when given, by id in ``flt.order``."""

    @abstractmethod
    async def vfile_update(self, vfile: VectorStoreFile, version: int) -> bool:
        """Replace the record if the stored one's version is still ``version``."""

    @abstractmethod
    async def vfile_delete(self, store_id: str, file_id: str, tenant: str | None) -> bool:
        """Remove a file's record; returns whether it existed."""


class ChunkStore(Resource):
    """The chunks of vector store files, by generation, and the embedding cache.

    A file's chunks are written under a generation that is not current (searches do not see
    them); :meth:`chunks_flip` makes it current and deletes every other generation of that
    file in one transaction, and moves the store's revision (a process holding a store's
    vectors in memory reloads when it moved)."""

    @abstractmethod
    async def chunks_put(self, chunks: Sequence[Chunk]) -> None:
        """Insert or replace each chunk, by ``(store_id, file_id, generation, seq)``."""

    @abstractmethod
    async def chunks_flip(self, store_id: str, file_id: str, generation: int) -> int:
        """Make ``generation`` the file's current one and delete its others, at once;
        returns the store's new revision."""

    @abstractmethod
    async def chunks_drop(self, store_id: str, file_id: str | None) -> int:
        """Delete every chunk of a file (of the whole store when ``file_id`` is None), current
        or not; returns the store's new revision."""

    @abstractmethod
    async def chunks_current(
        self, store_id: str, after: tuple[str, int] | None, limit: int
    ) -> list[Chunk]:
        """Up to ``limit`` current chunks of the store, by ``(file_id, seq)`` past ``after``."""

    @abstractmethod
    async def chunks_get(self, store_id: str, keys: Sequence[tuple[str, int]]) -> list[Chunk]:
        """The current chunks of these ``(file_id, seq)`` (those that exist), in that order."""

    @abstractmethod
    async def chunks_revision(self, store_id: str) -> int:
        """A number that moves on every flip and drop of the store (0 for a store never
        written)."""

    @abstractmethod
    async def cache_get(self, model: str, dimensions: int, keys: Sequence[str]) -> dict[str, bytes]:
        """The cached vectors of these text hashes made by ``model`` at ``dimensions``."""

    @abstractmethod
    async def cache_put(self, model: str, dimensions: int, vectors: dict[str, bytes]) -> None:
        """Keep vectors by text hash (a hash already kept is left as it is)."""

    async def chunks_nearest(
        self, store_id: str, dimensions: int, vector: bytes, k: int, flt: Any
    ) -> list[tuple[str, int, float]] | None:
        """The ``k`` current chunks nearest ``vector`` (cosine) among those ``flt`` (a parsed
        :data:`genspool.core.filters.Filter`, or None) keeps, as
        ``(file_id, seq, similarity)`` best first, when the store searches itself (pgvector);
        None (the default) when it does not, and the caller ranks the chunks in memory."""
        return None


@dataclass(frozen=True, slots=True)
class DriftSample:
    """One sampled answer of a model (:mod:`genspool.drift`): its prompt's and output's lengths
    in characters and the output's embedding (float32 bytes, by ``embed_model``)."""

    id: str  # the sampled job's id: a job is sampled at most once
    model: str
    at: float  # when the job ended
    prompt_chars: int
    output_chars: int
    embed_model: str
    embedding: bytes
    tenant: str = "default"


class DriftSamples(Resource):
    """Samples for drift reports, by model and time. Written once each, read by window,
    purged by age; a model's samples are everyone's (reports are admin or read-scope)."""

    @abstractmethod
    async def drift_put(self, samples: Sequence[DriftSample]) -> int:
        """Store samples, skipping any whose id is stored already; returns how many were new."""

    @abstractmethod
    async def drift_list(
        self, model: str, start: float, end: float, limit: int
    ) -> list[DriftSample]:
        """Up to ``limit`` samples of ``model`` with ``start <= at < end``, newest first."""

    @abstractmethod
    async def drift_models(self) -> list[str]:
        """Every model with a stored sample, sorted."""

    @abstractmethod
    async def drift_purge(self, before: float) -> int:
        """Delete the samples with ``at < before``; returns how many."""


class PromptStore(Resource):
    """The prompt registry (:mod:`genspool.core.prompts`): immutable versions, movable labels
    and the audit of both, each tenant's own (a prompt is named by ``(tenant, prompt_id)``).
    Every write stores its audit entry in the same atomic step, so no change goes unaudited
    and no entry names a change that did not happen. ``latest`` is not stored: it is the
    highest version."""

    @abstractmethod
    async def prompt_put(self, version: PromptVersion, audit: AuditEntry) -> bool:
        """Store a new version and its audit entry, unless that version number of the prompt
        is stored already (then nothing, and False): numbers are taken once."""

    @abstractmethod
    async def prompt_get(
        self, tenant: str, prompt_id: str, version: int | None
    ) -> PromptVersion | None:
        """That version (None: the highest), if stored."""

    @abstractmethod
    async def prompt_versions(
        self, tenant: str, prompt_id: str, before: int | None, limit: int
    ) -> list[PromptVersion]:
        """Up to ``limit`` versions below ``before`` (None: any), highest first."""

    @abstractmethod
    async def prompt_list(self, tenant: str, after: str | None, limit: int) -> list[PromptVersion]:
        """The highest version of up to ``limit`` prompts with ids past ``after``, by id."""

    @abstractmethod
    async def label_get(self, tenant: str, prompt_id: str, label: str) -> PromptLabel | None: ...

    @abstractmethod
    async def label_list(self, tenant: str, prompt_id: str) -> list[PromptLabel]:
        """The stored labels of a prompt, by name."""

    @abstractmethod
    async def label_put(self, label: PromptLabel, revision: int, audit: AuditEntry) -> bool:
        """Write ``label`` (whose ``revision`` is the next one) and its audit entry if the
        stored label's revision is still ``revision`` (0: no label of that name is stored);
        returns whether it was written."""

    @abstractmethod
    async def audit_list(
        self, tenant: str, prompt_id: str, after: str | None, limit: int
    ) -> list[AuditEntry]:
        """Up to ``limit`` audit entries of a prompt with ids past ``after``, oldest first."""


@dataclass(frozen=True, slots=True)
class Storage:
    """The roles of one deployment. :meth:`of` takes them all from one backend."""

    queue: JobQueue
    store: JobStore
    coordination: Coordination
    kv: KeyValue
    signals: Signals
    routes: RouteStore
    #: None when the store keeps no files (a Redis or NATS server alone).
    files: FileStore | None = None
    #: None when the store keeps no batches (a Redis or NATS server alone).
    batches: BatchStore | None = None
    #: None when the store keeps no webhook subscriptions (a Redis or NATS server alone).
    webhooks: WebhookStore | None = None
    #: None when the store keeps no pipeline runs (a Redis or NATS server alone).
    pipelines: PipelineStore | None = None
    #: None when the store keeps no vector stores (a Redis or NATS server alone).
    vectors: VectorStoreRecords | None = None
    chunks: ChunkStore | None = None
    #: None when the store keeps no drift samples (a Redis or NATS server alone).
    drift: DriftSamples | None = None
    #: None when the store keeps no prompts (a Redis or NATS server alone).
    prompts: PromptStore | None = None

    @classmethod
    def of(cls, backend: JobQueue) -> Storage:
        """Every role from one backend that fills them all."""
        roles = (JobStore, Coordination, KeyValue, Signals, RouteStore)
        missing = [r.__name__ for r in roles if not isinstance(backend, r)]
        if missing:
            raise TypeError(f"{type(backend).__name__} does not fill {', '.join(missing)}")
        b: Any = backend
        files = b if isinstance(b, FileStore) else None
        batches = b if isinstance(b, BatchStore) else None
        webhooks = b if isinstance(b, WebhookStore) else None
        pipelines = b if isinstance(b, PipelineStore) else None
        vectors = b if isinstance(b, VectorStoreRecords) else None
        chunks = b if isinstance(b, ChunkStore) else None
        drift = b if isinstance(b, DriftSamples) else None
        prompts = b if isinstance(b, PromptStore) else None
        return cls(
            b, b, b, b, b, b, files, batches, webhooks, pipelines, vectors, chunks, drift=drift,
            prompts=prompts,
        )  # fmt: skip

    @property
    def mirrored(self) -> bool:
        """Whether the store is apart from the queue, so each change is copied into it."""
        return self.store is not self.queue  # type: ignore[comparison-overlap]

    @property
    def outbox(self) -> Outbox | None:
        """The queue's marks of what the store has not copied, when the store is apart and the
        queue keeps them (else changes are copied once, with no repair)."""
        return self.queue if self.mirrored and isinstance(self.queue, Outbox) else None

    def parts(self) -> list[Resource]:
        """The distinct backends, the store's first (it must be up before the queue copies)."""
        out: list[Resource] = []
        roles = (self.store, self.queue, self.coordination, self.kv, self.signals, self.routes)
        extra = (self.files, self.batches, self.webhooks, self.pipelines, self.vectors, self.chunks)
        for part in (*roles, *extra, self.drift, self.prompts):
            if part is not None and not any(part is seen for seen in out):
                out.append(part)
        return out

    async def connect(self) -> None:
        for part in self.parts():
            await part.connect()

    async def close(self) -> None:
        for part in reversed(self.parts()):
            await part.close()

    async def destroy(self) -> None:
        for part in self.parts():
            await part.destroy()

    async def drop(self) -> None:
        for part in self.parts():
            await part.drop()
