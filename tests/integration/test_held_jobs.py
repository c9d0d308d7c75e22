"""A job a worker holds is being worked on or handed back, never kept ``running`` with no call.

The backend fault is injected by a **fake**: :func:`failing_leases` wraps the real backend's
``lease`` so that chosen calls raise the :class:`~genspool.exceptions.BackendError` a server
restart or "database is locked" gives (a real server cannot be made to fail exactly the lease
that fills a batch). Everything else is real: a SQLite file, the echo model, the worker.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from genspool.core.job import Job
from genspool.core.machine import LeaseSpec
from genspool.core.worker import Worker
from genspool.exceptions import BackendError
from genspool.resilience.shared import Shared
from genspool.runtime import ModelRegistry
from genspool.testing.inprocess import InProcess, models_of, serve
from tests.helpers.api import CHAT, TERMINAL, chat_body

SLOW = {
    "name": "slow",
    "provider": "echo",
    "options": {"latency_ms": 600},
    "batching": {"max_batch_size": 4, "max_wait_ms": 2000, "max_concurrency": 2},
}


def failing_leases(gs: InProcess, fail: Callable[[int], bool]) -> list[int]:
    """Fake fault: the backend's ``lease`` call number ``n`` (from 1) raises when ``fail(n)``."""
    backend = gs.queue.storage.queue
    real, calls = backend.lease, [0]

    async def lease(spec: LeaseSpec) -> list[Job]:
        calls[0] += 1
        if fail(calls[0]):
            raise BackendError("injected fault: database is locked")
        return await real(spec)

    backend.lease = lease  # type: ignore[method-assign]
    return calls


async def _submit(gs: InProcess, text: str) -> str:
    answer = await gs.client.post("/v1/jobs", json={"url": CHAT, "body": chat_body("slow", text)})
    assert answer.status_code == 202, answer.text
    job_id: str = answer.json()["id"]
    return job_id


async def _settled(gs: InProcess, ids: list[str], timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    jobs: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        jobs = [(await gs.client.get(f"/v1/jobs/{i}")).json() for i in ids]
        if all(j["status"] in TERMINAL for j in jobs):
            return jobs
        await asyncio.sleep(0.05)
    raise AssertionError(f"jobs left unfinished: {[j['status'] for j in jobs]}")


async def test_a_backend_error_while_filling_a_batch_leaves_no_job_behind(
    namespaced_url: Callable[[str], str],
) -> None:
    async with serve([SLOW], url=namespaced_url("sqlite"), worker=True, lease_s=30) as gs:
        first = await _submit(gs, "first")  # runs at once: the lane is now busy
        await asyncio.sleep(0.2)
        calls = failing_leases(gs, lambda n: n == 2)  # the lease that fills the next batch
        second = await _submit(gs, "second")  # leased, then the batch is being filled
        jobs = await _settled(gs, [first, second], timeout=10)
        assert calls[0] >= 2
        assert gs.worker is not None and not gs.worker.held
    assert [j["status"] for j in jobs] == ["succeeded", "succeeded"], jobs


async def test_a_held_job_without_a_call_is_handed_back_not_renewed(
    namespaced_url: Callable[[str], str],
) -> None:
    async with serve([SLOW], url=namespaced_url("sqlite"), lease_s=1.5) as gs:
        job_id = await _submit(gs, "lost")
        (leased,) = await gs.queue.lease("slow", 1)
        storage = gs.queue.storage
        registry = ModelRegistry(
            models_of([SLOW]), backend=Shared(storage.coordination, storage.kv)
        )
        worker = Worker(gs.queue, registry, maintain_s=0.05)
        worker.held[leased.id] = leased  # held, but no call is ever made for it: a lost job
        runner = asyncio.create_task(worker.run())
        try:
            (job,) = await _settled(gs, [job_id], timeout=10)
        finally:
            worker.stop()
            await runner
    assert job["status"] == "succeeded", job
    outcomes = [a["outcome"] for a in job["history"]]
    assert outcomes == ["released", "succeeded"], job["history"]
