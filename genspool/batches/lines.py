"""Reading a batch's input file: lines as they stream in, and each line checked as a request.

:func:`split_lines` turns chunks into numbered lines, holding at most one line (bounded by
``max_line_bytes``) in memory, never the file. :class:`LineChecker` checks each line as OpenAI
does before a batch runs, with the same checks as ``POST /v1/jobs`` (the API hands in its
``validate_request``: the model, the body's fields, the context window), and remembers the
``custom_id`` of every line to find duplicates. A line whose body names a stored prompt is
rendered first (:mod:`genspool.batches.prompts`), and the rendered body is what is checked.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson

from genspool.config import ModelConfig
from genspool.exceptions import GenspoolError

__all__ = [
    "MAX_ERRORS",
    "Line",
    "LineChecker",
    "LineError",
    "RenderPrompt",
    "RequestCheck",
    "split_lines",
]

#: The check of one request (url, body): its model's config and its prompt's tokens (None when
#: the model's card cannot count them), or a GenspoolError saying what is wrong.
RequestCheck = Callable[[str, dict[str, Any]], tuple[ModelConfig, int | None]]
#: A line body with the stored prompt it names rendered in, and the ``{id, version}`` to record
#: on its job (None: it names none); what is wrong is a :class:`LineError`.
RenderPrompt = Callable[[dict[str, Any]], Awaitable[tuple[dict[str, Any], dict[str, Any] | None]]]

#: The errors a failed batch lists (the first ones; a last entry counts the rest).
MAX_ERRORS = 1000


class LineError(Exception):
    """What is wrong with one line, as a batch's ``errors`` lists it."""

    def __init__(self, code: str, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.code, self.message, self.param = code, message, param

    def entry(self, line: int) -> dict[str, Any]:
        return {"code": self.code, "message": f"line {line}: {self.message}", "param": self.param,
                "line": line}  # fmt: skip


async def split_lines(
    chunks: AsyncIterator[bytes], max_line_bytes: int
) -> AsyncIterator[tuple[int, bytes | None]]:
    """``(number, line)`` for each line, 1-based, without its newline; a line over
    ``max_line_bytes`` comes as None (and is not kept). A last line needs no newline."""
    number, held, over = 0, bytearray(), False
    async for chunk in chunks:
        start = 0
        while (end := chunk.find(b"\n", start)) >= 0:
            number += 1
            if not over:
                held += chunk[start:end]
            yield number, None if over or len(held) > max_line_bytes else bytes(held)
            held.clear()
            over, start = False, end + 1
        if not over:
            held += chunk[start:]
            if len(held) > max_line_bytes:
                held.clear()
                over = True
    if held or over:
        yield number + 1, None if over else bytes(held)


@dataclass(frozen=True, slots=True)
class Line:
    """A checked line: the request of its job."""

    number: int
    custom_id: str
    body: dict[str, Any]
    model: str
    max_attempts: int
    prompt_tokens: int | None
    #: The stored prompt its body was rendered from: ``{"id", "version"}``.
    prompt: dict[str, Any] | None = None


class LineChecker:
    """Checks the lines of one batch in order; ``errors`` gathers what was wrong."""

    def __init__(
        self,
        check: RequestCheck,
        endpoint: str,
        max_line_bytes: int,
        render: RenderPrompt | None = None,
    ) -> None:
        self.request_check, self.endpoint, self.max_line_bytes = check, endpoint, max_line_bytes
        self.render = render
        self.errors: list[dict[str, Any]] = []
        self.error_count = 0
        self._seen: set[str] = set()

    async def check(self, number: int, raw: bytes | None) -> Line | None:
        """The line's request, or None after recording why it is wrong."""
        try:
            custom_id, body = self._parse(number, raw)
            prompt = None
            if self.render is not None:
                body, prompt = await self.render(body)
            return self._request(number, custom_id, body, prompt)
        except LineError as err:
            self.refuse(number, err)
            return None

    def refuse(self, number: int, err: LineError) -> None:
        """Record what is wrong with a line (also for a check made outside, e.g. its file)."""
        self.error_count += 1
        if len(self.errors) < MAX_ERRORS:
            self.errors.append(err.entry(number))

    def summary(self) -> list[dict[str, Any]]:
        """The errors to show: the first ``MAX_ERRORS``, and how many more there were."""
        more = self.error_count - len(self.errors)
        if more <= 0:
            return list(self.errors)
        note = {"code": "too_many_errors", "message": f"{more} more lines have errors",
                "param": None, "line": None}  # fmt: skip
        return [*self.errors, note]

    def _parse(self, number: int, raw: bytes | None) -> tuple[str, dict[str, Any]]:
        if raw is None:
            raise LineError("line_too_long", f"longer than {self.max_line_bytes} bytes")
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise LineError("invalid_json_line", f"not valid JSON ({exc})") from exc
        if not isinstance(doc, dict):
            raise LineError("invalid_json_line", "must be a JSON object")
        custom_id = self._custom_id(doc)
        self._seen.add(custom_id)  # taken, even by a line wrong in other ways
        url, body = doc.get("url"), doc.get("body")
        if doc.get("method", "POST") != "POST":
            raise LineError("invalid_method", "method must be POST", "method")
        if url != self.endpoint:
            raise LineError(
                "mismatched_endpoint", f"url {url!r} is not the batch's endpoint {self.endpoint}",
                "url",
            )  # fmt: skip
        if not isinstance(body, dict):
            raise LineError("missing_required_parameter", "body: must be a JSON object", "body")
        if body.get("stream") not in (None, False):
            raise LineError(
                "invalid_request_error", "body.stream: a batch line is answered whole; remove"
                " stream", "body.stream",
            )  # fmt: skip
        return custom_id, body

    def _request(
        self, number: int, custom_id: str, body: dict[str, Any], prompt: dict[str, Any] | None
    ) -> Line:
        try:
            cfg, tokens = self.request_check(self.endpoint, body)
        except GenspoolError as exc:
            raise LineError(exc.code, str(exc), getattr(exc, "param", None)) from exc
        return Line(number, custom_id, body, cfg.name, cfg.max_attempts, tokens, prompt)

    def _custom_id(self, doc: dict[str, Any]) -> str:
        custom_id = doc.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            raise LineError(
                "missing_required_parameter", "custom_id: required, a non-empty string",
                "custom_id",
            )  # fmt: skip
        if custom_id in self._seen:
            raise LineError(
                "duplicate_custom_id", f"custom_id {custom_id!r} is used by an earlier line",
                "custom_id",
            )  # fmt: skip
        return custom_id
