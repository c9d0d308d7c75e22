"""The provider interface: a model behind one batch method, like an httpx transport.

A provider serves some endpoints (``/v1/chat/completions``, ``/v1/embeddings``, ...) of one
configured model. The worker hands it a batch of requests of one endpoint; it returns, per
request, the OpenAI response body or the :class:`~genspool.exceptions.ModelError` that request
ended with. Routing by model name lives outside (``genspool.runtime.registry``); how a provider
is found and configured is :mod:`genspool.providers.plugins`.

Per-request results: :meth:`Provider.start` starts a batch and gives one awaitable per request,
so the worker can store each answer the moment it exists. By default the batch is one
``handle()`` call whose answers resolve together, which is all a batch provider (HTTP, a
third-party plugin) needs to do. A provider that sets ``continuous = True`` runs requests as
they come (continuous batching, :mod:`genspool.providers.llama`): there ``start`` makes each
request its own ``handle([request])`` call, which joins the provider's running batch, resolves
when its own request ends, and when cancelled stops that request alone. ``start`` calls
``self.handle``, so on a resilience stack every layer (timeouts, limits, fallbacks) applies to
each such call; ``continuous`` and ``max_sequences`` are read with :func:`continuous` and
:func:`max_sequences`, through the layers (which forward attributes they do not define).
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from genspool.exceptions import ModelError

__all__ = [
    "CHAT",
    "EMBEDDINGS",
    "FileAccess",
    "JobRef",
    "Provider",
    "Request",
    "Response",
    "Result",
    "TokenSink",
    "continuous",
    "max_sequences",
]

CHAT = "/v1/chat/completions"
EMBEDDINGS = "/v1/embeddings"

#: Called with each piece of generated text while a request runs (may be called from a thread).
TokenSink = Callable[[str], None]
Response = dict[str, Any]
Result = Response | ModelError


@dataclass(frozen=True, slots=True)
class JobRef:
    """The job a request belongs to, for the providers that act on the queue themselves (a
    fan-out submits its branches as child jobs, an agent its model calls) and must give those
    children the parent's tenant, priority and caller's scopes."""

    id: str
    tenant: str = "default"
    priority: int = 0
    attempts: int = 1
    metadata: Mapping[str, Any] = field(default_factory=dict)


class FileAccess(Protocol):
    """The Files API as a provider sees it: an input a request names by id (the audio of a
    transcription), and an output too big for a result (speech, images) kept as a file. Given
    by the worker (:class:`genspool.files.Files` is one); a provider never opens a store."""

    async def read(self, file_id: str, tenant: str) -> tuple[str, bytes]:
        """The file's name and bytes; :class:`~genspool.exceptions.NotFound` when ``tenant``
        has no such file."""
        ...

    async def save(self, data: bytes, *, tenant: str, filename: str) -> str:
        """Keep ``data`` as a new file of ``tenant``; its id."""
        ...


@dataclass(slots=True)
class Request:
    url: str
    body: dict[str, Any]
    on_token: TokenSink | None = None
    #: Prompt tokens as counted once when the job was accepted (the API's model card); None
    #: when the model's tokenizer could not count them.
    prompt_tokens: int | None = None
    #: Whether someone listened to this request's tokens when the call began: a remote
    #: provider then streams from its upstream (a plain call is cheaper when nobody does).
    stream: bool = False
    #: The job this request is (None when the provider is called outside the queue).
    job: JobRef | None = None
    #: Where its input files are read and its binary outputs kept (None: no Files API here).
    files: FileAccess | None = None


class Provider(ABC):
    #: The endpoints this model serves (a class default; an instance may narrow it).
    endpoints: frozenset[str] = frozenset()

    def __init__(self, model: str) -> None:
        self.model = model

    @abstractmethod
    async def handle(self, batch: Sequence[Request]) -> list[Response | ModelError]:
        """Run one batch of requests of one endpoint as one model call where possible."""

    def start(self, batch: Sequence[Request]) -> list[asyncio.Future[Result]]:
        """Start ``batch`` at once; one future per request, resolved with its own outcome.

        Cancelling a future abandons its request: a continuous provider drops it from its
        running batch; a batch call is cancelled once every one of its futures is settled.
        An exception of ``handle()`` (a provider bug) becomes every request's exception.
        """
        loop = asyncio.get_running_loop()
        if continuous(self) or getattr(self, "per_request", False):
            # Each request its own call: cancelling one future stops that call alone (a remote
            # call's connection is closed), which a fan-out's "first" strategy relies on.
            return [loop.create_task(_first(self.handle([r]))) for r in batch]
        return _split(loop.create_task(_listed(self.handle(batch))), len(batch))

    def count_tokens(self, url: str, body: dict[str, Any]) -> int | None:
        """Prompt tokens of a request by the model's own tokenizer; None when unknown."""
        return None

    async def load(self) -> None:  # noqa: B027 - optional hook
        """Load weights before the first batch (workers call it at start)."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Free the model."""


def continuous(provider: Provider) -> bool:
    """Whether ``provider`` (or the provider inside a stack of layers) batches continuously."""
    return bool(getattr(provider, "continuous", False))


def max_sequences(provider: Provider) -> int | None:
    """How many requests a continuous provider runs side by side (None: not known yet)."""
    value = getattr(provider, "max_sequences", None)
    return value if isinstance(value, int) and value > 0 else None


async def _first(call: Awaitable[list[Result]]) -> Result:
    return (await call)[0]


async def _listed(call: Awaitable[list[Result]]) -> list[Result]:
    return list(await call)


def _split(whole: asyncio.Task[list[Result]], n: int) -> list[asyncio.Future[Result]]:
    """Per-request futures over one batch call: all resolve when it ends."""
    loop = whole.get_loop()
    parts: list[asyncio.Future[Result]] = [loop.create_future() for _ in range(n)]

    def settle(task: asyncio.Task[list[Result]]) -> None:
        exc = None if task.cancelled() else task.exception()
        for i, part in enumerate(parts):
            if part.done():
                continue
            if task.cancelled():
                part.cancel()
            elif exc is not None:
                part.set_exception(exc)
            else:
                part.set_result(task.result()[i])

    def abandon(_: asyncio.Future[Result]) -> None:
        if not whole.done() and all(p.done() for p in parts):
            whole.cancel()  # nobody waits for any of its answers any more

    whole.add_done_callback(settle)
    for part in parts:
        part.add_done_callback(abandon)
    return parts
