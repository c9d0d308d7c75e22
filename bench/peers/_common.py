"""Shared helpers for the peer modules driven by ``bench/queue_path.py``.

Every peer module is a small command-line program run with that peer's own venv python:

* ``enqueue --jobs N`` puts N no-op jobs on the queue from one producer and prints one JSON line
  ``{"n": N, "seconds": S}``, where S times the enqueue loop alone (imports and connecting are
  left out);
* ``wait --jobs N --ready FILE`` is the monitor: it connects to the result store, creates FILE to
  say it is ready, then polls until N results are stored and prints one JSON line with the time
  (epoch seconds) it first saw a result and the time it saw the last one.

The harness starts the worker process itself between the two. Only the standard library is
imported here; ``redis`` is imported lazily by the Redis monitor, so this module loads in every
venv. Redis is always 127.0.0.1, on the dedicated database given by ``BENCH_REDIS_URL``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/15")
POLL_S = 0.02
"""Monitor poll interval: the end time is known to within this."""
CHUNK = 50
"""Keys checked per pipeline round trip by the Redis monitor."""


def parse_args(argv: Sequence[str] | None = None, extra: Sequence[str] = ()) -> argparse.Namespace:
    """Parse ``enqueue``/``wait`` (plus any ``extra`` commands) and their options."""
    parser = argparse.ArgumentParser()
    parser.add_argument("command", choices=["enqueue", "wait", *extra])
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--ready", type=Path, default=None, help="file the monitor creates")
    parser.add_argument("--timeout", type=float, default=300.0)
    return parser.parse_args(argv)


def emit(obj: dict[str, Any]) -> None:
    """Print one JSON line for the harness to read."""
    print(json.dumps(obj), flush=True)


def emit_enqueue(n: int, seconds: float) -> None:
    """Report the producer's enqueue loop."""
    emit({"n": n, "seconds": seconds})


def sqlite_db_path() -> str:
    """The SQLite file the harness made for this run."""
    return os.environ["BENCH_DB"]


@dataclass
class Tracker:
    """Follows a monitor's count of stored results and when it changed."""

    n: int
    done: int = 0
    first_seen: float | None = None
    first_seen_done: int = 0
    last_seen: float | None = None

    def update(self, done: int) -> None:
        """Record the latest count of stored results."""
        if done > self.done:
            now = time.time()
            if self.first_seen is None:
                self.first_seen = now
                self.first_seen_done = done
            self.last_seen = now
        self.done = done

    def report(self, timed_out: bool) -> dict[str, Any]:
        """The JSON the harness reads."""
        return {
            "done": self.done,
            "first_seen": self.first_seen,
            "first_seen_done": self.first_seen_done,
            "last_seen": self.last_seen,
            "timed_out": timed_out,
        }


def wait_loop(count: Callable[[], int], n: int, ready: Path | None, timeout: float) -> None:
    """Signal readiness, then poll ``count`` until it reaches ``n`` or ``timeout`` passes."""
    if ready is not None:
        ready.touch()
    tracker = Tracker(n)
    deadline = time.monotonic() + timeout
    while tracker.done < n and time.monotonic() < deadline:
        tracker.update(count())
        if tracker.done < n:
            time.sleep(POLL_S)
    emit(tracker.report(timed_out=tracker.done < n))


class RedisKeyCounter:
    """Counts how many of a known list of result keys exist, cheaply.

    Workers finish jobs roughly in enqueue order, so each poll checks the still-pending keys
    from the front in chunks and stops at the first chunk where none has appeared; each key is
    checked until it exists, and a poll costs about (new results + one chunk) EXISTS calls.
    """

    def __init__(self, keys: Sequence[str]) -> None:
        import redis

        self._client = redis.Redis.from_url(REDIS_URL)
        self._client.ping()
        self._pending = list(keys)
        self._total = len(keys)

    def _exists(self, chunk: Sequence[str]) -> list[int]:
        pipe = self._client.pipeline(transaction=False)
        for key in chunk:
            pipe.exists(key)
        return [int(found) for found in pipe.execute()]

    def __call__(self) -> int:
        kept: list[str] = []
        pos = 0
        while pos < len(self._pending):
            chunk = self._pending[pos : pos + CHUNK]
            found = self._exists(chunk)
            kept.extend(key for key, hit in zip(chunk, found, strict=True) if not hit)
            pos += len(chunk)
            if not any(found):
                break
        self._pending = kept + self._pending[pos:]
        return self._total - len(self._pending)


def wait_for_redis_keys(keys: Sequence[str], ready: Path | None, timeout: float) -> None:
    """Monitor a Redis result store until every key in ``keys`` exists."""
    wait_loop(RedisKeyCounter(keys), len(keys), ready, timeout)
