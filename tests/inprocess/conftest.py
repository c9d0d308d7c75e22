"""Fixtures of the in-process API tests (helpers: :mod:`tests.helpers.api`)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from genspool.testing.inprocess import InProcess, serve
from tests.helpers.api import FAST_RETRY, MODELS, Keys, make_keys


@pytest.fixture
async def gs() -> AsyncIterator[InProcess]:
    """The API with a worker, over a fresh ``memory://`` store; no key exists (auth is off)."""
    async with serve(MODELS, worker=True, retry=FAST_RETRY, key_cache_s=0.0) as running:
        yield running


@pytest.fixture
async def keys(gs: InProcess) -> Keys:
    """One key per scope and tenant on ``gs`` (so auth is on)."""
    return await make_keys(gs.services.keys)
