"""taskiq + taskiq-redis peer: ``ListQueueBroker`` with ``RedisAsyncResultBackend``.

Worker (started by the harness, from this folder; the taskiq CLI uses uvloop when installed)::

    taskiq worker taskiq_app:broker --workers 1 --max-async-tasks 1000 --max-prefetch 1000 \
        --log-level WARNING

``python taskiq_app.py enqueue|wait --jobs N`` is the producer and the result monitor
(see ``_common.py``).
"""

from __future__ import annotations

import asyncio
import time

import uvloop
from _common import REDIS_URL, emit_enqueue, parse_args, wait_for_redis_keys
from taskiq_redis import ListQueueBroker, RedisAsyncResultBackend

broker = ListQueueBroker(REDIS_URL, queue_name="bench-taskiq").with_result_backend(
    RedisAsyncResultBackend(REDIS_URL)
)


@broker.task(task_name="noop")
async def noop(i: int) -> int:
    """The no-op job: its result is its argument."""
    return i


def task_id(i: int) -> str:
    """The id of job ``i``; with no prefix, the result backend stores it under this key."""
    return f"bench-{i}"


async def enqueue(n: int) -> None:
    """Kick ``n`` jobs, timing the loop alone."""
    await broker.startup()
    start = time.perf_counter()
    for i in range(n):
        await noop.kicker().with_task_id(task_id(i)).kiq(i)
    emit_enqueue(n, time.perf_counter() - start)
    await broker.shutdown()


def main() -> None:
    args = parse_args()
    if args.command == "enqueue":
        uvloop.install()
        asyncio.run(enqueue(args.jobs))
    else:
        keys = [task_id(i) for i in range(args.jobs)]
        wait_for_redis_keys(keys, args.ready, args.timeout)


if __name__ == "__main__":
    main()
