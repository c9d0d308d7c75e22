"""One translation of driver errors into :class:`~genspool.exceptions.BackendError`.

Every backend names the errors of its driver that mean "the server could not be reached or
used" and wraps its public methods with :func:`translated`: the caller then sees one line that
says which operation failed, at which server (its URL without secrets), and the driver's
message without its multi-line hints, chained to the original.
"""

from __future__ import annotations

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
            try:
                return await fn(*args, **kwargs)
            except BackendError:
                raise
            except errors as exc:
                raise backend_error(args[0], what, exc) from exc  # type: ignore[arg-type]

        return call

    return wrap
