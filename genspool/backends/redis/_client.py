"""The connection of the Redis backend: one redis-py client (a connection pool, hiredis), the
Lua scripts registered on it, and the key prefix every key and channel starts with.

Driver errors pass through unchanged; the backend's methods translate them (``_errors``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.commands.core import AsyncScript

from genspool.backends._urls import shown_url
from genspool.core.job import WAITING
from genspool.exceptions import BackendError

__all__ = ["SCRIPTS", "RedisClient", "parse_url"]

SCRIPTS = (
    "enqueue", "lease", "extend", "apply", "put", "range", "purge", "list", "acquire_slot",
    "reserve", "copied", "route_put", "route_delete",
)  # fmt: skip
#: The header's statuses in which a job waits to be leased (ARGV[2], see ``lua/_lib.lua``).
WAITING_ARG = " ".join(sorted(s.value for s in WAITING))
_PREFIX = re.compile(r"[A-Za-z0-9_.\-]+")


def _load_scripts() -> dict[str, str]:
    root = resources.files("genspool.backends") / "lua"
    lib = (root / "_lib.lua").read_text()
    return {name: f"{lib}\n{(root / f'{name}.lua').read_text()}" for name in SCRIPTS}


def parse_url(url: str) -> tuple[str, str]:
    """``(url for redis-py, prefix)`` from ``redis://[user:password@]host:port/db?prefix=name``
    (or ``rediss://``); the other query parameters stay for redis-py."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    prefix = next((v for k, v in query if k == "prefix"), "genspool") or "genspool"
    rest = urlencode([(k, v) for k, v in query if k != "prefix"])
    if parts.scheme in ("redis", "rediss") and not re.fullmatch(r"/?\d*", parts.path):
        # redis-py would quietly use database 0 for a path that is not a number
        raise BackendError(
            f"invalid Redis URL {shown_url(url)}: the path must be a database number, like /0"
        )
    return urlunsplit(parts._replace(query=rest)), prefix


class RedisClient:
    def __init__(self, url: str, prefix: str) -> None:
        if not _PREFIX.fullmatch(prefix):
            # No ':' (one prefix must not contain another's keys) and no glob characters
            # (destroy finds the keys with SCAN MATCH).
            raise BackendError(f"Redis prefix {prefix!r} must be letters, digits, '_', '.', '-'")
        self.url, self.prefix = url, prefix
        self.shown_url = shown_url(f"{url}{'&' if '?' in url else '?'}prefix={prefix}")
        self._client: redis.asyncio.Redis | None = None
        self._scripts: dict[str, AsyncScript] = {}

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def connect(self) -> None:
        if self._client is not None:
            return
        client = redis.asyncio.Redis.from_url(
            self.url,
            socket_connect_timeout=5.0,
            socket_timeout=5.0,  # and each call is bounded by the backend's call_timeout_s
            socket_keepalive=True,
            health_check_interval=15,
            # A few quick retries ride out a dropped connection; a server that stays down
            # fails the call within about a second, as BackendError, and the caller retries.
            retry=Retry(ExponentialWithJitterBackoff(cap=0.5, base=0.05), 2),
        )
        try:
            await client.ping()
        except BaseException:
            await client.aclose()
            raise
        self._scripts = {name: client.register_script(src) for name, src in _load_scripts().items()}
        self._client = client

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    @property
    def r(self) -> redis.asyncio.Redis:
        if self._client is None:
            raise BackendError(f"Redis backend {self.shown_url} is not connected")
        return self._client

    def key(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    async def run(
        self, script: str, args: Sequence[str | bytes | int], waiting: str = WAITING_ARG
    ) -> Any:
        """Run ``script`` (EVALSHA, loaded again on NOSCRIPT) after the common header."""
        client = self.r
        return await self._scripts[script](args=[self.prefix, waiting, *args], client=client)

    async def delete_all(self) -> None:
        """SCAN + UNLINK of this prefix's keys only: other applications may share the
        database."""
        cursor = 0
        while True:
            cursor, keys = await self.r.scan(cursor, match=self.key("*"), count=1000)
            if keys:
                await self.r.unlink(*keys)
            if cursor == 0:
                break
