"""arq peer (Redis), tuned: ``max_jobs=500``, ``poll_delay=0.01``, uvloop, logging at WARNING.

``python arq_app.py worker`` runs the worker; ``enqueue|wait --jobs N`` are the producer and the
result monitor (see ``_common.py``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import uvloop
from _common import REDIS_URL, emit_enqueue, parse_args, wait_for_redis_keys
from arq import create_pool
from arq.connections import RedisSettings
from arq.constants import result_key_prefix
from arq.worker import run_worker

REDIS = RedisSettings.from_dsn(REDIS_URL)


async def noop(ctx: dict[str, Any], i: int) -> int:
    """The no-op job: its result is its argument."""
    return i


class WorkerSettings:
    """Best fair settings from PEERS.md (the defaults cap out near 200 jobs/s)."""

    functions = [noop]
    redis_settings = REDIS
    max_jobs = 500
    poll_delay = 0.01


def job_id(i: int) -> str:
    """The id of job ``i``, so that the monitor knows which result keys to look for."""
    return f"bench-{i}"


async def enqueue(n: int) -> None:
    """Enqueue ``n`` jobs, timing the loop alone."""
    pool = await create_pool(REDIS)
    start = time.perf_counter()
    for i in range(n):
        await pool.enqueue_job("noop", i, _job_id=job_id(i))
    emit_enqueue(n, time.perf_counter() - start)
    await pool.aclose()


def main() -> None:
    args = parse_args(extra=["worker"])
    logging.basicConfig(level=logging.WARNING)
    if args.command == "worker":
        uvloop.install()
        run_worker(WorkerSettings)  # type: ignore[arg-type]
    elif args.command == "enqueue":
        uvloop.install()
        asyncio.run(enqueue(args.jobs))
    else:
        keys = [f"{result_key_prefix}{job_id(i)}" for i in range(args.jobs)]
        wait_for_redis_keys(keys, args.ready, args.timeout)


if __name__ == "__main__":
    main()
