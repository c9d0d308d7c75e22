"""One translation of driver errors into :class:`~genspool.exceptions.BackendError`.

Every backend names the errors of its driver that mean "the server could not be reached or
used" and wraps its public methods with :func:`translated`: the caller then sees one line that
says which operation failed, at which server (its URL without secrets), and the driver's
message without its multi-line hints, chained to the original.

A backend with a ``call_timeout_s`` (the network ones) also bounds each call: a server that is
up but does not answer (paused, swapping, behind a stalled network) fails the call as a
BackendError after that long, and the API answers 503, instead of every request hanging for
the driver's own socket timeouts and retries. Calls that may rightly take long (connecting and
migrating, destroying, purging) are not bounded.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, ParamSpec, Protocol, TypeVar

from genspool.exceptions import BackendError

__all__ = ["backend_error", "describe", "translated"]

P = ParamSpec("P")
T = TypeVar("T")


class _Named(Protocol):
    kind: str  # "PostgreSQL", "Redis", ...
    shown_url: str


#: Operations a call timeout never cuts short.
UNBOUNDED = frozenset({"connect", "destroy", "drop", "purge"})


def describe(exc: BaseException) -> str:
    """The driver's message on one line: its first line, after the error's type."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def backend_error(owner: _Named, what: str, exc: BaseException) -> BackendError:
    return BackendError(f"{owner.kind} {what} failed at {owner.shown_url}: {describe(exc)}")


def translated(
    what: str, errors: tuple[type[BaseException], ...]
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Coroutine[Any, Any, T]]]:
    """Wrap a backend method so that ``errors`` raised inside become BackendErrors."""

    def wrap(fn: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        @functools.wraps(fn)
        async def call(*args: P.args, **kwargs: P.kwargs) -> T:
            owner = args[0]
            limit = None if what in UNBOUNDED else getattr(owner, "call_timeout_s", None)
            try:
                if limit is None:
                    return await fn(*args, **kwargs)
                return await _within(limit, fn(*args, **kwargs), owner, what)
            except BackendError:
                raise
            except errors as exc:
                raise backend_error(owner, what, exc) from exc  # type: ignore[arg-type]

        return call

    return wrap


async def _within(limit: float, call: Awaitable[T], owner: Any, what: str) -> T:
    """``call``'s result, or a BackendError once ``limit`` has passed. The call is then
    cancelled but not waited for: a driver cleaning up after a server that does not answer
    (psycopg sends a cancel request, then rolls back) would hold the caller as long again."""
    task = asyncio.ensure_future(call)
    try:
        done, _ = await asyncio.wait({task}, timeout=limit)
    except asyncio.CancelledError:
        task.cancel()
        raise
    if done:
        return task.result()
    task.cancel()
    task.add_done_callback(_retrieve)
    raise BackendError(
        f"{owner.kind} {what} at {owner.shown_url} did not answer within {limit:g} s"
        " (the backend's call_timeout_s)"
    )


def _retrieve(task: asyncio.Task[Any]) -> None:
    if not task.cancelled():
        task.exception()  # an abandoned call's error is not worth a warning at exit
