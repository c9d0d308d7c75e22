"""The routes of the NATS backend: the KV bucket ``<prefix>_routes``, one key per route (its
name as a token, :func:`~genspool.backends.nats._codec.token`), the document as the value.

The revision of the set is the bucket's stream sequence: every put and every delete marker is a
message, numbered by the server as it is stored, so the revision grows with each write, in
every process, atomically with the write it counts, and costs no counter of its own. A delete
is a delete marker (not a purge, which stores nothing and would leave the revision where it
was), written only when the route exists, under its revision (compare-and-set).
"""

from __future__ import annotations

import nats.js.errors

from genspool.backends.nats._client import Conn, call
from genspool.backends.nats._codec import token, untoken
from genspool.backends.nats._records import CAS_TRIES
from genspool.core.roles import RouteStore
from genspool.exceptions import BackendError

__all__ = ["NatsRoutes"]

#: A key no route has (a route's key is a token, which starts with "k"): ``clear`` deletes it
#: to move the revision on.
_CLEARED = "cleared"
#: The server's codes for a write whose expected last sequence did not hold.
_WRONG_LAST = frozenset({10071, 10164})


class NatsRoutes(RouteStore):
    """The :class:`RouteStore` role of :class:`~genspool.backends.nats.NatsBackend`."""

    _conn: Conn

    @call("route_put")
    async def route_put(self, name: str, doc: bytes) -> int:
        return await self._conn.bucket("routes").put(token(name), doc)

    @call("route_get")
    async def route_get(self, name: str) -> bytes | None:
        try:
            entry = await self._conn.bucket("routes").get(token(name))
        except nats.js.errors.KeyNotFoundError:  # deleted ones too
            return None
        return entry.value or b""

    @call("route_list")
    async def route_list(self) -> dict[str, bytes]:
        entries = await self._conn.scan("routes", ">", keys_only=False)
        found = {untoken(e.key): e.value or b"" for e in entries if e.key != _CLEARED}
        return dict(sorted(found.items()))

    @call("route_delete")
    async def route_delete(self, name: str) -> bool:
        kv, key = self._conn.bucket("routes"), token(name)
        for _ in range(CAS_TRIES):
            try:
                entry = await kv.get(key)
            except nats.js.errors.KeyNotFoundError:
                return False
            try:
                await kv.delete(key, last=entry.revision)
                return True
            except nats.js.errors.APIError as exc:
                if exc.err_code not in _WRONG_LAST:
                    raise
                # Written again since the read: read it again.
        raise BackendError(f"route {name!r} kept changing under concurrent writers; try again")

    @call("routes_revision")
    async def routes_revision(self) -> int:
        info = await self._conn.jet().stream_info(f"KV_{self._conn.buckets['routes']}")
        return int(info.state.last_seq)

    async def _clear_routes(self) -> None:
        """Delete every route and move the revision on (a purge keeps the stream's sequence,
        and the delete marker after it adds one)."""
        await self._conn.jet().purge_stream(f"KV_{self._conn.buckets['routes']}")
        await self._conn.bucket("routes").delete(_CLEARED)
