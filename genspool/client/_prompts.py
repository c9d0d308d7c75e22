"""``client.prompts``: the prompt registry (``/v1/prompts``), sync and async side by side.

    with genspool.Client() as client:
        v = client.prompts.create("greet", [{"role": "user", "content": "Hi {{name}}"}])
        client.prompts.set_label("greet", "production", v.version)
        client.submit_chat("echo", [], prompt={"id": "greet", "variables": {"name": "Ada"}})

A version is never edited: ``create`` with an existing id stores its next version, and a label
(``production``, or any name; ``latest`` is always the newest) is pointed at one with
``set_label``. ``history`` is the audit of every change: who, when, from -> to.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping, Sequence

from genspool.client import _prompt_base as calls
from genspool.client._batches import AsyncClient, Client
from genspool.client._prompt_base import Prompt, PromptChange, PromptLabelMove

__all__ = ["AsyncPrompts", "Prompts"]

#: A template: the text of a ``text`` prompt, or the ``{"role", "content"}`` of a ``chat`` one.
Template = str | Sequence[Mapping[str, str]]


class Prompts:
    """Stored prompts (``client.prompts``): list, get, create, set_label, labels, history."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def list(self, *, limit: int = 100) -> Iterator[Prompt]:
        """Every prompt at its latest version, by id, fetched ``limit`` at a time."""
        pager = calls.prompt_pager(limit)
        while not pager.done:
            yield from pager.advance(self._client._run(pager.call()))

    def get(
        self, prompt_id: str, *, version: int | None = None, label: str | None = None
    ) -> Prompt:
        """The latest version, or ``version``, or the one ``label`` points at."""
        return self._client._run(calls.get(prompt_id, version, label))

    def create(
        self,
        prompt_id: str,
        template: Template,
        *,
        kind: str | None = None,
        description: str | None = None,
        labels: Sequence[str] = (),
    ) -> Prompt:
        """Store a new prompt, or the next version of ``prompt_id``; ``kind`` defaults to
        ``text`` for a string and ``chat`` for messages; ``labels`` are moved to it."""
        return self._client._run(calls.create(prompt_id, template, kind, description, labels))

    def set_label(
        self, prompt_id: str, label: str, version: int, *, expected_version: int | None = None
    ) -> PromptLabelMove:
        """Point ``label`` at ``version``; with ``expected_version`` only if it points there
        now (0: not set yet), else :class:`~genspool.exceptions.Conflict`."""
        call = calls.set_label(prompt_id, label, version, expected_version)
        return self._client._run(call)

    def labels(self, prompt_id: str) -> dict[str, int]:
        """Each label's version, ``latest`` included."""
        return self._client._run(calls.labels(prompt_id))

    def history(self, prompt_id: str, *, limit: int = 100) -> Iterator[PromptChange]:
        """Every change of the prompt, oldest first: versions created and labels moved."""
        pager = calls.history_pager(prompt_id, limit)
        while not pager.done:
            yield from pager.advance(self._client._run(pager.call()))


class AsyncPrompts:
    """Stored prompts (``client.prompts``): list, get, create, set_label, labels, history."""

    def __init__(self, client: AsyncClient) -> None:
        self._client = client

    async def list(self, *, limit: int = 100) -> AsyncIterator[Prompt]:
        """Every prompt at its latest version, by id, fetched ``limit`` at a time."""
        pager = calls.prompt_pager(limit)
        while not pager.done:
            for found in pager.advance(await self._client._run(pager.call())):
                yield found

    async def get(
        self, prompt_id: str, *, version: int | None = None, label: str | None = None
    ) -> Prompt:
        """The latest version, or ``version``, or the one ``label`` points at."""
        return await self._client._run(calls.get(prompt_id, version, label))

    async def create(
        self,
        prompt_id: str,
        template: Template,
        *,
        kind: str | None = None,
        description: str | None = None,
        labels: Sequence[str] = (),
    ) -> Prompt:
        """Store a new prompt, or the next version of ``prompt_id``; ``kind`` defaults to
        ``text`` for a string and ``chat`` for messages; ``labels`` are moved to it."""
        call = calls.create(prompt_id, template, kind, description, labels)
        return await self._client._run(call)

    async def set_label(
        self, prompt_id: str, label: str, version: int, *, expected_version: int | None = None
    ) -> PromptLabelMove:
        """Point ``label`` at ``version``; with ``expected_version`` only if it points there
        now (0: not set yet), else :class:`~genspool.exceptions.Conflict`."""
        call = calls.set_label(prompt_id, label, version, expected_version)
        return await self._client._run(call)

    async def labels(self, prompt_id: str) -> dict[str, int]:
        """Each label's version, ``latest`` included."""
        return await self._client._run(calls.labels(prompt_id))

    async def history(self, prompt_id: str, *, limit: int = 100) -> AsyncIterator[PromptChange]:
        """Every change of the prompt, oldest first: versions created and labels moved."""
        pager = calls.history_pager(prompt_id, limit)
        while not pager.done:
            for change in pager.advance(await self._client._run(pager.call())):
                yield change
