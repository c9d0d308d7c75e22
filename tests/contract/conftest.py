"""The backends the contract suite runs on. Each is a real server or file; a server that is not
running skips its tests outside CI (saying which URL it tried) and fails them in CI.

Every test gets a namespace of its own on the shared servers (a PostgreSQL schema, a Redis key
prefix, NATS stream and bucket names), dropped when it ends. The server URLs can be changed
with ``GENSPOOL_TEST_POSTGRES_URL``, ``GENSPOOL_TEST_REDIS_URL`` and ``GENSPOOL_TEST_NATS_URL``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from genspool.backends import backend_from_url
from genspool.core.queue import Queue
from genspool.core.retry import RetryPolicy

SERVERS = {
    "postgres": os.environ.get(
        "GENSPOOL_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
    ),
    "redis": os.environ.get("GENSPOOL_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "nats": os.environ.get("GENSPOOL_TEST_NATS_URL", "nats://127.0.0.1:4222"),
}
NAMESPACE_PARAM = {"postgres": "schema", "redis": "prefix", "nats": "prefix"}
BACKENDS = ["sqlite", *SERVERS]


def namespaced_url(kind: str, tmp: Path) -> str:
    """A URL of backend ``kind`` whose data no other test sees."""
    if kind == "sqlite":
        return f"sqlite:///{tmp}/contract.db"
    name = f"gs_{uuid.uuid4().hex[:10]}"
    return f"{SERVERS[kind]}?{NAMESPACE_PARAM[kind]}={name}"


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return namespaced_url(request.param, tmp_path)


@pytest.fixture
def make_queue(backend_url: str) -> Callable[..., Queue]:
    def make(**kwargs: object) -> Queue:
        kwargs.setdefault("retry", RetryPolicy(base_s=0.05, cap_s=0.2))
        return Queue(backend_from_url(backend_url), **kwargs)  # type: ignore[arg-type]

    return make


async def _reachable(q: Queue, url: str) -> None:
    try:
        await q.connect()
    except Exception as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"backend unavailable at {url}: {exc}")


@pytest.fixture
async def queue(make_queue: Callable[..., Queue], backend_url: str) -> AsyncIterator[Queue]:
    q = make_queue(lease_s=30.0)
    await _reachable(q, backend_url)
    yield q
    await q.close()


@pytest.fixture(autouse=True)
async def _drop_namespace(backend_url: str) -> AsyncIterator[None]:
    """Check the server once up front, and drop the test's namespace afterwards."""
    probe = Queue(backend_from_url(backend_url))
    await _reachable(probe, backend_url)
    try:
        yield
    finally:
        await probe.backend.destroy()
        await probe.close()
