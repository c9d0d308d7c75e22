"""The backends the contract suite runs on. Each is a real server or file; a server that is not
running skips its tests outside CI (saying which URL it tried) and fails them in CI.

Every test gets a namespace of its own on the shared servers (the ``namespaced_url`` fixture of
``tests/conftest.py``), dropped when it ends; the kinds are those of
:mod:`tests.helpers.backends`. The restart tests override ``backend_url`` with a namespace on a
server of the session's own (``private_*``), as they take their server down.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable

import pytest

from genspool.core.queue import Queue
from genspool.core.retry import RetryPolicy
from tests.helpers.backends import BACKENDS, kind_url, open_backend


@pytest.fixture(params=BACKENDS)
def backend_url(request: pytest.FixtureRequest, namespaced_url: Callable[[str], str]) -> str:
    return kind_url(request.param, namespaced_url)


@pytest.fixture
def make_queue(backend_url: str) -> Callable[..., Queue]:
    def make(**kwargs: object) -> Queue:
        kwargs.setdefault("retry", RetryPolicy(base_s=0.05, cap_s=0.2))
        return Queue(open_backend(backend_url), **kwargs)  # type: ignore[arg-type]

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
    probe = Queue(open_backend(backend_url))
    await _reachable(probe, backend_url)
    try:
        yield
    finally:
        try:
            await probe.storage.drop()
        finally:
            await probe.close()
