"""genspool: buffer, fan out and batch generative-AI work.

The public surface of the package: the clients of a genspool server (:class:`Client`,
:class:`AsyncClient`) with the types they return, and the exception tree. The clients are
imported on first use, so that the server's processes, which import ``genspool.core``, do not
load them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from genspool.exceptions import (
    APIConnectionError,
    APIStatusError,
    APITimeoutError,
    BackendError,
    CircuitOpen,
    ConfigError,
    Conflict,
    ContextWindowExceeded,
    Forbidden,
    GenspoolError,
    InvalidRequest,
    ModelError,
    ModelRateLimited,
    ModelTimeout,
    NotFound,
    PayloadTooLarge,
    RateLimited,
    Unauthorized,
    UnknownModel,
    WaitTimeout,
)

if TYPE_CHECKING:
    from genspool.client import (
        ApiKey,
        AsyncClient,
        Client,
        CreatedApiKey,
        Job,
        JobError,
        JobEvent,
        JobResult,
        JobStatus,
        Model,
    )

__all__ = [
    "APIConnectionError",
    "APIStatusError",
    "APITimeoutError",
    "ApiKey",
    "AsyncClient",
    "BackendError",
    "CircuitOpen",
    "Client",
    "ConfigError",
    "Conflict",
    "ContextWindowExceeded",
    "CreatedApiKey",
    "Forbidden",
    "GenspoolError",
    "InvalidRequest",
    "Job",
    "JobError",
    "JobEvent",
    "JobResult",
    "JobStatus",
    "Model",
    "ModelError",
    "ModelRateLimited",
    "ModelTimeout",
    "NotFound",
    "PayloadTooLarge",
    "RateLimited",
    "Unauthorized",
    "UnknownModel",
    "WaitTimeout",
    "__version__",
]

_CLIENT_NAMES = frozenset(
    {
        "ApiKey",
        "AsyncClient",
        "Client",
        "CreatedApiKey",
        "Job",
        "JobError",
        "JobEvent",
        "JobResult",
        "JobStatus",
        "Model",
    }
)


def __getattr__(name: str) -> Any:
    if name in _CLIENT_NAMES:
        value = getattr(importlib.import_module("genspool.client"), name)
        globals()[name] = value  # once loaded, a plain attribute
        return value
    if name == "__version__":  # read from the installed metadata on first use (~50 ms)
        globals()[name] = value = _installed_version()
        return value
    raise AttributeError(f"module 'genspool' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _CLIENT_NAMES | {"__version__"})


def _installed_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("genspool")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"
