"""The DriftSamples role's contract on every backend kind that keeps samples (memory, SQLite,
PostgreSQL, and a Redis or NATS queue beside a PostgreSQL store): samples back whole with their
embedding bytes, windows half-open and newest first, a sample stored once, purges by age. (A
Redis or NATS server alone keeps none: its Storage has no drift role.)"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest

from genspool.core.queue import Queue
from genspool.core.roles import DriftSample, DriftSamples
from tests.helpers.backends import BACKENDS, kind_url

KINDS = [k for k in BACKENDS if k not in ("redis", "nats")]


@pytest.fixture(params=KINDS)
def backend_url(request: pytest.FixtureRequest, namespaced_url: Callable[[str], str]) -> str:
    return kind_url(request.param, namespaced_url)


def sample(i: int, model: str = "m", at: float | None = None) -> DriftSample:
    vector = np.arange(384, dtype=np.float32) * (i + 1) / 1000
    return DriftSample(
        f"job_{i:04d}", model, 1000.0 + i if at is None else at, 10 + i, 200 + i,
        "all-minilm-l6-v2", vector.tobytes(), "acme",
    )  # fmt: skip


def samples_of(queue: Queue) -> DriftSamples:
    store = queue.storage.drift
    assert store is not None
    return store


async def test_samples_come_back_whole_by_model_and_window(queue: Queue) -> None:
    store = samples_of(queue)
    made = [sample(i) for i in range(10)] + [sample(50, model="other")]
    assert await store.drift_put(made) == 11
    got = await store.drift_list("m", 1002.0, 1007.0, limit=100)
    assert got == [sample(i) for i in (6, 5, 4, 3, 2)]  # start included, end not, newest first
    vector = np.frombuffer(got[0].embedding, dtype=np.float32)
    assert np.array_equal(vector, np.arange(384, dtype=np.float32) * 7 / 1000)
    assert await store.drift_list("m", 0, 2000, limit=3) == [sample(i) for i in (9, 8, 7)]
    assert await store.drift_list("nobody", 0, 2000, limit=3) == []
    assert await store.drift_models() == ["m", "other"]


async def test_a_sample_is_stored_once(queue: Queue) -> None:
    store = samples_of(queue)
    assert await store.drift_put([sample(1), sample(2)]) == 2
    again = dataclasses.replace(sample(1), output_chars=9999)  # the same id: kept as stored
    assert await store.drift_put([again, sample(3), sample(3)]) == 1
    assert await store.drift_list("m", 0, 2000, limit=10) == [sample(3), sample(2), sample(1)]
    assert await store.drift_put([]) == 0


async def test_purge_removes_samples_older_than_a_time(queue: Queue) -> None:
    store = samples_of(queue)
    await store.drift_put([sample(i) for i in range(6)] + [sample(9, model="other", at=1001.5)])
    assert await store.drift_purge(1002.0) == 3  # 1000, 1001 of m and 1001.5 of other
    assert [s.id for s in await store.drift_list("m", 0, 2000, 10)] == [
        "job_0005", "job_0004", "job_0003", "job_0002",
    ]  # fmt: skip
    assert await store.drift_models() == ["m"]
    assert await store.drift_purge(0) == 0


async def test_a_window_holds_thousands_of_samples(queue: Queue) -> None:
    store = samples_of(queue)
    await store.drift_put([sample(i, at=5000.0 + i / 10) for i in range(3000)])
    got = await store.drift_list("m", 5000.0, 6000.0, limit=2500)
    assert len(got) == 2500 and got[0].id == "job_2999" and got[-1].id == "job_0500"
