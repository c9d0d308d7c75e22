"""What the backends' DriftSamples roles share: the mixin that fills the role from a process's
memory (the memory backend). The SQL backends keep a sample as one row of plain columns (the
embedding as float32 bytes): a report reads tens of thousands of them, so nothing is parsed."""

from __future__ import annotations

from collections.abc import Sequence

from genspool.core.roles import DriftSample, DriftSamples

__all__ = ["MemoryDrift"]


class MemoryDrift(DriftSamples):
    """Mixed into :class:`~genspool.backends.memory.MemoryBackend`: samples by id in a dict of
    the backend's shared state (``_drift``)."""

    _drift: dict[str, DriftSample]

    async def drift_put(self, samples: Sequence[DriftSample]) -> int:
        new = [s for s in samples if s.id not in self._drift]
        for s in new:
            self._drift.setdefault(s.id, s)
        return len({s.id for s in new})

    async def drift_list(
        self, model: str, start: float, end: float, limit: int
    ) -> list[DriftSample]:
        found = [s for s in self._drift.values() if s.model == model and start <= s.at < end]
        return sorted(found, key=lambda s: (s.at, s.id), reverse=True)[:limit]

    async def drift_models(self) -> list[str]:
        return sorted({s.model for s in self._drift.values()})

    async def drift_purge(self, before: float) -> int:
        old = [k for k, s in self._drift.items() if s.at < before]
        for k in old:
            del self._drift[k]
        return len(old)
