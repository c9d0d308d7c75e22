"""The pipeline methods of :class:`genspool.Client` and :class:`genspool.AsyncClient`.

Mixed into the two clients (``client.start_run("reviews", inputs={…})``), sync and async side by
side as the batch helpers are. :meth:`PipelineMethods.wait_run` follows the run's Server-Sent
Events, each a whole run record sent when it changes, and polls only if that stream breaks, so
a progress bar sees every change without asking twice a second.

    with genspool.Client() as client:
        run = client.start_run("reviews", inputs={"file": "in.jsonl"})
        done = client.wait_run("reviews", run.id, on_update=lambda r: print(r.counts))
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from genspool.client import _pipeline_base as calls
from genspool.client._base import Call, Config, Deadline, SSEDecoder
from genspool.client._errors import transport_error
from genspool.client._pipeline_base import ItemPager, OnRun, Pipeline, PipelineRun, RunItem, Tick
from genspool.exceptions import APIConnectionError, WaitTimeout

__all__ = ["AsyncPipelineMethods", "PipelineMethods"]

T = TypeVar("T")


def _timed_out(run: PipelineRun, timeout: float | None) -> WaitTimeout:
    return WaitTimeout(f"run {run.id} is still {run.status} after {timeout} s", job_id=run.id)


class _Follower:
    """A run's states read from its event stream, told to ``on_update`` as they come."""

    def __init__(self, deadline: Deadline, on_update: OnRun | None) -> None:
        self.deadline, self.on_update = deadline, on_update
        self.decoder = SSEDecoder()

    def line(self, line: str) -> PipelineRun | None:
        """The run, once it has ended (or the wait has run out of time), else None."""
        data = self.decoder.feed_json(line)
        if data is None:
            return None
        run = self.tell(PipelineRun.from_wire(data))
        return run if run.terminal or self.deadline.expired else None

    def tell(self, run: PipelineRun) -> PipelineRun:
        if self.on_update is not None:
            self.on_update(run)
        return run


# -- blocking ----------------------------------------------------------------------------------


class PipelineMethods:
    """Pipelines and their runs, for :class:`genspool.Client`."""

    if TYPE_CHECKING:
        _config: Config

        @property
        def base_url(self) -> str: ...

        def _run(self, call: Call[T]) -> T: ...

        def _send(
            self, call: Call[Any], timeout: httpx.Timeout, *, stream: bool
        ) -> httpx.Response: ...

    def pipelines(self) -> list[Pipeline]:
        """The configured pipelines."""
        return self._run(calls.pipelines())

    def pipeline(self, name: str) -> Pipeline:
        return self._run(calls.pipeline(name))

    def start_run(
        self,
        name: str,
        *,
        inputs: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        force: bool = False,
    ) -> PipelineRun:
        """Start a run (it comes back ``queued``). With an ``idempotency_key`` already used,
        the earlier run comes back instead; ``force`` runs even the items an earlier run of
        the pipeline finished."""
        call = calls.start_run(name, inputs, metadata, idempotency_key, force)
        return self._run(call)

    def run(self, name: str, run_id: str) -> PipelineRun:
        return self._run(calls.run_call("GET", name, run_id))

    def runs(self, name: str, *, limit: int = 100) -> Iterator[PipelineRun]:
        """Every run of the pipeline, newest first, fetched ``limit`` (up to 100) at a time."""
        pager = calls.run_pager(name, limit, None)
        while not pager.done:
            yield from pager.advance(self._run(pager.call()))

    def cancel_run(self, name: str, run_id: str) -> PipelineRun:
        """Ask to cancel: ``cancelling`` at once, ``cancelled`` once the items in flight end
        (those finished stay in the sinks)."""
        return self._run(calls.run_call("POST", name, run_id, "/cancel"))

    def run_items(
        self, name: str, run_id: str, *, status: str | None = None, limit: int = 100
    ) -> Iterator[RunItem]:
        """The run's items in source order (only those of ``status``: ``pending``, ``done``,
        ``failed``, ``skipped``), fetched ``limit`` at a time."""
        pager = ItemPager.of(name, run_id, status, limit)
        while not pager.done:
            yield from pager.advance(self._run(pager.call()))

    def ticks(self, name: str, *, before: float | None = None, limit: int = 100) -> list[Tick]:
        """The schedule's latest ticks, newest first (``before`` an instant, epoch seconds)."""
        return self._run(calls.ticks(name, before, limit))

    def wait_run(
        self,
        name: str,
        run_id: str,
        *,
        timeout: float | None = None,
        poll_s: float = 1.0,
        on_update: OnRun | None = None,
    ) -> PipelineRun:
        """The run once it has ended; ``on_update`` sees each state on the way.
        :class:`~genspool.exceptions.WaitTimeout` after ``timeout`` s. Follows the run's
        events, and polls every ``poll_s`` only if that stream breaks."""
        follower = _Follower(Deadline(timeout), on_update)
        # A broken stream or a read timeout alike: the polls below decide.
        with contextlib.suppress(APIConnectionError):
            found = self._follow(name, run_id, follower)
            if found is not None and found.terminal:
                return found
        while True:
            run = follower.tell(self.run(name, run_id))
            if run.terminal:
                return run
            if follower.deadline.expired:
                raise _timed_out(run, timeout)
            time.sleep(follower.deadline.pause(poll_s))

    def _follow(self, name: str, run_id: str, follower: _Follower) -> PipelineRun | None:
        timeout = self._config.stream_timeout(follower.deadline.remaining())
        response = self._send(calls.run_events(name, run_id), timeout, stream=True)
        try:
            for line in response.iter_lines():
                if (run := follower.line(line)) is not None:
                    return run
        except httpx.TransportError as exc:
            raise transport_error(exc, self.base_url) from exc
        finally:
            response.close()
        return None


# -- asyncio -----------------------------------------------------------------------------------


class AsyncPipelineMethods:
    """Pipelines and their runs, for :class:`genspool.AsyncClient`."""

    if TYPE_CHECKING:
        _config: Config

        @property
        def base_url(self) -> str: ...

        async def _run(self, call: Call[T]) -> T: ...

        async def _send(
            self, call: Call[Any], timeout: httpx.Timeout, *, stream: bool
        ) -> httpx.Response: ...

    async def pipelines(self) -> list[Pipeline]:
        """The configured pipelines."""
        return await self._run(calls.pipelines())

    async def pipeline(self, name: str) -> Pipeline:
        return await self._run(calls.pipeline(name))

    async def start_run(
        self,
        name: str,
        *,
        inputs: Mapping[str, Any] | None = None,
        metadata: Mapping[str, str] | None = None,
        idempotency_key: str | None = None,
        force: bool = False,
    ) -> PipelineRun:
        """Start a run (it comes back ``queued``). With an ``idempotency_key`` already used,
        the earlier run comes back instead; ``force`` runs even the items an earlier run of
        the pipeline finished."""
        call = calls.start_run(name, inputs, metadata, idempotency_key, force)
        return await self._run(call)

    async def run(self, name: str, run_id: str) -> PipelineRun:
        return await self._run(calls.run_call("GET", name, run_id))

    async def runs(self, name: str, *, limit: int = 100) -> AsyncIterator[PipelineRun]:
        """Every run of the pipeline, newest first, fetched ``limit`` (up to 100) at a time."""
        pager = calls.run_pager(name, limit, None)
        while not pager.done:
            for run in pager.advance(await self._run(pager.call())):
                yield run

    async def cancel_run(self, name: str, run_id: str) -> PipelineRun:
        """Ask to cancel: ``cancelling`` at once, ``cancelled`` once the items in flight end
        (those finished stay in the sinks)."""
        return await self._run(calls.run_call("POST", name, run_id, "/cancel"))

    async def run_items(
        self, name: str, run_id: str, *, status: str | None = None, limit: int = 100
    ) -> AsyncIterator[RunItem]:
        """The run's items in source order (only those of ``status``: ``pending``, ``done``,
        ``failed``, ``skipped``), fetched ``limit`` at a time."""
        pager = ItemPager.of(name, run_id, status, limit)
        while not pager.done:
            for item in pager.advance(await self._run(pager.call())):
                yield item

    async def ticks(
        self, name: str, *, before: float | None = None, limit: int = 100
    ) -> list[Tick]:
        """The schedule's latest ticks, newest first (``before`` an instant, epoch seconds)."""
        return await self._run(calls.ticks(name, before, limit))

    async def wait_run(
        self,
        name: str,
        run_id: str,
        *,
        timeout: float | None = None,
        poll_s: float = 1.0,
        on_update: OnRun | None = None,
    ) -> PipelineRun:
        """The run once it has ended; ``on_update`` sees each state on the way.
        :class:`~genspool.exceptions.WaitTimeout` after ``timeout`` s. Follows the run's
        events, and polls every ``poll_s`` only if that stream breaks."""
        follower = _Follower(Deadline(timeout), on_update)
        with contextlib.suppress(APIConnectionError):
            found = await self._follow(name, run_id, follower)
            if found is not None and found.terminal:
                return found
        while True:
            run = follower.tell(await self.run(name, run_id))
            if run.terminal:
                return run
            if follower.deadline.expired:
                raise _timed_out(run, timeout)
            await asyncio.sleep(follower.deadline.pause(poll_s))

    async def _follow(self, name: str, run_id: str, follower: _Follower) -> PipelineRun | None:
        timeout = self._config.stream_timeout(follower.deadline.remaining())
        response = await self._send(calls.run_events(name, run_id), timeout, stream=True)
        try:
            async for line in response.aiter_lines():
                if (run := follower.line(line)) is not None:
                    return run
        except httpx.TransportError as exc:
            raise transport_error(exc, self.base_url) from exc
        finally:
            await response.aclose()
        return None
