"""Celery 5 peer: Redis broker and Redis result backend, one no-op task.

Worker (started by the harness, from this folder)::

    celery -A celery_app:app worker -P solo --without-gossip --without-mingle \
        --without-heartbeat -l WARNING

``python celery_app.py enqueue|wait --jobs N`` is the producer and the result monitor
(see ``_common.py``).
"""

from __future__ import annotations

import time

from _common import REDIS_URL, emit_enqueue, parse_args, wait_for_redis_keys
from celery import Celery

app = Celery("bench", broker=REDIS_URL, backend=REDIS_URL)
app.conf.update(broker_connection_retry_on_startup=True, task_default_queue="bench-celery")


@app.task(name="noop")
def noop(i: int) -> int:
    """The no-op job: its result is its argument."""
    return i


def task_id(i: int) -> str:
    """The id of job ``i``, so that the monitor knows which result keys to look for."""
    return f"bench-{i}"


def enqueue(n: int) -> None:
    """Send ``n`` jobs, timing the loop alone."""
    start = time.perf_counter()
    for i in range(n):
        noop.apply_async((i,), task_id=task_id(i))
    emit_enqueue(n, time.perf_counter() - start)


def main() -> None:
    args = parse_args()
    if args.command == "enqueue":
        enqueue(args.jobs)
    else:
        keys = [f"celery-task-meta-{task_id(i)}" for i in range(args.jobs)]
        wait_for_redis_keys(keys, args.ready, args.timeout)


if __name__ == "__main__":
    main()
