"""The backends the contract suite runs on. Each is a real server or file; a server that is not
running skips its tests outside CI (saying which URL it tried) and fails them in CI."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from genspool.backends import backend_from_url
from genspool.core.queue import Queue
from genspool.core.retry import RetryPolicy

BACKENDS: dict[str, Callable[[Path], str]] = {
    "sqlite": lambda tmp: f"sqlite:///{tmp}/contract.db",
}


@pytest.fixture(params=sorted(BACKENDS))
def backend_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return BACKENDS[request.param](tmp_path)


@pytest.fixture
def make_queue(backend_url: str) -> Callable[..., Queue]:
    def make(**kwargs: object) -> Queue:
        kwargs.setdefault("retry", RetryPolicy(base_s=0.05, cap_s=0.2))
        return Queue(backend_from_url(backend_url), **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
async def queue(make_queue: Callable[..., Queue]) -> AsyncIterator[Queue]:
    q = make_queue(lease_s=30.0)
    try:
        await q.connect()
    except Exception as exc:
        if os.environ.get("CI") == "true":
            raise
        pytest.skip(f"backend unavailable: {exc}")
    yield q
    await q.close()
