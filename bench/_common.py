"""Helpers shared by the benchmarks: a temporary store, a worker running in-process, medians."""

from __future__ import annotations

import asyncio
import os
import statistics
import tempfile
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from genspool.backends.sqlite import SQLiteBackend
from genspool.config import ModelConfig
from genspool.core.queue import Queue
from genspool.core.worker import Worker
from genspool.providers.registry import ModelRegistry


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


@asynccontextmanager
async def running(
    models: Sequence[ModelConfig], synchronous: str = "NORMAL"
) -> AsyncIterator[tuple[Queue, Worker]]:
    """A fresh SQLite store and a worker serving ``models``, both in this process."""
    with tempfile.TemporaryDirectory() as tmp:
        queue = Queue(SQLiteBackend(os.path.join(tmp, "bench.db"), synchronous=synchronous))
        await queue.connect()
        worker = Worker(queue, ModelRegistry(models))
        await worker.start()
        task = asyncio.create_task(worker.run())
        try:
            yield queue, worker
        finally:
            worker.stop()
            await task
            await queue.close()
