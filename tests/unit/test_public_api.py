"""The public surface of ``genspool``: ``__all__`` is pinned, so adding or dropping a name is a
deliberate change made here too (like httpx's tests/test_exported_members.py)."""

from __future__ import annotations

import subprocess
import sys

import genspool

EXPECTED = [
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


def test_all_is_pinned() -> None:
    assert genspool.__all__ == EXPECTED


def test_every_exported_name_resolves() -> None:
    for name in genspool.__all__:
        assert getattr(genspool, name) is not None, name
    assert set(genspool.__all__) <= set(dir(genspool))


def test_exported_classes_say_where_they_live() -> None:
    for name in genspool.__all__:
        value = getattr(genspool, name)
        if isinstance(value, type):
            assert value.__module__.startswith("genspool."), (name, value.__module__)


def test_version_is_the_installed_one() -> None:
    from importlib.metadata import version

    assert genspool.__version__ == version("genspool")


def test_the_client_loads_nothing_of_the_server() -> None:
    """The client is importable without the server's dependencies, and importing genspool
    alone (as every server process does) does not load the client."""
    code = (
        "import sys, genspool\n"
        "assert 'genspool.client' not in sys.modules\n"
        "genspool.Client\n"
        "server = ('genspool.core', 'genspool.backends', 'genspool.api', 'fastapi')\n"
        "loaded = [m for m in sys.modules if m.startswith(server)]\n"
        "assert not loaded, loaded\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
