"""``client.files`` and ``client.batches``: the Files and Batch APIs, sync and async side by side.

Shaped like the official SDK's namespaces (``files.create``, ``batches.create/retrieve/list/
cancel``) so that code moves between the two easily; both stream: an upload is read from its
file in chunks as it is sent, and ``files.content`` writes the bytes as they arrive, to a path
(through ``<path>.part``, renamed only once the whole file is in, so a broken download never
looks complete) or to an open binary file.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar

import httpx

from genspool.client import _batch_base as calls
from genspool.client._base import Call, Config, Deadline
from genspool.client._batch_base import Batch, FileObject, Page
from genspool.client._errors import transport_error
from genspool.exceptions import WaitTimeout

_T = TypeVar("_T")


class Client(Protocol):
    """What these helpers use of :class:`genspool.client.Client` (a protocol, so that this
    module, which the client imports, does not import it back)."""

    _config: Config

    @property
    def base_url(self) -> str: ...

    def _run(self, call: Call[_T]) -> _T: ...

    def _send(self, call: Call[Any], timeout: httpx.Timeout, *, stream: bool) -> httpx.Response: ...


class AsyncClient(Protocol):
    """What these helpers use of :class:`genspool.client.AsyncClient`."""

    _config: Config

    @property
    def base_url(self) -> str: ...

    async def _run(self, call: Call[_T]) -> _T: ...

    async def _send(
        self, call: Call[Any], timeout: httpx.Timeout, *, stream: bool
    ) -> httpx.Response: ...


__all__ = ["AsyncBatches", "AsyncFiles", "Batches", "Files"]

#: Where ``files.content`` writes: a path, or a binary file open for writing.
Destination = str | os.PathLike[str] | BinaryIO
#: What ``files.create`` uploads: a path, or a binary file open for reading.
Source = str | os.PathLike[str] | BinaryIO
OnUpdate = Callable[[Batch], None]


@contextlib.contextmanager
def _opened(file: Source, filename: str | None) -> Iterator[tuple[str, BinaryIO]]:
    if not isinstance(file, str | os.PathLike):
        yield filename or Path(str(getattr(file, "name", "upload"))).name, file
        return
    path = Path(file)
    with path.open("rb") as stream:
        yield filename or path.name, stream


@contextlib.contextmanager
def _sink(to: Destination) -> Iterator[BinaryIO]:
    if not isinstance(to, str | os.PathLike):
        yield to
        return
    path = Path(to)
    part = path.with_name(path.name + ".part")
    try:
        with part.open("wb") as out:
            yield out
        part.replace(path)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


def _timed_out(batch: Batch, timeout: float | None) -> WaitTimeout:
    return WaitTimeout(
        f"batch {batch.id} is still {batch.status} after {timeout} s", job_id=batch.id
    )


# -- blocking ----------------------------------------------------------------------------------


class Files:
    """Files (``client.files``): upload, list, retrieve, content, delete."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        file: Source,
        *,
        purpose: str,
        expires_after_s: int | None = None,
        filename: str | None = None,
    ) -> FileObject:
        """Upload ``file`` (``purpose``: ``batch``, ``user_data``…), streamed from disk."""
        with _opened(file, filename) as (name, stream):
            return self._client._run(calls.upload(name, stream, purpose, expires_after_s))

    def retrieve(self, file_id: str) -> FileObject:
        return self._client._run(calls.file_call("GET", file_id))

    def page(
        self,
        *,
        purpose: str | None = None,
        limit: int = 20,
        order: str = "desc",
        after: str | None = None,
    ) -> Page[FileObject]:
        """One page; the next starts ``after`` its ``last_id``."""
        return self._client._run(calls.file_pager(purpose, limit, order, after).call())

    def list(
        self, *, purpose: str | None = None, limit: int = 100, order: str = "desc"
    ) -> Iterator[FileObject]:
        """Every file, fetched ``limit`` at a time as the iteration goes on."""
        pager = calls.file_pager(purpose, limit, order, None)
        while not pager.done:
            yield from pager.advance(self._client._run(pager.call()))

    def content(self, file_id: str, to: Destination) -> int:
        """Write the file's bytes to ``to`` as they arrive; the number of bytes written."""
        client = self._client
        response = client._send(calls.file_content(file_id), client._config.timeout, stream=True)
        written = 0
        try:
            with _sink(to) as out:
                for chunk in response.iter_bytes():
                    written += out.write(chunk)
        except httpx.TransportError as exc:
            raise transport_error(exc, client.base_url) from exc
        finally:
            response.close()
        return written

    def delete(self, file_id: str) -> bool:
        return self._client._run(calls.delete_file(file_id))


class Batches:
    """Batches (``client.batches``): create, retrieve, list, cancel, and wait for one."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def create(
        self,
        input_file_id: str,
        *,
        endpoint: str,
        completion_window: str = "24h",
        metadata: Mapping[str, str] | None = None,
        output_expires_after_s: int | None = None,
    ) -> Batch:
        """A batch over an uploaded ``batch`` file; it comes back ``validating``."""
        call = calls.create_batch(
            input_file_id, endpoint, completion_window, metadata, output_expires_after_s
        )
        return self._client._run(call)

    def retrieve(self, batch_id: str) -> Batch:
        return self._client._run(calls.batch_call("GET", batch_id))

    def cancel(self, batch_id: str) -> Batch:
        """Ask to cancel: ``cancelling`` at once, ``cancelled`` once the running lines end."""
        return self._client._run(calls.batch_call("POST", batch_id, "/cancel"))

    def page(self, *, limit: int = 20, after: str | None = None) -> Page[Batch]:
        """One page, newest first; the next starts ``after`` its ``last_id``."""
        return self._client._run(calls.batch_pager(limit, after).call())

    def list(self, *, limit: int = 100) -> Iterator[Batch]:
        """Every batch, newest first, fetched ``limit`` at a time."""
        pager = calls.batch_pager(limit, None)
        while not pager.done:
            yield from pager.advance(self._client._run(pager.call()))

    def wait(
        self,
        batch_id: str,
        *,
        timeout: float | None = None,
        poll_s: float = 1.0,
        on_update: OnUpdate | None = None,
    ) -> Batch:
        """The batch once it has ended, polled every ``poll_s`` (``on_update`` sees each
        reading); :class:`~genspool.exceptions.WaitTimeout` after ``timeout`` s."""
        deadline = Deadline(timeout)
        while True:
            batch = self.retrieve(batch_id)
            if on_update is not None:
                on_update(batch)
            if batch.terminal:
                return batch
            if deadline.expired:
                raise _timed_out(batch, timeout)
            time.sleep(deadline.pause(poll_s))


# -- asyncio -----------------------------------------------------------------------------------


class AsyncFiles:
    """Files (``client.files``): upload, list, retrieve, content, delete."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        file: Source,
        *,
        purpose: str,
        expires_after_s: int | None = None,
        filename: str | None = None,
    ) -> FileObject:
        """Upload ``file`` (``purpose``: ``batch``, ``user_data``…), streamed from disk."""
        with _opened(file, filename) as (name, stream):
            return await self._client._run(calls.upload(name, stream, purpose, expires_after_s))

    async def retrieve(self, file_id: str) -> FileObject:
        return await self._client._run(calls.file_call("GET", file_id))

    async def page(
        self,
        *,
        purpose: str | None = None,
        limit: int = 20,
        order: str = "desc",
        after: str | None = None,
    ) -> Page[FileObject]:
        """One page; the next starts ``after`` its ``last_id``."""
        return await self._client._run(calls.file_pager(purpose, limit, order, after).call())

    async def list(
        self, *, purpose: str | None = None, limit: int = 100, order: str = "desc"
    ) -> AsyncIterator[FileObject]:
        """Every file, fetched ``limit`` at a time as the iteration goes on."""
        pager = calls.file_pager(purpose, limit, order, None)
        while not pager.done:
            for item in pager.advance(await self._client._run(pager.call())):
                yield item

    async def content(self, file_id: str, to: Destination) -> int:
        """Write the file's bytes to ``to`` as they arrive; the number of bytes written."""
        client = self._client
        call = calls.file_content(file_id)
        response = await client._send(call, client._config.timeout, stream=True)
        written = 0
        try:
            with _sink(to) as out:
                async for chunk in response.aiter_bytes():
                    written += out.write(chunk)
        except httpx.TransportError as exc:
            raise transport_error(exc, client.base_url) from exc
        finally:
            await response.aclose()
        return written

    async def delete(self, file_id: str) -> bool:
        return await self._client._run(calls.delete_file(file_id))


class AsyncBatches:
    """Batches (``client.batches``): create, retrieve, list, cancel, and wait for one."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def create(
        self,
        input_file_id: str,
        *,
        endpoint: str,
        completion_window: str = "24h",
        metadata: Mapping[str, str] | None = None,
        output_expires_after_s: int | None = None,
    ) -> Batch:
        """A batch over an uploaded ``batch`` file; it comes back ``validating``."""
        call = calls.create_batch(
            input_file_id, endpoint, completion_window, metadata, output_expires_after_s
        )
        return await self._client._run(call)

    async def retrieve(self, batch_id: str) -> Batch:
        return await self._client._run(calls.batch_call("GET", batch_id))

    async def cancel(self, batch_id: str) -> Batch:
        """Ask to cancel: ``cancelling`` at once, ``cancelled`` once the running lines end."""
        return await self._client._run(calls.batch_call("POST", batch_id, "/cancel"))

    async def page(self, *, limit: int = 20, after: str | None = None) -> Page[Batch]:
        """One page, newest first; the next starts ``after`` its ``last_id``."""
        return await self._client._run(calls.batch_pager(limit, after).call())

    async def list(self, *, limit: int = 100) -> AsyncIterator[Batch]:
        """Every batch, newest first, fetched ``limit`` at a time."""
        pager = calls.batch_pager(limit, None)
        while not pager.done:
            for item in pager.advance(await self._client._run(pager.call())):
                yield item

    async def wait(
        self,
        batch_id: str,
        *,
        timeout: float | None = None,
        poll_s: float = 1.0,
        on_update: OnUpdate | None = None,
    ) -> Batch:
        """The batch once it has ended, polled every ``poll_s`` (``on_update`` sees each
        reading); :class:`~genspool.exceptions.WaitTimeout` after ``timeout`` s."""
        deadline = Deadline(timeout)
        while True:
            batch = await self.retrieve(batch_id)
            if on_update is not None:
                on_update(batch)
            if batch.terminal:
                return batch
            if deadline.expired:
                raise _timed_out(batch, timeout)
            await asyncio.sleep(deadline.pause(poll_s))
