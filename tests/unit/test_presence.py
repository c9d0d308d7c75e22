"""Worker presence (genspool.core.presence) on a real SQLite store: announced workers are live
until their record is older than the stale time, withdrawn ones are gone, and records of workers
dead for an hour are deleted by the reader; a worker announces itself while it runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

from genspool.backends import open_storage
from genspool.config import ModelConfig
from genspool.core.presence import FORGET_S, NAMESPACE, WorkerSeen, announce, live_workers, withdraw
from genspool.core.queue import Queue
from genspool.core.worker import Worker
from genspool.runtime.registry import ModelRegistry


async def test_live_stale_withdrawn_and_forgotten(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/p.db")
    await storage.connect()
    try:
        kv, now = storage.kv, 1_000_000.0
        for name, seen in (("a", now - 5), ("b", now - 50), ("c", now - FORGET_S - 1), ("d", now)):
            await announce(kv, WorkerSeen(name, "h", 1, ("m",), 2, now - 100, seen))
        await withdraw(kv, "d")
        live = await live_workers(kv, now, stale_s=30)
        assert [w.id for w in live] == ["a"] and live[0].models == ("m",)
        assert sorted(await kv.kv_list(NAMESPACE)) == ["a", "b"]  # c forgotten, d withdrawn
    finally:
        await storage.drop()


async def test_a_running_worker_is_live_and_gone_after_it_drains(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path}/w.db")
    queue = Queue(storage)
    await queue.connect()
    registry = ModelRegistry([ModelConfig(name="echo", provider="echo")])
    worker = Worker(queue, registry)
    running = asyncio.create_task(worker.run())
    try:
        for _ in range(100):
            live = await live_workers(storage.kv, queue.clock(), queue.lease_s)
            if live:
                break
            await asyncio.sleep(0.02)
        assert [w.id for w in live] == [worker.id] and "echo" in live[0].models
    finally:
        worker.stop()
        await running
    assert await live_workers(storage.kv, queue.clock(), queue.lease_s) == []
    await queue.close()
