"""How branch outcomes become a fan-out's result, strategy by strategy.

The coordinator feeds each branch's :class:`Outcome` to an :class:`Aggregator` as it ends and
asks whether anything more is needed (:meth:`Aggregator.decided`); the branches still running
once it is are cancelled. Partial failure is explicit: the result lists every branch, whatever
happened to it, and ``partial`` says whether any did not succeed.

* ``all`` waits for every branch; its output maps each succeeded branch's name to its text.
* ``first``: the first success decides; its output is that branch's text (``winner`` names it).
* ``quorum``: ``k`` branches agree, by exact text (surrounding whitespace aside) or by the cosine
  similarity of their embeddings; it is decided once ``k`` agree or once they no longer can. No
  quorum is a result (``quorum.reached: false``), not an error.
* ``reduce``: like ``all``, then the coordinator makes the reduce call with the outputs.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from genspool.exceptions import ModelError
from genspool.fanout.spec import Aggregate

__all__ = ["NOT_NEEDED", "Aggregator", "FanoutFailed", "Outcome", "text_of", "usage_of"]

Embed = Callable[[str], Awaitable[list[float]]]


class FanoutFailed(ModelError):
    """The fan-out produced no result (no branch succeeded, a reduce stalled). Not retried:
    the parent's error carries the result as far as it went, every branch listed."""

    code = "fanout_failed"

    def __init__(self, message: str, details: dict[str, Any], *, code: str | None = None) -> None:
        super().__init__(message, retryable=False)
        self.details = details
        if code is not None:
            self.code = code


@dataclass(slots=True)
class Outcome:
    """How one branch ended. ``status`` is its job's, or ``timeout`` when the fan-out gave up
    on it (its timeout or the deadline) and cancelled it."""

    name: str
    job_id: str
    status: str
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None
    route: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "succeeded" and self.result is not None

    def public(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "job_id": self.job_id, "status": self.status}
        if self.route is not None:
            out["route"] = self.route
        if self.ok:
            out["result"] = self.result
        else:
            out["error"] = self.error or {"code": self.status, "message": f"branch {self.status}"}
        return out


def text_of(body: dict[str, Any] | None) -> str | None:
    """The answer's text: a chat message's content, a completion's text, else the body as
    JSON (an embedding, an image reference), so that every endpoint can be compared."""
    if body is None:
        return None
    choices = body.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        first = choices[0]
        message = first.get("message")
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            return str(message["content"])
        if isinstance(first.get("text"), str):
            return str(first["text"])
    if isinstance(body.get("output_text"), str):  # /v1/responses
        return str(body["output_text"])
    return orjson.dumps(body, option=orjson.OPT_SORT_KEYS).decode()


def usage_of(bodies: Sequence[dict[str, Any] | None]) -> dict[str, int]:
    """Tokens used by the answers that exist (a cancelled branch has none: it is not counted)."""
    total = {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    for body in bodies:
        usage = body.get("usage") if body else None
        if isinstance(usage, dict):
            for key in total:
                value = usage.get(key)
                if isinstance(value, int) and not isinstance(value, bool):
                    total[key] += value
    return total


class Aggregator:
    def __init__(self, spec: Aggregate, names: Sequence[str], embed: Embed | None = None) -> None:
        self.spec = spec
        self.names = list(names)
        self.outcomes: dict[str, Outcome] = {}
        self._embed = embed
        self._vectors: dict[str, list[float]] = {}
        self._agreed: list[str] = []  # the quorum, once reached

    @property
    def pending(self) -> int:
        return len(self.names) - len(self.outcomes)

    async def add(self, outcome: Outcome) -> None:
        self.outcomes[outcome.name] = outcome
        if self.spec.strategy == "quorum" and outcome.ok and not self._agreed:
            if self.spec.match == "embedding":
                if self._embed is None:
                    raise RuntimeError("quorum by embedding needs an embed function")
                self._vectors[outcome.name] = await self._embed(text_of(outcome.result) or "")
            self._agreed = self._quorum()

    def decided(self) -> bool:
        """Whether the result no longer depends on the branches still running."""
        strategy = self.spec.strategy
        if strategy == "first":
            return self.winner is not None or self.pending == 0
        if strategy == "quorum":
            k = self.spec.k or 1
            return bool(self._agreed) or self._largest() + self.pending < k or self.pending == 0
        return self.pending == 0

    @property
    def winner(self) -> Outcome | None:
        ok = [o for o in self.outcomes.values() if o.ok]
        return ok[0] if ok else None  # outcomes keep the order they ended in

    def result(self) -> dict[str, Any]:
        """The parent's result body (a reduce call's output is added by the coordinator)."""
        listed = [self.outcomes.get(n) or _unknown(n) for n in self.names]
        ok = [o for o in listed if o.ok]
        out: dict[str, Any] = {
            "object": "fanout.result",
            "strategy": self.spec.strategy,
            "branches": [o.public() for o in listed],
            # A branch cancelled because the result no longer needed it is not a failure.
            "partial": any(not o.ok and (o.error or {}).get("code") != NOT_NEEDED for o in listed),
            "output": None,
            "usage": usage_of([o.result for o in ok]),
        }
        strategy = self.spec.strategy
        if strategy in ("all", "reduce"):
            out["output"] = {o.name: text_of(o.result) for o in ok}
        elif strategy == "first":
            winner = self.winner
            out["winner"] = winner.name if winner else None
            out["output"] = text_of(winner.result) if winner else None
        else:
            agreed = self._agreed
            out["quorum"] = {
                "k": self.spec.k,
                "match": self.spec.match,
                "reached": bool(agreed),
                "agreeing": agreed,
                "largest": len(agreed) if agreed else self._largest(),
            }
            first = self.outcomes[agreed[0]] if agreed else None
            out["output"] = text_of(first.result) if first else None
        return out

    # -- quorum ------------------------------------------------------------------------------

    def _groups(self) -> list[list[str]]:
        """For each succeeded branch, the succeeded branches that agree with it (itself first)."""
        ok = [o for o in self.outcomes.values() if o.ok]
        if self.spec.match == "exact":
            texts = {o.name: (text_of(o.result) or "").strip() for o in ok}
            return [[n for n in texts if texts[n] == texts[o.name]] for o in ok]
        names = [o.name for o in ok if o.name in self._vectors]
        return [
            [m for m in names if _cosine(self._vectors[n], self._vectors[m]) >= self.spec.threshold]
            for n in names
        ]

    def _largest(self) -> int:
        return max((len(g) for g in self._groups()), default=0)

    def _quorum(self) -> list[str]:
        k = self.spec.k or 1
        best = max(self._groups(), key=len, default=[])
        return best if len(best) >= k else []


#: The error code of a branch cancelled because the strategy was decided without it.
NOT_NEEDED = "not_needed"


def _unknown(name: str) -> Outcome:
    """A branch whose end the coordinator could not learn (the backend failed as it stopped)."""
    error = {"code": "unknown", "message": "the fan-out ended without learning how it ended"}
    return Outcome(name, "", "unknown", None, error)


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=False))
    na = sum(x * x for x in a) ** 0.5
    nb = sum(y * y for y in b) ** 0.5
    return dot / (na * nb) if na and nb else 0.0
