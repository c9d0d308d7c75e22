"""What the layers need from storage, and a process-local stand-in for when there is none.

The rate limiter needs a GCRA bucket shared by every process (the ``reserve`` of
:class:`~genspool.core.roles.Coordination`); the breaker writes its state to a
:class:`~genspool.core.roles.KeyValue` so any API process can show it. :class:`Shared` names
the two; without storage (a registry used on its own, a unit test), :meth:`Shared.local` keeps
both in this process only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from genspool.core.gcra import gcra

__all__ = ["Limits", "LocalShared", "Records", "Shared"]


class Limits(Protocol):
    async def reserve(
        self, key: str, cost: float, rate_per_s: float, burst: float, now: float
    ) -> float: ...


class Records(Protocol):
    async def kv_put(self, namespace: str, key: str, value: bytes) -> None: ...

    async def kv_get(self, namespace: str, key: str) -> bytes | None: ...

    async def kv_list(self, namespace: str) -> dict[str, bytes]: ...


@dataclass(frozen=True, slots=True)
class Shared:
    limits: Limits
    kv: Records

    @classmethod
    def local(cls) -> Shared:
        here = LocalShared()
        return cls(here, here)


class LocalShared:
    """Rate-limit buckets and a small key-value store in this process's memory."""

    def __init__(self) -> None:
        self._tats: dict[str, float] = {}
        self._kv: dict[tuple[str, str], bytes] = {}

    async def reserve(
        self, key: str, cost: float, rate_per_s: float, burst: float, now: float
    ) -> float:
        tat, wait = gcra(self._tats.get(key), now, cost, rate_per_s, burst)
        if wait == 0.0:
            self._tats[key] = tat
        return wait

    async def kv_put(self, namespace: str, key: str, value: bytes) -> None:
        self._kv[namespace, key] = value

    async def kv_get(self, namespace: str, key: str) -> bytes | None:
        return self._kv.get((namespace, key))

    async def kv_list(self, namespace: str) -> dict[str, bytes]:
        return {k: v for (ns, k), v in self._kv.items() if ns == namespace}
