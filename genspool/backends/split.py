"""A queue on one server and the store on another: e.g. leases on Redis or NATS, the record of
every job and result in PostgreSQL (``GENSPOOL_QUEUE_URL`` beside ``GENSPOOL_DATABASE_URL``).

The queue backend does everything that moves a job: enqueue (with idempotency), leases and
their fencing, retries, cancel, replay, expiry, and the coordination that must be fast (slots,
rate limits) and the events. After each of those, the jobs it changed are copied whole into
the store (``put``, an upsert), which serves lists and keeps results and dead letters for as
long as the store's retention says, plus the durable small values (API keys). Reading one job
asks the queue first, so a reader never sees a copy older than the queue's; listing reads the
store, which may trail the queue by the copy that was in flight when a process died (the next
change of that job copies it again).

Only a SQL backend (SQLite, PostgreSQL) can be the store: it needs ``put``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from genspool.backends.base import Backend, JobFilter
from genspool.core.job import Job, Outcome
from genspool.exceptions import ConfigError

__all__ = ["SplitBackend"]


class SplitBackend(Backend):
    def __init__(self, queue: Backend, store: Backend) -> None:
        super().__init__()
        if not callable(getattr(store, "put", None)):
            raise ConfigError(
                f"{type(store).__name__} cannot be the store of a separate queue; "
                "use sqlite:// or postgresql:// for GENSPOOL_DATABASE_URL"
            )
        self.queue, self.store = queue, store
        self.cross_process_events = queue.cross_process_events
        self.poll_interval_s = queue.poll_interval_s
        self._wakeups = queue._wakeups  # wake-ups are the queue's: notify() must reach it

    async def _copy(self, jobs: Sequence[Job]) -> None:
        if jobs:
            await self.store.put(jobs)  # type: ignore[attr-defined]

    async def _copy_ids(self, ids: Sequence[str]) -> None:
        await self._copy(await self.queue.get_many(ids))

    # -- lifetime ----------------------------------------------------------------------------

    async def connect(self) -> None:
        await self.store.connect()
        await self.queue.connect()

    async def close(self) -> None:
        await self.queue.close()
        await self.store.close()

    async def destroy(self) -> None:
        await self.queue.destroy()
        await self.store.destroy()

    async def drop(self) -> None:
        await self.queue.drop()
        await self.store.drop()

    # -- the queue, copied to the store --------------------------------------------------------

    async def enqueue(self, jobs: Sequence[Job]) -> list[Job]:
        stored = await self.queue.enqueue(jobs)
        await self._copy([s for j, s in zip(jobs, stored, strict=True) if s is j])
        return stored

    async def lease(self, model: str, limit: int, lease_s: float, now: float) -> list[Job]:
        jobs = await self.queue.lease(model, limit, lease_s, now)
        await self._copy(jobs)
        return jobs

    async def extend(self, jobs: Sequence[tuple[str, str]], until: float) -> int:
        return await self.queue.extend(jobs, until)  # the store keeps the lease it was given

    async def finish(self, outcomes: Sequence[Outcome], now: float) -> set[str]:
        applied = await self.queue.finish(outcomes, now)
        await self._copy_ids(sorted(applied))
        return applied

    async def expired_leases(self, now: float, limit: int) -> list[Job]:
        return await self.queue.expired_leases(now, limit)

    async def cancel(self, job_id: str, now: float) -> Job | None:
        job = await self.queue.cancel(job_id, now)
        await self._copy([job] if job else [])
        return job

    async def replay(self, job_id: str, now: float) -> Job | None:
        job = await self.queue.replay(job_id, now)  # dead letters are never purged
        await self._copy([job] if job else [])
        return job

    async def expire(self, now: float) -> list[Job]:
        jobs = await self.queue.expire(now)
        await self._copy(jobs)
        return jobs

    async def purge(self, finished_before: float) -> int:
        await self.queue.purge(finished_before)
        return await self.store.purge(finished_before)

    async def depth(self) -> dict[str, dict[str, int]]:
        return await self.queue.depth()

    async def oldest_waiting(self) -> dict[str, float]:
        return await self.queue.oldest_waiting()

    # -- reading -----------------------------------------------------------------------------

    async def get_many(self, job_ids: Sequence[str]) -> list[Job]:
        found = await self.queue.get_many(job_ids)
        missing = set(job_ids) - {j.id for j in found}
        return found + (await self.store.get_many(sorted(missing)) if missing else [])

    async def list_jobs(self, flt: JobFilter) -> list[Job]:
        return await self.store.list_jobs(flt)

    # -- coordination: fast things on the queue, durable values in the store -------------------

    async def acquire_slot(
        self, name: str, holder: str, limit: int, ttl_s: float, now: float
    ) -> bool:
        return await self.queue.acquire_slot(name, holder, limit, ttl_s, now)

    async def release_slot(self, name: str, holder: str) -> None:
        await self.queue.release_slot(name, holder)

    async def reserve(
        self, key: str, cost: float, rate_per_s: float, burst: float, now: float
    ) -> float:
        return await self.queue.reserve(key, cost, rate_per_s, burst, now)

    async def kv_put(self, namespace: str, key: str, value: bytes) -> None:
        await self.store.kv_put(namespace, key, value)

    async def kv_get(self, namespace: str, key: str) -> bytes | None:
        return await self.store.kv_get(namespace, key)

    async def kv_list(self, namespace: str) -> dict[str, bytes]:
        return await self.store.kv_list(namespace)

    async def kv_delete(self, namespace: str, key: str) -> bool:
        return await self.store.kv_delete(namespace, key)

    # -- events and wake-ups: the queue's ------------------------------------------------------

    async def broadcast(self, payload: bytes) -> None:
        await self.queue.broadcast(payload)

    async def listen(self, deliver: Callable[[bytes], None]) -> None:
        await self.queue.listen(deliver)

    def notify(self, model: str) -> None:
        self.queue.notify(model)

    async def wait_for_work(self, model: str, timeout: float) -> None:
        await self.queue.wait_for_work(model, timeout)
