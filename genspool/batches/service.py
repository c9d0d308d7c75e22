"""Batches: what the Batch API does (create, read, list, cancel), over a
:class:`~genspool.core.roles.BatchStore`, and the :class:`~genspool.batches.runner.BatchRunner`
that drives them. Creating checks what can be checked at once (the input file, the endpoint,
the window) and answers ``validating``; the lines are checked by the runner, which fails the
batch with every wrong line's number (the API never waits on a file's size).

``completion_window`` takes OpenAI's ``24h`` and any other whole number of seconds, minutes,
hours or days from ``1s`` to ``30d`` (``60s``, ``1h``, ``7d``): past it, lines not yet run end
as ``batch_expired``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from genspool.batches import machine
from genspool.batches.lines import RequestCheck
from genspool.batches.runner import BatchRunner
from genspool.config import INTERNAL_MODELS
from genspool.core.batch import Batch, new_batch_id
from genspool.core.prompts import Prompts
from genspool.core.queue import Queue
from genspool.core.roles import BatchFilter, BatchStore
from genspool.exceptions import Conflict, InvalidRequest, NotFound
from genspool.files import Files
from genspool.runtime.catalog import ModelCatalog

__all__ = ["MAX_LIST_LIMIT", "BatchPage", "Batches", "parse_window"]

MAX_LIST_LIMIT = 100
_WINDOW = re.compile(r"([1-9][0-9]{0,7})([smhd])")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86_400}
MAX_WINDOW_S = 30 * 86_400


def parse_window(text: str) -> float:
    """Seconds of a ``completion_window`` (``24h``, ``60s``, ``7d``)."""
    found = _WINDOW.fullmatch(text)
    seconds = int(found[1]) * _UNIT_S[found[2]] if found else 0
    if not 1 <= seconds <= MAX_WINDOW_S:
        raise InvalidRequest(
            f"completion_window: {text!r} is not a duration from 1s to 30d; write a whole"
            " number and s, m, h or d (OpenAI's 24h, or 60s, 1h, 7d)",
            param="completion_window",
        )
    return float(seconds)


@dataclass(frozen=True, slots=True)
class BatchPage:
    data: list[Batch]
    has_more: bool


class Batches:
    #: How often a cancel is decided again when the runner wrote the record meanwhile.
    CANCEL_TRIES = 20

    def __init__(
        self,
        store: BatchStore,
        files: Files,
        queue: Queue,
        catalog: ModelCatalog,
        check: RequestCheck,
        *,
        max_line_bytes: int,
        prompts: Prompts | None = None,
    ) -> None:
        """``check``: how one line's request is checked (the API's ``validate_request``);
        ``prompts``: the registry of the stored prompts lines may name."""
        self.store, self.files, self.queue, self.catalog = store, files, queue, catalog
        self.runner = BatchRunner(
            store, queue, files, check, max_line_bytes=max_line_bytes, prompts=prompts
        )

    async def run(self) -> None:
        await self.runner.run()

    def endpoints(self) -> set[str]:
        """The endpoints some served model answers (a batch's lines all go to one)."""
        served: set[str] = set()
        for name in self.catalog.configs:
            if name not in INTERNAL_MODELS:
                served |= self.catalog.card(name).endpoints
        return served

    async def create(
        self,
        *,
        tenant: str,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: dict[str, str] | None = None,
        output_expires_after_s: float | None = None,
        scopes: tuple[str, ...] | None = None,
    ) -> Batch:
        window = parse_window(completion_window)
        served = self.endpoints()
        if endpoint not in served:
            raise InvalidRequest(
                f"endpoint: {endpoint!r} is not served here; one of {', '.join(sorted(served))}",
                param="endpoint",
            )
        source = await self.files.get(input_file_id, tenant)  # another tenant's: 404
        if source.purpose != "batch":
            raise InvalidRequest(
                f"input_file_id: {input_file_id} has purpose {source.purpose!r}; upload the"
                " input with purpose 'batch'",
                param="input_file_id",
            )
        now = self.queue.clock()
        batch = Batch(
            id=new_batch_id(), tenant=tenant, endpoint=endpoint, input_file_id=input_file_id,
            completion_window=completion_window, created_at=now, expires_at=now + window,
            metadata=metadata, output_expires_after=output_expires_after_s, scopes=scopes,
        )  # fmt: skip
        await self.store.batch_put(batch)
        self.runner.poke()
        return batch

    async def get(self, batch_id: str, tenant: str | None) -> Batch:
        found = await self.store.batch_get(batch_id, tenant)
        if found is None:
            raise NotFound(f"no batch {batch_id!r}", param="batch_id")
        return found

    async def page(self, tenant: str | None, *, after: str | None, limit: int) -> BatchPage:
        """Up to ``limit`` batches older than ``after``, newest first."""
        if not 1 <= limit <= MAX_LIST_LIMIT:
            raise InvalidRequest(f"limit: must be 1 to {MAX_LIST_LIMIT}", param="limit")
        found = await self.store.batch_list(BatchFilter(tenant, after, limit + 1))
        return BatchPage(found[:limit], len(found) > limit)

    async def cancel(self, batch_id: str, tenant: str | None) -> Batch:
        """``cancelling`` at once; the runner cancels the lines still to run and ends it."""
        for _ in range(self.CANCEL_TRIES):
            batch = await self.get(batch_id, tenant)
            if batch.status.value in ("cancelling", "cancelled"):
                return batch  # as OpenAI: cancelling twice is no error
            new = machine.cancel(batch, self.queue.clock())
            if new is None:
                raise Conflict(
                    f"batch {batch_id} is {batch.status.value}; only a validating or"
                    " in_progress batch can be cancelled"
                )
            if await self.store.batch_update(new, batch.version):
                self.runner.poke()
                return new
        return await self.get(batch_id, tenant)
