"""The KeyValue role's contract: small values by namespace and key (API keys, breakers)."""

from __future__ import annotations

from collections.abc import Callable

from genspool.core.queue import Queue


async def test_kv_round_trip(queue: Queue) -> None:
    kv = queue.storage.kv
    assert await kv.kv_get("keys", "k1") is None
    await kv.kv_put("keys", "k1", b'{"tenant": "a"}')
    await kv.kv_put("keys", "k2", b"\x00\xff")
    await kv.kv_put("other", "k1", b"x")
    await kv.kv_put("keys", "k2", b"two")
    assert await kv.kv_get("keys", "k1") == b'{"tenant": "a"}'
    assert await kv.kv_list("keys") == {"k1": b'{"tenant": "a"}', "k2": b"two"}
    assert await kv.kv_delete("keys", "k1") and not await kv.kv_delete("keys", "k1")
    assert await kv.kv_list("keys") == {"k2": b"two"}


async def test_kv_is_shared_between_connections(make_queue: Callable[..., Queue]) -> None:
    a, b = make_queue(), make_queue()
    async with a, b:
        await a.storage.kv.kv_put("breakers", "m", b"open")
        assert await b.storage.kv.kv_get("breakers", "m") == b"open"
        assert await b.storage.kv.kv_delete("breakers", "m")
        assert await a.storage.kv.kv_get("breakers", "m") is None
