"""The RouteStore role's contract: fan-out routes by name, and the revision API processes poll
to know when to read them again (it must move with every write, in every process, and never go
back)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from genspool.core.queue import Queue

#: Names kept exactly as given: unicode, slashes, NATS wildcards, dots, spaces, escapes.
NAMES = ["orders", "orders/eu/ünïcødé 🚀", "a/b", "a.b", "*", ">", "with space", "%2F", "K"]
#: 64 KiB holding every byte value, NUL included.
BIG = bytes(range(256)) * 256


async def test_round_trip_replace_delete(queue: Queue) -> None:
    routes = queue.storage.routes
    assert await routes.route_get("r1") is None
    assert await routes.route_list() == {}
    await routes.route_put("r1", b'{"targets": ["a"]}')
    await routes.route_put("r2", b"two")
    assert await routes.route_get("r1") == b'{"targets": ["a"]}'
    await routes.route_put("r1", b"replaced")
    assert await routes.route_get("r1") == b"replaced"
    assert await routes.route_list() == {"r1": b"replaced", "r2": b"two"}
    assert await routes.route_delete("r1")
    assert not await routes.route_delete("r1")
    assert await routes.route_get("r1") is None
    assert await routes.route_list() == {"r2": b"two"}


async def test_routes_live_with_the_store(queue: Queue) -> None:
    """In a split deployment the routes are the store's, like API keys."""
    assert queue.storage.routes is queue.storage.store  # type: ignore[comparison-overlap]


async def test_revision_moves_with_every_write(queue: Queue) -> None:
    routes = queue.storage.routes
    start = await routes.routes_revision()
    assert start >= 0
    first = await routes.route_put("r", b"1")
    assert first > start and await routes.routes_revision() == first
    second = await routes.route_put("r", b"2")  # a replace is a write
    assert second > first and await routes.routes_revision() == second
    assert await routes.route_delete("r")
    third = await routes.routes_revision()
    assert third > second
    assert not await routes.route_delete("r")  # nothing removed: nothing to reload
    assert await routes.routes_revision() == third


async def test_revision_and_routes_are_shared(make_queue: Callable[..., Queue]) -> None:
    a, b = make_queue(), make_queue()
    async with a, b:
        ra, rb = a.storage.routes, b.storage.routes
        seen = await rb.routes_revision()
        written = await ra.route_put("shared", b"doc")
        assert written > seen
        assert await rb.routes_revision() == written
        assert await rb.route_list() == {"shared": b"doc"}
        assert await rb.route_delete("shared")
        assert await ra.routes_revision() > written
        assert await ra.route_get("shared") is None


async def test_concurrent_writers_get_distinct_revisions(
    make_queue: Callable[..., Queue],
) -> None:
    a, b = make_queue(), make_queue()
    async with a, b:
        puts = [
            side.storage.routes.route_put(f"r{i % 3}", str(i).encode())
            for i in range(12)
            for side in (a, b)
        ]
        revisions = await asyncio.gather(*puts)
        assert len(set(revisions)) == len(revisions)
        assert await b.storage.routes.routes_revision() == max(revisions)
        assert set(await a.storage.routes.route_list()) == {"r0", "r1", "r2"}


async def test_names_are_kept_exactly(queue: Queue) -> None:
    routes = queue.storage.routes
    for i, name in enumerate(NAMES):
        await routes.route_put(name, f"doc {i}".encode())
    assert await routes.route_list() == {name: f"doc {i}".encode() for i, name in enumerate(NAMES)}
    for i, name in enumerate(NAMES):
        assert await routes.route_get(name) == f"doc {i}".encode()
    assert await routes.route_get("k") is None  # names are case-sensitive
    assert await routes.route_get("orders/eu") is None  # not a prefix match
    assert await routes.route_delete("a/b")
    assert await routes.route_get("a.b") == f"doc {NAMES.index('a.b')}".encode()


async def test_a_64_kib_document_round_trips(queue: Queue) -> None:
    routes = queue.storage.routes
    await routes.route_put("big", BIG)
    assert await routes.route_get("big") == BIG
    assert await routes.route_list() == {"big": BIG}


async def test_destroy_empties_the_routes_and_moves_the_revision_on(queue: Queue) -> None:
    """A process polling the revision across a destroy (tests sharing a store) reloads."""
    before = await queue.storage.routes.route_put("r", b"doc")
    await queue.storage.destroy()
    assert await queue.storage.routes.route_list() == {}
    assert await queue.storage.routes.routes_revision() > before
    assert await queue.storage.routes.route_put("r", b"again") > before
