"""Cutting a long text by SmolLM2's own tokenizer, and planning a reduce that cannot loop.

The counter is the bundled model's real tokenizer (a vocab-only load: no weights), through the
card the API and the coordinator use.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from genspool.config import DEFAULT_MODELS, ModelConfig
from genspool.exceptions import InvalidRequest
from genspool.fanout.split import (
    SEAM_SLACK,
    SEPARATOR,
    Chunk,
    ReduceStalled,
    check_shrinks,
    plan_level,
    request_overhead,
    split_text,
    text_budget,
    text_counter,
)
from genspool.fanout.template import render
from genspool.providers.base import CHAT
from genspool.providers.plugins import ModelCard, get_plugin

WINDOW = 2048
MAX_TOKENS = 256
MAP_BODY: dict[str, Any] = {
    "model": "smollm2-135m-instruct",
    "messages": [{"role": "user", "content": "Summarize this text:\n\n{{chunk}}"}],
    "max_tokens": MAX_TOKENS,
}

Count = Callable[[str], int]


def _config(name: str) -> ModelConfig:
    return ModelConfig.model_validate(next(m for m in DEFAULT_MODELS if m["name"] == name))


@pytest.fixture(scope="module")
def card() -> Iterator[ModelCard]:
    config = _config("smollm2-135m-instruct")
    made = get_plugin(config.provider).model_card(config)
    yield made
    if made.close is not None:
        made.close()


@pytest.fixture(scope="module")
def count(card: ModelCard) -> Count:
    counter = text_counter(card)
    assert counter is not None
    return counter


def _prose(count: Count, tokens: int, seed: int = 7) -> str:
    """Paragraphs of varied sentences (punctuation, numbers, accents), ``tokens`` at least."""
    rng = random.Random(seed)
    who = ["The engineer", "A small committee", "Our neighbour's cat", "Every visiting scholar"]
    did = ["reviewed", "ignored", "carefully measured", "argued about", "documented"]
    what = ["the northern bridge", "three unfinished reports", "the budget of 1,284 euros"]
    how = ["before sunrise.", "without telling anyone!", "— and nobody was surprised?"]
    paragraphs: list[str] = []
    total = 0
    while total < tokens * 1.02:  # a paragraph's tokens, added up, are within 2 % of the whole
        words = [rng.choice(p) for _ in range(rng.randint(2, 9)) for p in (who, did, what, how)]
        paragraphs.append(" ".join(words) + f" (note {len(paragraphs)}, café).")
        total += count(paragraphs[-1]) + 1
    return SEPARATOR.join(paragraphs)


@pytest.fixture(scope="module")
def long_text(count: Count) -> str:
    text = _prose(count, 25 * WINDOW)
    assert count(text) >= 25 * WINDOW
    return text


@pytest.fixture(scope="module")
def budget(card: ModelCard) -> int:
    overhead = request_overhead(card, MAP_BODY, "chunk")
    return text_budget(window=WINDOW, overhead=overhead, max_tokens=MAX_TOKENS)


@pytest.fixture(scope="module")
def chunks(long_text: str, budget: int, count: Count) -> list[Chunk]:
    return split_text(long_text, budget=budget, count=count)


def _check_offsets(source: str, chunks: list[Chunk], count: Count, budget: int) -> None:
    for chunk in chunks:
        assert source[chunk.start : chunk.end] == chunk.text
        assert chunk.tokens == count(chunk.text) <= budget


def _prompt_tokens(card: ModelCard, body: dict[str, Any]) -> int:
    counted = card.count(CHAT, body) if card.count is not None else None
    assert counted is not None
    return counted[0]


def _rebuilt(source: str, chunks: list[Chunk]) -> str:
    """The source put back from the chunks by their offsets; only whitespace between them."""
    out, pos = [], 0
    for chunk in chunks:
        assert source[pos : chunk.start].strip() == ""
        out += [source[pos : chunk.start], chunk.text]
        pos = chunk.end
    assert source[pos:].strip() == ""
    return "".join(out) + source[pos:]


# -- counting -----------------------------------------------------------------------------------


def test_text_counter_counts_with_the_models_tokenizer(count: Count) -> None:
    assert count("") == 0
    assert count("Hello world.") < count("Hello world. " * 10) <= 10 * count("Hello world. ")
    assert count("<|im_end|>") == 1  # a special token, as inside a rendered prompt


def test_text_counter_by_difference_and_none() -> None:
    echo = ModelCard("echo", frozenset({CHAT}), 100, get_plugin("echo").model_card(_echo()).count)
    by_difference = text_counter(echo)
    assert by_difference is not None
    assert by_difference("one two three four five") - by_difference("one") == 4
    assert text_counter(ModelCard("remote", frozenset({CHAT}), 100)) is None


def _echo() -> ModelConfig:
    return ModelConfig.model_validate({"name": "echo", "provider": "echo", "context_window": 100})


def test_request_overhead_is_the_body_with_an_empty_chunk(card: ModelCard, count: Count) -> None:
    overhead = request_overhead(card, MAP_BODY, "chunk")
    assert overhead == _prompt_tokens(card, render(MAP_BODY, {"chunk": ""}))
    assert overhead > count("Summarize this text:\n\n")  # the chat template's own tokens


@pytest.mark.parametrize(
    ("content", "times"), [("Summarize.", 0), ("{{chunk}} and again {{ chunk }}", 2)]
)
def test_request_overhead_needs_the_placeholder_once(
    card: ModelCard, content: str, times: int
) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": content}]}
    with pytest.raises(InvalidRequest, match=f"{{{{chunk}}}} exactly once; it uses it {times}"):
        request_overhead(card, body, "chunk")


def test_no_room_for_text_names_the_sizes() -> None:
    with pytest.raises(
        InvalidRequest,
        match=r"^the map prompt takes 1900 tokens and max_tokens 200; the model's window is "
        r"2048: no room for any text$",
    ):
        text_budget(window=2048, overhead=1900, max_tokens=200)
    assert text_budget(window=2048, overhead=40, max_tokens=200) == 2048 - 40 - 200 - SEAM_SLACK


@pytest.mark.parametrize("budget", [0, -5])
def test_split_and_plan_refuse_a_budget_without_room(budget: int, count: Count) -> None:
    with pytest.raises(InvalidRequest, match=f"a budget of {budget} tokens leaves no room"):
        split_text("some text", budget=budget, count=count)
    with pytest.raises(InvalidRequest, match=f"a budget of {budget} tokens leaves no room"):
        plan_level(["some text"], budget=budget, count=count)


# -- splitting ----------------------------------------------------------------------------------


def test_a_long_text_splits_into_chunks_that_fit(
    long_text: str, chunks: list[Chunk], budget: int, count: Count
) -> None:
    assert len(chunks) >= 25
    _check_offsets(long_text, chunks, count, budget)
    assert _rebuilt(long_text, chunks) == long_text
    # Cut at paragraph ends where one fits: the chunks are nearly full and end a paragraph.
    assert sum(c.tokens for c in chunks) / len(chunks) > 0.85 * budget
    assert all(long_text[c.end : c.end + 2] in ("\n\n", "") for c in chunks)


def test_every_filled_map_request_fits_the_window(
    card: ModelCard, chunks: list[Chunk], budget: int
) -> None:
    overhead = request_overhead(card, MAP_BODY, "chunk")
    for chunk in chunks:
        prompt = _prompt_tokens(card, render(MAP_BODY, {"chunk": chunk.text}))
        assert abs(prompt - overhead - chunk.tokens) <= SEAM_SLACK // 2
        assert prompt + MAX_TOKENS <= WINDOW


def test_overlap_repeats_the_end_of_the_previous_chunk(
    long_text: str, budget: int, count: Count
) -> None:
    text = long_text[: len(long_text) // 5]
    chunks = split_text(text, budget=budget, count=count, overlap=100)
    _check_offsets(text, chunks, count, budget)
    overlaps = 0
    for before, after in itertools.pairwise(chunks):
        assert before.start < after.start and before.end < after.end
        if after.start < before.end:  # "up to": a chunk starting a paragraph repeats nothing
            overlaps += 1
            assert count(text[after.start : before.end]) <= 100
        else:
            assert text[before.end : after.start].strip() == ""
    assert overlaps >= len(chunks) // 2
    assert chunks[0].start == 0 and text[chunks[-1].end :].strip() == ""


def test_overlap_must_be_under_the_budget(count: Count) -> None:
    with pytest.raises(InvalidRequest, match="overlap_tokens is 50; it must be at least 0 and"):
        split_text("text", budget=50, count=count, overlap=50)


def test_a_huge_single_word_is_cut_inside(count: Count) -> None:
    word = "Pneumonoultramicroscopicsilicovolcanoconiosis" * 120
    text = f"It starts here. {word} And it ends."
    chunks = split_text(text, budget=60, count=count)
    _check_offsets(text, chunks, count, 60)
    assert _rebuilt(text, chunks) == text
    assert len(chunks) >= count(word) // 60


def test_a_character_over_the_budget_is_an_error(count: Count) -> None:
    assert count("👨") == 3  # one emoji, three byte tokens
    assert [c.text for c in split_text("ok 👨 done", budget=3, count=count)] == ["ok", "👨", "done"]
    with pytest.raises(InvalidRequest, match="'👨' at offset 3 is 3 tokens and cannot be cut"):
        split_text("ok 👨 done", budget=2, count=count)


# -- reducing -----------------------------------------------------------------------------------


def _outputs(count: Count, sizes: list[int]) -> list[str]:
    """Varied 'model outputs' of about ``sizes`` tokens each."""
    text = _prose(count, sum(sizes) + 100, seed=11)
    out, pos = [], 0
    for size in sizes:
        end = pos + size * 4
        out.append(text[pos:end].strip())
        pos = end
    return out


def test_plan_level_packs_consecutive_outputs_into_groups_that_fit(count: Count) -> None:
    texts = _outputs(count, [120, 300, 80, 200, 250, 60, 90, 310, 40, 150])
    groups = plan_level(texts, budget=600, count=count)
    assert [i for g in groups for i in g.indices] == list(range(len(texts)))
    for group, following in zip(groups, [*groups[1:], None], strict=True):
        assert group.piece is None
        assert group.text == SEPARATOR.join(texts[i] for i in group.indices)
        assert group.tokens == count(group.text) <= 600
        if following is not None:  # greedy: the next output would not have fitted
            more = SEPARATOR.join(texts[i] for i in (*group.indices, following.indices[0]))
            assert count(more) > 600
    assert len(groups) < len(texts)


def test_plan_level_splits_an_output_too_long_alone(count: Count) -> None:
    texts = _outputs(count, [100, 900, 100])
    assert count(texts[1]) > 400
    groups = plan_level(texts, budget=400, count=count)
    pieces = [g for g in groups if g.piece is not None]
    assert len(pieces) >= count(texts[1]) / 400 and all(g.indices == (1,) for g in pieces)
    assert _rebuilt(texts[1], [g.piece for g in pieces if g.piece is not None]) == texts[1]
    assert groups[0].indices == (0,) and groups[-1].indices == (2,)
    assert all(g.tokens <= 400 for g in groups)


def test_check_shrinks_lets_progress_pass() -> None:
    check_shrinks(1, before_tokens=9000, after_tokens=2000, groups_before=6, groups_after=2)
    check_shrinks(2, before_tokens=2000, after_tokens=500, groups_before=2, groups_after=1)
    check_shrinks(1, before_tokens=900, after_tokens=800, groups_before=1, groups_after=1)


@pytest.mark.parametrize(
    ("args", "why"),
    [
        ((3, 4000, 4000, 3, 2), "its outputs are no shorter than its input"),
        ((2, 4000, 3900, 3, 3), "its outputs need as many reduce requests as it had"),
        ((4, 900, 700, 1, 2), "its one request's output does not fit one request"),
    ],
)
def test_check_shrinks_stops_a_level_that_did_not_shrink(
    args: tuple[int, int, int, int, int], why: str
) -> None:
    level, before, after, groups_before, groups_after = args
    with pytest.raises(ReduceStalled) as raised:
        check_shrinks(level, before, after, groups_before, groups_after)
    assert raised.value.message.startswith(
        f"reduce level {level} did not shrink: {before} tokens in {groups_before} request(s) "
        f"became {after} tokens needing {groups_after} request(s); {why}"
    )
    assert isinstance(raised.value, InvalidRequest) and raised.value.retryable is False


def _reduce(
    texts: list[str], model: Callable[[str], str], budget: int, count: Count
) -> tuple[str, int]:
    """The coordinator's loop, with a text function standing in for the model: the final
    answer and the number of levels run before the final request."""
    level, groups = 0, plan_level(texts, budget=budget, count=count)
    while len(groups) > 1:
        level += 1
        outputs = [model(g.text) for g in groups]
        planned = plan_level(outputs, budget=budget, count=count)
        before = sum(count(t) for t in texts)
        check_shrinks(level, before, sum(count(o) for o in outputs), len(groups), len(planned))
        texts, groups = outputs, planned
    return model(groups[0].text), level


def test_a_reduce_that_shrinks_ends_and_one_that_does_not_is_stopped(count: Count) -> None:
    texts = _outputs(count, [200] * 24)

    def shorten(text: str) -> str:  # a "model" that keeps the first quarter
        return text[: max(1, len(text) // 4)]

    answer, levels = _reduce(texts, shorten, 500, count)
    assert answer and 1 <= levels <= len(plan_level(texts, budget=500, count=count))

    def repeat(text: str) -> str:  # a "model" that answers with all it was given
        return text

    with pytest.raises(ReduceStalled, match="reduce level 1 did not shrink"):
        _reduce(texts, repeat, 500, count)
