"""Model-based test: random sequences of queue operations on a backend and on the in-memory
reference, which must agree after every step.

Hypothesis drives submit / lease / complete / fail / release / stale-worker complete / cancel /
replay / time passing with maintenance (lease expiry, expiry, purge) through two
:class:`~genspool.core.queue.Queue` facades over the same clock: one on the backend under test,
one on ``memory://``. After each step every job known to the test must look the same on both
(status, attempts, result, error, expires_at, worker, the history but for its times), or be
gone on both. Everything the rules depend on is deterministic: one tenant (fair-share ranks
are then sequential), retry delays from ``Retry-After`` with no jitter, and the clock moves
only when a rule says so (real time passing between two calls is far below the steps the rules
take).
"""

from __future__ import annotations

import asyncio
import copy
import os
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from genspool.backends.memory import MemoryBackend
from genspool.core.job import Job
from genspool.core.queue import Queue
from genspool.core.retry import RetryPolicy
from genspool.exceptions import Conflict, ModelError, NotFound
from tests.helpers.backends import BACKENDS, kind_url, open_backend

T = TypeVar("T")

EXAMPLES = int(os.environ.get("GENSPOOL_MODEL_EXAMPLES", "200"))
STEPS = 12
RETRY_AFTER_S = 5.0
LEASE_S, TTL_S = 30.0, 50.0


class Clock:
    """Real time plus an offset that rules move forward."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset


class Pair:
    """The queue under test and the reference, on one loop and one clock."""

    def __init__(self, url: str) -> None:
        self.runner = asyncio.Runner()
        self.clock = Clock()
        retry = RetryPolicy(base_s=0.0, cap_s=0.0)
        opts: dict[str, Any] = {
            "retry": retry,
            "lease_s": LEASE_S,
            "result_ttl_s": TTL_S,
            "clock": self.clock,
        }
        self.subject = Queue(open_backend(url), **opts)
        self.reference = Queue(MemoryBackend(), **opts)
        self.run(self.subject.connect())
        self.run(self.reference.connect())

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.runner.run(coro)

    def both(self, call: Callable[[Queue], Coroutine[Any, Any, T]]) -> tuple[T, T]:
        return self.run(call(self.subject)), self.run(call(self.reference))

    def reset(self) -> None:
        self.run(self.subject.storage.destroy())
        self.run(self.reference.storage.destroy())
        self.subject.fair = type(self.subject.fair)(self.subject.storage.kv)
        self.reference.fair = type(self.reference.fair)(self.reference.storage.kv)

    def close(self) -> None:
        self.run(self.subject.close())
        self.run(self.reference.close())
        self.runner.close()


def outcome(call: Callable[[], Coroutine[Any, Any, Job]], pair: Pair) -> str:
    """What a cancel or replay came to, comparable across backends."""
    try:
        job = pair.run(call())
    except Conflict:
        return "conflict"
    except NotFound:  # purged after its TTL
        return "not_found"
    return job.status.value


class QueueModel(RuleBasedStateMachine):
    pair: Pair  # set by the test before it runs the machine
    counts: dict[str, int]  # sequences and steps run, set by the test

    @initialize()
    def start(self) -> None:
        self.counts["sequences"] += 1
        self.pair.reset()
        self.ids: list[str] = []
        self.held: list[tuple[Job, Job]] = []  # leased copies (subject, reference)
        self.stale: list[tuple[Job, Job]] = []  # snapshots of earlier leases
        self.n = 0

    def _take_held(self, i: int) -> tuple[Job, Job]:
        pair = self.held.pop(i % len(self.held))
        self.stale.append((copy.copy(pair[0]), copy.copy(pair[1])))
        return pair

    @rule(priority=st.integers(0, 2), expires=st.booleans(), attempts=st.integers(1, 3))
    def submit(self, priority: int, expires: bool, attempts: int) -> None:
        self.n += 1
        now = self.pair.clock()
        job = Job(
            url="/v1/chat/completions",
            body={"model": "m", "messages": [{"role": "user", "content": f"#{self.n}"}]},
            model="m",
            tenant="t",
            priority=priority,
            max_attempts=attempts,
            created_at=now,
            expires_at=now + 5.0 if expires else None,
        )
        a, b = self.pair.both(lambda q: q.submit(copy.copy(job)))
        assert a.id == b.id == job.id
        self.ids.append(job.id)

    @rule(limit=st.integers(1, 3))
    def lease(self, limit: int) -> None:
        a, b = self.pair.both(lambda q: q.lease("m", limit, worker=f"w{self.n}"))
        for _ in range(20):  # NATS: a lane's first fetch may come back empty (see its module)
            if len(a) >= len(b) or not self.pair.subject.storage.signals.cross_process_events:
                break
            self.pair.run(asyncio.sleep(0.05))
            a += self.pair.run(self.pair.subject.lease("m", len(b) - len(a), worker=f"w{self.n}"))
        assert [j.id for j in a] == [j.id for j in b]
        self.held += list(zip(a, b, strict=True))

    @rule(i=st.integers(0, 50))
    def complete(self, i: int) -> None:
        if self.held:
            a, b = self._take_held(i)
            result = {"status_code": 200, "body": {"n": i}}
            done_a = self.pair.run(self.pair.subject.complete([(a, result)]))
            done_b = self.pair.run(self.pair.reference.complete([(b, result)]))
            assert [j.id for j in done_a] == [j.id for j in done_b]

    @rule(i=st.integers(0, 50), retryable=st.booleans())
    def fail(self, i: int, retryable: bool) -> None:
        if self.held:
            a, b = self._take_held(i)
            error = ModelError("boom", retryable=retryable, retry_after=RETRY_AFTER_S)
            done_a = self.pair.run(self.pair.subject.fail([(a, error)]))
            done_b = self.pair.run(self.pair.reference.fail([(b, error)]))
            assert [j.id for j in done_a] == [j.id for j in done_b]

    @rule(i=st.integers(0, 50))
    def release(self, i: int) -> None:
        if self.held:
            a, b = self._take_held(i)
            done_a = self.pair.run(self.pair.subject.release([a]))
            done_b = self.pair.run(self.pair.reference.release([b]))
            assert [j.id for j in done_a] == [j.id for j in done_b]

    @rule(i=st.integers(0, 50))
    def stale_worker_completes(self, i: int) -> None:
        """A worker reports a job with a lease it held once: fenced unless it still holds it."""
        if self.stale:
            a, b = self.stale[i % len(self.stale)]
            result = {"status_code": 200, "body": {"stale": True}}
            done_a = self.pair.run(self.pair.subject.complete([(copy.copy(a), result)]))
            done_b = self.pair.run(self.pair.reference.complete([(copy.copy(b), result)]))
            assert [j.id for j in done_a] == [j.id for j in done_b]

    @rule(i=st.integers(0, 50))
    def cancel(self, i: int) -> None:
        if self.ids:
            job_id = self.ids[i % len(self.ids)]
            a = outcome(lambda: self.pair.subject.cancel(job_id), self.pair)
            b = outcome(lambda: self.pair.reference.cancel(job_id), self.pair)
            assert a == b

    @rule(i=st.integers(0, 50))
    def replay(self, i: int) -> None:
        if self.ids:
            job_id = self.ids[i % len(self.ids)]
            a = outcome(lambda: self.pair.subject.replay(job_id), self.pair)
            b = outcome(lambda: self.pair.reference.replay(job_id), self.pair)
            assert a == b

    @rule(seconds=st.sampled_from([0.0, 10.0, 40.0, 100.0]))
    def time_passes(self, seconds: float) -> None:
        """The clock moves on and both queues run their upkeep: expiry, dead workers' leases
        taken back, results past their TTL purged."""
        self.pair.clock.offset += seconds
        a, b = self.pair.both(lambda q: q.maintain())
        assert a == b

    @invariant()
    def agree(self) -> None:
        self.counts["checks"] += 1
        if not getattr(self, "ids", None):
            return
        a, b = self.pair.both(lambda q: q.get_many(self.ids))
        assert {j.id: seen(j) for j in a} == {j.id: seen(j) for j in b}


def seen(job: Job) -> tuple[Any, ...]:
    """What must agree of a job: its state, and its history but for the times (each queue
    reads the clock at its own moment)."""
    history = [(h["attempt"], h["worker"], h["outcome"], h["error"]) for h in job.history]
    return (job.status, job.attempts, job.result, job.error, job.expires_at, job.worker, history)


@pytest.fixture(params=[kind for kind in BACKENDS if kind != "memory"])  # memory: the reference
def backend_url(request: pytest.FixtureRequest, namespaced_url: Callable[[str], str]) -> str:
    return kind_url(request.param, namespaced_url)


@pytest.mark.timeout(900)
def test_backend_agrees_with_the_memory_reference(backend_url: str) -> None:
    pair = Pair(backend_url)
    try:
        QueueModel.pair = pair
        QueueModel.counts = counts = {"sequences": 0, "checks": 0}
        options = settings(
            max_examples=EXAMPLES,
            stateful_step_count=STEPS,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            database=None,
        )
        run_state_machine_as_test(QueueModel, settings=options)
        assert counts["sequences"] >= EXAMPLES, counts
        print(f"{counts['sequences']} sequences, {counts['checks']} agreement checks")
    finally:
        pair.close()
