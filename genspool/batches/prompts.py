"""The stored prompts a batch's lines name, resolved in the batch's tenant and pinned.

A line's body may name a prompt of the registry (:mod:`genspool.core.prompts`) exactly as a
job's does: ``"prompt": {"id", "version"?, "variables"}`` or ``"prompt": "id@label"``. A
reference by a label (or by none: ``production``, else ``latest``) is resolved once, while the
runner checks the input file before any line runs, and the version it gave is kept on the batch
record (``Batch.prompts``); the lines are rendered with that version when they become jobs. So
every line of a batch uses one version of a label even if the label moves while the batch runs,
and a runner that takes the batch over from another uses the same. The version each line used
is recorded on its job (``genspool.prompt``), as ``POST /v1/jobs`` does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from genspool.batches.lines import LineError
from genspool.core.prompts import CHAT_URL, RESPONSES_URL, Prompts, parse_ref
from genspool.exceptions import GenspoolError

__all__ = ["MAX_PINNED", "LinePrompts"]

#: The most label references one batch may pin (they are kept on its record).
MAX_PINNED = 100
#: The code of a line whose prompt cannot be used (a 400 of ``POST /v1/jobs``).
CODE = "invalid_request_error"


class LinePrompts:
    """Renders the lines of one batch, pinning each label reference at its first use."""

    def __init__(
        self,
        registry: Prompts | None,
        tenant: str,
        endpoint: str,
        pinned: Mapping[str, int] | None = None,
    ) -> None:
        self.registry, self.tenant, self.endpoint = registry, tenant, endpoint
        #: ``"id@label"`` (``"id@"``: no label given) -> the version it resolved to.
        self.pins: dict[str, int] = dict(pinned or {})

    async def __call__(self, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """The body with its prompt rendered into its messages, and the ``{id, version}`` to
        record; a body that names none (or a ``/v1/completions`` one, whose ``prompt`` is its
        text) as it is. What is wrong is a :class:`LineError`."""
        if body.get("prompt") is None or self.endpoint not in (CHAT_URL, RESPONSES_URL):
            return body, None
        if self.registry is None:
            raise LineError(
                CODE, "prompt: this deployment keeps no prompts (its store is a Redis or NATS"
                " server alone)", "prompt",
            )  # fmt: skip
        try:
            return await self._render(self.registry, body)
        except GenspoolError as exc:
            raise LineError(CODE, exc.message, exc.param or "prompt") from exc

    async def _render(
        self, registry: Prompts, body: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        ref = parse_ref(body["prompt"])
        number = ref.version
        if number is None:
            key = f"{ref.prompt_id}@{ref.label or ''}"
            number = self.pins.get(key)
            if number is None:
                if len(self.pins) >= MAX_PINNED:
                    raise LineError(
                        CODE, f"prompt: a batch may name at most {MAX_PINNED} prompt labels",
                        "prompt",
                    )  # fmt: skip
                number = self.pins[key] = (await registry.resolve(self.tenant, ref)).version
        pinned = {"id": ref.prompt_id, "version": number, "variables": dict(ref.variables or {})}
        return await registry.render_body(self.tenant, self.endpoint, {**body, "prompt": pinned})
