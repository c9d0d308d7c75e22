"""A process's share of a model's max_concurrency, on the in-memory backend."""

from __future__ import annotations

import asyncio
from pathlib import Path

from genspool.backends.memory import MemoryBackend
from genspool.core.slots import Slots


async def test_held_slots_are_reused_and_given_back_for_others(tmp_path: Path) -> None:
    backend = MemoryBackend()
    await backend.connect()
    a = Slots(backend, "m", 2, owner="a", ttl_s=30, hold_s=0.2, cool_s=0.2)
    b = Slots(backend, "m", 2, owner="b", ttl_s=30, hold_s=0.2, cool_s=0.2)
    first, second = await a.take(), await a.take()
    assert first and second and await b.take() is None  # a holds both
    await a.put(second, worked=True)
    assert await a.take() == second  # reused without asking the backend
    await asyncio.sleep(0.25)
    await a.put(second, worked=True)  # held past hold_s: given back, and a cools off
    assert await a.take() is None
    assert await b.take() is not None  # so another process gets its turn
    await a.put(first, worked=False)  # no work found: given back at once
    assert await b.take() is not None and await b.take() is None
    await a.put(first, worked=True)  # already given back: nothing happens
    await b.release_all()
    assert await a.take() is not None
    await backend.close()
