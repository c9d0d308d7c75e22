"""Cutting a long text to fit a model's window, and planning a reduce that cannot loop.

Pure measurement and cutting, no I/O: the coordinator decides what to submit. Sizes are tokens
of the target model's own tokenizer (:func:`text_counter`), never characters, so every mapped
request fits the window with its prompt and ``max_tokens``.

A request's size is not exactly ``overhead + tokens(text)``: byte-level BPE merges across the
seam where the text meets the prompt's own words (a ``"\\n\\n"`` before the text is one token
alone, two before a word). :data:`SEAM_SLACK` tokens are kept free for that; the tests check the
sum against a real count of every filled request.

Termination of a hierarchical reduce (:func:`plan_level`, :func:`check_shrinks`): the
coordinator plans the outputs into groups, each group one reduce request that fits the budget;
while there is more than one group it runs the level and plans the level's outputs again.
:func:`check_shrinks` lets a level pass only if its outputs are fewer tokens than its input and,
unless they now fit one request, need fewer requests than the level had. The number of requests
is a positive integer that strictly falls at each level until it is 1, so a reduce that starts
with G groups ends after at most G levels, or stops earlier with :class:`ReduceStalled`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from semantic_text_splitter import TextSplitter

from genspool.exceptions import InvalidRequest
from genspool.fanout.template import TemplateError, placeholders, render
from genspool.providers.base import CHAT
from genspool.providers.plugins import ModelCard

__all__ = [
    "SEAM_SLACK",
    "SEPARATOR",
    "Chunk",
    "Group",
    "ReduceStalled",
    "TextCount",
    "check_shrinks",
    "plan_level",
    "request_overhead",
    "split_text",
    "text_budget",
    "text_counter",
]

#: Tokens of a piece of text by one model's tokenizer.
TextCount = Callable[[str], int]

#: What joins consecutive outputs in one reduce request: a paragraph break, which the
#: splitter also treats as the strongest boundary when one output has to be cut.
SEPARATOR = "\n\n"

#: Tokens kept free for merges at the two seams between the inserted text and the prompt around
#: it (at most one token each way per seam with SmolLM2's byte-level BPE; two for other merges).
SEAM_SLACK = 4


class ReduceStalled(InvalidRequest):
    """A reduce level did not shrink its input: another level could loop forever, so the
    fan-out ends with this error. Not retryable: the same outputs would stall the same way."""

    code = "reduce_stalled"
    retryable = False


@dataclass(frozen=True, slots=True)
class Chunk:
    """A piece of the source text: ``source[start:end] == text``; ``tokens`` is its count."""

    text: str
    start: int
    end: int
    tokens: int


@dataclass(frozen=True, slots=True)
class Group:
    """One reduce request's input: the outputs ``indices`` joined by :data:`SEPARATOR`, or,
    when ``piece`` is set, one piece of the single output ``indices[0]``, too long alone
    (``piece.start``/``piece.end`` are offsets in that output's text)."""

    indices: tuple[int, ...]
    text: str
    tokens: int
    piece: Chunk | None = None


# -- measuring ----------------------------------------------------------------------------------


def text_counter(card: ModelCard) -> TextCount | None:
    """Counts a piece of text with the model's own tokenizer; None when the card cannot count.

    A counter with ``count_text`` (the llama.cpp card's :class:`PromptCounter`) tokenizes the
    text alone; any other chat counter is asked for the difference the text makes as a user
    message, which is what the text costs inside a request.
    """
    direct = getattr(card.count, "count_text", None)
    if callable(direct):
        return _as_count(direct)
    counter = card.count
    if counter is None or CHAT not in card.endpoints:
        return None
    empty = counter(CHAT, _user(""))
    if not empty:
        return None
    base = empty[0]

    def by_difference(text: str) -> int:
        counted = counter(CHAT, _user(text))
        return (counted[0] if counted else base) - base

    return by_difference


def _as_count(method: Callable[[str], Any]) -> TextCount:
    return lambda text: int(method(text))


def _user(text: str) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": text}]}


def request_overhead(
    card: ModelCard,
    body_template: dict[str, Any],
    placeholder: str,
    values: Mapping[str, Any] | None = None,
) -> int:
    """Tokens a chat request costs around its inserted text: the chat template and the
    prompt's own words, counted by ``card.count`` on the body with ``{{placeholder}}`` empty.

    ``values`` fill the body's other placeholders. The placeholder must appear exactly once,
    or the text's cost would not be its own count.
    """
    times = list(placeholders(body_template)).count(placeholder)
    if times != 1:
        raise InvalidRequest(
            f"the body must use {{{{{placeholder}}}}} exactly once; it uses it {times} times",
            param="body",
        )
    try:
        body = render(body_template, {**(values or {}), placeholder: ""})
    except TemplateError as exc:
        raise InvalidRequest(f"the body's template: {exc}", param="body") from exc
    counted = card.count(CHAT, body) if card.count is not None else None
    if not counted:
        raise InvalidRequest(f"model {card.name!r} cannot count the tokens of a chat request")
    return counted[0]


def text_budget(*, window: int, overhead: int, max_tokens: int, what: str = "map") -> int:
    """Tokens left for the inserted text, :data:`SEAM_SLACK` kept free; an
    :class:`InvalidRequest` naming the sizes when nothing is left."""
    budget = window - overhead - max_tokens - SEAM_SLACK
    if budget <= 0:
        raise InvalidRequest(
            f"the {what} prompt takes {overhead} tokens and max_tokens {max_tokens}; "
            f"the model's window is {window}: no room for any text"
        )
    return budget


# -- splitting ----------------------------------------------------------------------------------


def split_text(text: str, *, budget: int, count: TextCount, overlap: int = 0) -> list[Chunk]:
    """``text`` in consecutive chunks of at most ``budget`` tokens each, cut at the strongest
    boundary that fits (paragraphs, lines, sentences, words, then characters).

    Chunks are trimmed (no request is spent on a run of blank lines), so between two chunks
    there is only whitespace. With ``overlap``, a chunk may start up to that many tokens before
    the previous one ended.
    """
    _check_budget(budget)
    if not 0 <= overlap < budget:
        raise InvalidRequest(
            f"overlap_tokens is {overlap}; it must be at least 0 and under the chunk budget "
            f"of {budget} tokens",
            param="overlap_tokens",
        )
    if not text:
        return []
    splitter = TextSplitter.from_callback(count, budget, overlap=overlap, trim=True)
    return [_fitted(piece, start, budget, count) for start, piece in splitter.chunk_indices(text)]


def _check_budget(budget: int) -> None:
    if budget <= 0:
        raise InvalidRequest(f"a budget of {budget} tokens leaves no room for any text")


def _fitted(piece: str, start: int, budget: int, count: TextCount) -> Chunk:
    """The splitter's piece, recounted. It cuts inside a word down to single characters, so
    with a counter that always answers the same a piece is over only when it is one
    character of more tokens than the budget: an error, as no cut can help."""
    tokens = count(piece)
    if tokens > budget:
        raise InvalidRequest(
            f"the text {piece[:40]!r} at offset {start} is {tokens} tokens and cannot be cut: "
            f"it is over the budget of {budget}"
        )
    return Chunk(piece, start, start + len(piece), tokens)


# -- reducing -----------------------------------------------------------------------------------


def plan_level(
    texts: Sequence[str], *, budget: int, count: TextCount, separator: str = SEPARATOR
) -> list[Group]:
    """One reduce level: consecutive outputs packed greedily into groups whose joined text
    fits ``budget``; an output over the budget alone becomes groups of its pieces
    (:func:`split_text`), each with ``piece`` set. Every group is counted as joined."""
    _check_budget(budget)
    groups: list[Group] = []
    current: list[int] = []
    for i, text in enumerate(texts):
        if current and count(_joined(texts, [*current, i], separator)) <= budget:
            current.append(i)
            continue
        _close(groups, texts, current, separator, count)
        if count(text) <= budget:
            current = [i]
        else:
            current = []
            pieces = split_text(text, budget=budget, count=count)
            groups.extend(Group((i,), c.text, c.tokens, piece=c) for c in pieces)
    _close(groups, texts, current, separator, count)
    return groups


def _joined(texts: Sequence[str], indices: Sequence[int], separator: str) -> str:
    return separator.join(texts[i] for i in indices)


def _close(
    groups: list[Group],
    texts: Sequence[str],
    current: list[int],
    separator: str,
    count: TextCount,
) -> None:
    if current:
        text = _joined(texts, current, separator)
        groups.append(Group(tuple(current), text, count(text)))


def check_shrinks(
    level: int, before_tokens: int, after_tokens: int, groups_before: int, groups_after: int
) -> None:
    """Raise :class:`ReduceStalled` unless reduce level ``level`` made progress.

    ``before_tokens``/``groups_before``: the level's input and its number of requests;
    ``after_tokens``/``groups_after``: its outputs and the requests they need at the next level
    (``len(plan_level(outputs, ...))``). Progress is fewer tokens, and fewer requests unless
    the outputs now fit one; see the module's docstring for why that ends every reduce.
    """
    if after_tokens >= before_tokens:
        why = "its outputs are no shorter than its input"
    elif groups_after > 1 and groups_after >= groups_before:
        why = "its outputs need as many reduce requests as it had"
        if groups_before == 1:
            why = "its one request's output does not fit one request"
    else:
        return
    raise ReduceStalled(
        f"reduce level {level} did not shrink: {before_tokens} tokens in {groups_before} "
        f"request(s) became {after_tokens} tokens needing {groups_after} request(s); {why} "
        "(ask the reduce for shorter answers, lower its max_tokens, or use a longer-window model)"
    )
