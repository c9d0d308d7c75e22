"""A model's shared slot comes free within seconds of its holder's death.

Real processes on one real SQLite file: a ``genspool api`` takes the jobs, two ``genspool
worker`` processes serve an echo model (named as such: it computes nothing; its ``latency_ms``
makes each batch hold the model's only slot for a known time). The job lease is the default
30 s; the slot must not live that long. The slot holders are read from the database file.
"""

from __future__ import annotations

import time
from pathlib import Path

from genspool.core.slots import SLOT_TTL_S
from tests.helpers.processes import Spawner
from tests.integration.test_crash import counts, submit_chats

SLOW = {
    "name": "slow",
    "provider": "echo",
    "batching": {"max_batch_size": 1, "max_concurrency": 1, "max_wait_ms": 0},
    "options": {"latency_ms": 4000},
}


def holders(spawner: Spawner, db: Path) -> list[str]:
    rows = spawner.read_db(db, "SELECT holder FROM slots WHERE name = 'model:slow'")
    return [str(h) for (h,) in rows]


def held_by(spawner: Spawner, db: Path, pid: int) -> bool:
    return any(f":{pid}:" in h for h in holders(spawner, db))


def test_a_killed_workers_slot_goes_to_another_worker_within_seconds(spawner: Spawner) -> None:
    api = spawner.server([SLOW], command="api")
    submit_chats(api.url, "slow", [f"slot test {i}" for i in range(6)])
    first = spawner.worker(api.db, api.config)
    spawner.wait_until(
        lambda: held_by(spawner, api.db, first.pid) and counts(spawner, api.db).get("running"),
        timeout=30,
        what="the first worker to hold the slot and run a batch",
    )
    second = spawner.worker(api.db, api.config)
    time.sleep(3)  # the second worker starts and polls for the slot, the first one still holds it
    spawner.wait_until(
        lambda: held_by(spawner, api.db, first.pid) and counts(spawner, api.db).get("running"),
        timeout=15,
        what="the first worker to hold the slot again",
    )
    first.kill()  # SIGKILL: no release; its slot and its job's lease are left behind
    killed = time.monotonic()
    spawner.wait_until(
        lambda: held_by(spawner, api.db, second.pid),
        timeout=15,
        what="the second worker to take the slot",
    )
    waited = time.monotonic() - killed
    assert waited <= SLOT_TTL_S + 2.0, f"the slot came free {waited:.1f} s after the kill"
    assert second.alive, second.report()
