"""LlamaChatProvider with the real bundled SmolLM2 weights: batched decoding, OpenAI bodies,
stop conditions, streaming deltas, cancellation. Short prompts and few tokens keep it quick."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from genspool.exceptions import InvalidRequest, ModelError
from genspool.providers.base import CHAT, EMBEDDINGS, Request
from genspool.providers.llama import LlamaChatProvider, _TextStream

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
BATCH = 4


@pytest.fixture(scope="module")
def provider(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaChatProvider]:
    """Loaded once for the module; its converted weights go to a temporary cache."""
    cache = tmp_path_factory.mktemp("models")
    p = LlamaChatProvider(MODEL, context_window=512, max_batch_size=BATCH, cache_dir=cache)
    asyncio.run(p.load())
    yield p
    asyncio.run(p.aclose())


def chat(content: str, **params: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": [{"role": "user", "content": content}], **params}


def greedy(content: str, max_tokens: int = 16, **params: Any) -> dict[str, Any]:
    return chat(content, max_tokens=max_tokens, temperature=0, **params)


async def one(provider: LlamaChatProvider, body: dict[str, Any]) -> dict[str, Any]:
    [result] = await provider.handle([Request(CHAT, body)])
    assert isinstance(result, dict), result
    return result


def content(response: dict[str, Any]) -> str:
    text: str = response["choices"][0]["message"]["content"]
    return text


async def test_a_batch_returns_one_openai_body_per_request(provider: LlamaChatProvider) -> None:
    bodies = [
        greedy("What is the capital of France?", 8),
        greedy("Name a colour.", 8),
        greedy("Say hello in German.", 8),
        greedy("What is 2 + 2?", 8),
    ]
    results = await provider.handle([Request(CHAT, b) for b in bodies])

    assert len(results) == 4
    for body, r in zip(bodies, results, strict=True):
        assert isinstance(r, dict), r
        assert set(r) == {"id", "object", "created", "model", "choices", "usage"}
        assert r["id"].startswith("chatcmpl-") and r["object"] == "chat.completion"
        assert isinstance(r["created"], int) and r["model"] == MODEL
        [choice] = r["choices"]
        assert choice["index"] == 0 and choice["logprobs"] is None
        assert choice["finish_reason"] in {"stop", "length"}
        assert choice["message"]["role"] == "assistant" and choice["message"]["refusal"] is None
        assert isinstance(choice["message"]["content"], str) and choice["message"]["content"]
        usage = r["usage"]
        assert usage["prompt_tokens"] == provider.count_tokens(CHAT, body)
        assert 0 < usage["completion_tokens"] <= 8
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert len({r["id"] for r in results if isinstance(r, dict)}) == 4


async def test_batching_does_not_change_the_output(provider: LlamaChatProvider) -> None:
    target = greedy("Write one sentence about the sea.", 24)
    sampled = chat("Give me a name for a dog.", max_tokens=12, temperature=0.9, seed=42)
    alone = await one(provider, target)
    alone_sampled = await one(provider, sampled)

    others = [greedy("hi", 24), greedy("Explain in detail how a bicycle gear works.", 24)]
    batch = [Request(CHAT, b) for b in (others[0], target, sampled, others[1])]
    together = await provider.handle(batch)

    assert isinstance(together[1], dict) and isinstance(together[2], dict)
    assert content(together[1]) == content(alone)
    assert together[1]["usage"] == alone["usage"]
    assert content(together[2]) == content(alone_sampled)  # seeded sampling too


async def test_max_tokens_ends_with_length(provider: LlamaChatProvider) -> None:
    r = await one(provider, greedy("Write a long story about a dragon.", 5))
    assert r["choices"][0]["finish_reason"] == "length"
    assert r["usage"]["completion_tokens"] == 5

    r = await one(provider, chat("Write a long story about a dragon.", max_completion_tokens=3))
    assert r["usage"]["completion_tokens"] == 3


async def test_a_stop_string_ends_the_text_before_it(provider: LlamaChatProvider) -> None:
    prompt = "List the days of the week."
    full = content(await one(provider, greedy(prompt, 24)))
    words = full.split()
    assert len(words) > 4, full
    stop = " " + words[3]
    deltas: list[str] = []

    [r] = await provider.handle(
        [Request(CHAT, greedy(prompt, 24, stop=[stop, "@@"]), on_token=deltas.append)]
    )

    assert isinstance(r, dict)
    assert content(r) == full[: full.index(stop)]
    assert r["choices"][0]["finish_reason"] == "stop"
    assert "".join(deltas) == content(r)


async def test_on_token_deltas_add_up_to_the_content(provider: LlamaChatProvider) -> None:
    streams: list[list[str]] = [[], []]
    bodies = [
        chat("Write a short poem about winter in French.", max_tokens=30, seed=1),
        greedy("Say 'café' and 'naïve' and add a smiley emoji.", 30),
    ]
    results = await provider.handle(
        [Request(CHAT, b, on_token=s.append) for b, s in zip(bodies, streams, strict=True)]
    )

    for r, deltas in zip(results, streams, strict=True):
        assert isinstance(r, dict)
        assert deltas and all(d and "\ufffd" not in d for d in deltas)
        assert "".join(deltas) == content(r)


def test_text_stream_never_splits_a_character_or_leaks_a_stop() -> None:
    sent: list[str] = []
    stream = _TextStream(["END"], sent.append)
    euro = "€".encode()  # three bytes, arriving in two tokens
    assert not stream.feed(b"price 5" + euro[:1])
    assert sent == ["price 5"]
    assert not stream.feed(euro[1:] + b" E")  # "E" may start the stop string: held back
    assert sent == ["price 5", "€ "]
    assert stream.feed(b"ND and more")
    assert stream.text == "price 5€ " and "".join(sent) == stream.text

    cut = _TextStream([], sent.append)
    cut.feed(b"ok " + euro[:2])  # max_tokens cut the character in half
    cut.finish()
    assert cut.text == "ok "


async def test_cancelling_returns_at_once_and_the_next_call_works(
    provider: LlamaChatProvider,
) -> None:
    reference = content(await one(provider, greedy("What is the capital of Italy?", 12)))
    long = [
        Request(CHAT, greedy(f"Write a very long essay about topic {i}.", 400))
        for i in range(BATCH)
    ]
    task = asyncio.create_task(provider.handle(long))
    await asyncio.sleep(1.0)

    started = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - started < 0.2

    started = time.monotonic()
    after = await one(provider, greedy("What is the capital of Italy?", 12))
    assert time.monotonic() - started < 10  # waited for at most one step of the old batch
    assert content(after) == reference  # nothing of the cancelled batch is left in the cache


async def test_a_failing_request_does_not_fail_the_others(provider: LlamaChatProvider) -> None:
    def broken_sink(delta: str) -> None:
        raise BrokenPipeError("client went away")

    too_long = chat("word " * 600)
    bad = {"messages": "not a list"}
    too_many = greedy("hi", 10_000)
    results = await provider.handle(
        [
            Request(CHAT, too_long),
            Request(CHAT, greedy("hi", 4)),
            Request(CHAT, bad),
            Request(CHAT, too_many),
            Request(CHAT, greedy("Tell me a joke.", 8), broken_sink),
        ]
    )

    assert isinstance(results[1], dict)
    errors = [r for i, r in enumerate(results) if i != 1]
    assert all(isinstance(e, ModelError) and not e.retryable for e in errors), errors
    assert "context window" in str(results[0]) and "client went away" in str(results[4])
    with pytest.raises(InvalidRequest):
        provider.count_tokens(CHAT, bad)


async def test_larger_batches_run_in_waves(provider: LlamaChatProvider) -> None:
    bodies = [greedy(f"Count to {n}.", 4) for n in range(2, 2 + BATCH + 2)]
    results = await provider.handle([Request(CHAT, b) for b in bodies])
    assert len(results) == BATCH + 2
    assert all(isinstance(r, dict) and r["usage"]["completion_tokens"] > 0 for r in results)


def test_count_tokens_needs_no_weights(tmp_path: Path) -> None:
    fresh = LlamaChatProvider(MODEL, cache_dir=tmp_path)
    body = chat("How many tokens is this?")
    n = fresh.count_tokens(CHAT, body)
    assert n is not None and 20 < n < 60
    assert fresh.count_tokens(EMBEDDINGS, {"input": "x"}) is None
    assert fresh.weights_path is None and not any(tmp_path.iterdir())  # nothing loaded
    asyncio.run(fresh.aclose())
