"""Per-model scripts for the fault server (:mod:`genspool.testing.faults`): rules that decide a
model request's latency, outcome and answer by the request's ``model``, instead of the random
draw.

A rule is a JSON object::

    {"model": "slow-400",            # exact match on the body's "model" (or "model_prefix")
     "latency_s": 0.4,               # default: the server's latency_s (+ jitter)
     "outcome": "ok",                # ok | error | hang | reset | malformed | 429
     "status": 503,                  # outcome "error" only: the 5xx sent (default 500)
     "reply": "fixed text",          # outcomes ok/hang: the answer's text instead of the echo
     "replies": [{"role": "assistant", "content": null, "tool_calls": [...]}, ...]}

``replies`` scripts an agent's model: the answer is ``replies[n]`` where ``n`` is the number of
``assistant`` messages already in the request (clamped to the last), so a tool-calling loop
gets its tool call first and its final answer once the tool's result is sent back. Tool-call
``arguments`` are passed on as given, not checked as JSON: a test may want broken ones.
``reply`` and ``replies`` shape chat answers only; an embeddings answer is the usual hash.

The rules are checked as a whole when set, and a bad one is refused with where it is wrong
(``rules[1].status: ...``), so a test's typo fails at once rather than as a random draw.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["OUTCOMES", "Rule", "chat_answer", "parse_rules", "words"]

OUTCOMES = ("ok", "error", "hang", "reset", "malformed", "429")
_FIELDS = ("model", "model_prefix", "latency_s", "outcome", "status", "reply", "replies")
#: The outcomes that end with an answer, which ``reply``/``replies`` can shape.
_ANSWERED = ("ok", "hang")


@dataclass(frozen=True)
class Rule:
    """One scripted behaviour, for the requests whose model it matches."""

    model: str | None = None
    model_prefix: str | None = None
    latency_s: float | None = None
    outcome: str = "ok"
    status: int | None = None
    reply: str | None = None
    replies: tuple[dict[str, Any], ...] | None = None

    def matches(self, model: str) -> bool:
        if self.model is not None:
            return model == self.model
        return self.model_prefix is not None and model.startswith(self.model_prefix)

    @property
    def drawn(self) -> str:
        """The outcome as the stats name it (an error by its status, as a random one is)."""
        return str(self.status or 500) if self.outcome == "error" else self.outcome

    def message(self, messages: Any) -> dict[str, Any] | None:
        """The scripted assistant message answering ``messages``; None: echo as usual."""
        if self.reply is not None:
            return {"role": "assistant", "content": self.reply, "refusal": None}
        if not self.replies:
            return None
        turns = messages if isinstance(messages, list) else []
        said = sum(1 for m in turns if isinstance(m, dict) and m.get("role") == "assistant")
        return dict(self.replies[min(said, len(self.replies) - 1)])

    def to_json(self) -> dict[str, Any]:
        """The rule as it was given, less the fields that hold their defaults."""
        fields = asdict(self)
        if self.replies is not None:
            fields["replies"] = list(self.replies)
        return {k: v for k, v in fields.items() if v != _DEFAULTS[k]}


_DEFAULTS = asdict(Rule())


def parse_rules(raw: Any) -> list[Rule]:
    """Rules from their JSON form; a ValueError says which rule and field is wrong, and why."""
    if not isinstance(raw, list):
        raise ValueError(f"rules must be a list of objects, not {type(raw).__name__}")
    return [_rule(item, f"rules[{i}]") for i, item in enumerate(raw)]


def _rule(raw: Any, where: str) -> Rule:
    _need(isinstance(raw, dict), where, "must be an object")
    unknown = sorted(set(raw) - set(_FIELDS))
    _need(not unknown, where, f"unknown keys {unknown}; a rule has {list(_FIELDS)}")
    _need(("model" in raw) != ("model_prefix" in raw), where, "give model or model_prefix")
    for name in ("model", "model_prefix", "reply"):
        if name in raw:
            _need(isinstance(raw[name], str), f"{where}.{name}", "must be a string")
    _need(raw.get("model_prefix") != "", f"{where}.model_prefix", "must not be empty")
    outcome = raw.get("outcome", "ok")
    _need(outcome in OUTCOMES, f"{where}.outcome", f"must be one of {list(OUTCOMES)}")
    rule = Rule(
        model=raw.get("model"),
        model_prefix=raw.get("model_prefix"),
        latency_s=_latency(raw.get("latency_s"), f"{where}.latency_s"),
        outcome=outcome,
        status=_status(raw.get("status"), outcome, f"{where}.status"),
        reply=raw.get("reply"),
        replies=_replies(raw.get("replies"), f"{where}.replies"),
    )
    shaped = rule.reply is not None or rule.replies is not None
    _need(rule.reply is None or rule.replies is None, where, "give reply or replies, not both")
    _need(
        not shaped or outcome in _ANSWERED, where, "reply and replies need outcome 'ok' or 'hang'"
    )
    return rule


def _latency(value: Any, where: str) -> float | None:
    if value is None:
        return None
    number = isinstance(value, int | float) and not isinstance(value, bool)
    _need(number and value >= 0, where, f"must be a number of seconds >= 0, not {value!r}")
    return float(value)


def _status(value: Any, outcome: str, where: str) -> int | None:
    if value is None:
        return None
    _need(outcome == "error", where, f"applies to outcome 'error' only, not {outcome!r}")
    fivexx = isinstance(value, int) and not isinstance(value, bool) and 500 <= value < 600
    _need(fivexx, where, f"must be a 5xx code, not {value!r}")
    return int(value)


def _replies(value: Any, where: str) -> tuple[dict[str, Any], ...] | None:
    if value is None:
        return None
    _need(isinstance(value, list) and bool(value), where, "must be a non-empty list")
    return tuple(_message(m, f"{where}[{i}]") for i, m in enumerate(value))


def _message(raw: Any, where: str) -> dict[str, Any]:
    """An OpenAI assistant message: text, tool calls, or both."""
    _need(isinstance(raw, dict), where, "must be an assistant message object")
    _need(raw.get("role") == "assistant", f"{where}.role", "must be 'assistant'")
    content = raw.get("content")
    _need(content is None or isinstance(content, str), f"{where}.content", "must be text or null")
    calls = raw.get("tool_calls")
    if calls is not None:
        _need(isinstance(calls, list) and bool(calls), f"{where}.tool_calls", "non-empty list")
        for i, call in enumerate(calls):
            _tool_call(call, f"{where}.tool_calls[{i}]")
    _need(content is not None or bool(calls), where, "needs content or tool_calls")
    return dict(raw)


def _tool_call(raw: Any, where: str) -> None:
    _need(isinstance(raw, dict), where, "must be an object")
    _need(isinstance(raw.get("id"), str), f"{where}.id", "must be a string")
    _need(raw.get("type") == "function", f"{where}.type", "must be 'function'")
    function = raw.get("function")
    _need(isinstance(function, dict), f"{where}.function", "must be an object")
    _need(isinstance(function.get("name"), str), f"{where}.function.name", "must be a string")
    arguments = function.get("arguments")
    _need(isinstance(arguments, str), f"{where}.function.arguments", "must be a JSON string")


def _need(ok: bool, where: str, problem: str) -> None:
    if not ok:
        raise ValueError(f"{where}: {problem}")


# -- the chat answer a script shapes -------------------------------------------------------------


def words(value: Any) -> int:
    """A stand-in token count: the words of ``value``, at least one."""
    return max(1, len(str(value).split()))


def chat_answer(body: dict[str, Any], scripted: dict[str, Any] | None = None) -> dict[str, Any]:
    """The last message echoed back, or the ``scripted`` assistant message, as a completion."""
    messages = body.get("messages") or [{}]
    content = str(messages[-1].get("content") or "")
    message = scripted or {"role": "assistant", "content": content, "refusal": None}
    calls = message.get("tool_calls") or []
    said = [str(message.get("content") or ""), *(c["function"]["arguments"] for c in calls)]
    prompt = sum(words(m.get("content") or "") for m in messages)
    completion = words(" ".join(said))
    return {
        "id": f"chatcmpl-fault-{hashlib.blake2b(content.encode(), digest_size=6).hexdigest()}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": str(body.get("model", "fault-model")),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if calls else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }
