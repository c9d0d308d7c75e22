"""Which workers are alive: each worker writes its record into the key-value role at start and
at every heartbeat, and deletes it when it drains, so any API process (the web UI's overview,
``genspool_workers`` in ``/metrics``) shows the same workers. A record not renewed for
``stale_s`` (three heartbeats) is a worker that died; readers delete records older than
``FORGET_S``."""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass

import orjson

from genspool.core.roles import KeyValue

__all__ = ["NAMESPACE", "WorkerSeen", "announce", "live_workers", "withdraw"]

NAMESPACE = "workers"
#: A dead worker's record is deleted by the first reader after this long (one hour).
FORGET_S = 3600.0


@dataclass(frozen=True, slots=True)
class WorkerSeen:
    id: str
    host: str
    pid: int
    models: tuple[str, ...]
    in_flight: int
    started_at: float
    seen_at: float


async def announce(kv: KeyValue, seen: WorkerSeen) -> None:
    await kv.kv_put(NAMESPACE, seen.id, orjson.dumps(asdict(seen)))


async def withdraw(kv: KeyValue, worker_id: str) -> None:
    await kv.kv_delete(NAMESPACE, worker_id)


async def live_workers(kv: KeyValue, now: float, stale_s: float) -> list[WorkerSeen]:
    """The workers seen within ``stale_s`` of ``now``, oldest first (and old records deleted)."""
    live = []
    for key, raw in (await kv.kv_list(NAMESPACE)).items():
        try:
            data = orjson.loads(raw)
            seen = WorkerSeen(**{**data, "models": tuple(data["models"])})
        except (orjson.JSONDecodeError, TypeError, KeyError):
            continue
        if now - seen.seen_at <= stale_s:
            live.append(seen)
        elif now - seen.seen_at > FORGET_S:
            with contextlib.suppress(Exception):  # another reader may have deleted it first
                await kv.kv_delete(NAMESPACE, key)
    return sorted(live, key=lambda w: (w.started_at, w.id))
