"""Unit tests of the pieces that are pure data in, decision out: retry policy, event hub,
models file, request validation (with the zero-latency echo model and the real embedding
tokenizer)."""

from __future__ import annotations

import asyncio
import random
from pathlib import Path

import pytest

from genspool.api.validation import validate_request
from genspool.backends.memory import MemoryBackend
from genspool.config import DEFAULT_MODELS, ModelConfig, load_models
from genspool.core.events import EventHub, JobChanged, TokenDelta
from genspool.core.queue import Queue
from genspool.core.retry import RetryPolicy
from genspool.exceptions import ConfigError, ContextWindowExceeded, InvalidRequest, UnknownModel
from genspool.runtime import ModelCatalog


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    policy = RetryPolicy(base_s=1.0, cap_s=8.0, rng=random.Random(1))
    for attempt, ceiling in ((1, 1.0), (2, 2.0), (3, 4.0), (4, 8.0), (9, 8.0)):
        delays = [policy.backoff(attempt) for _ in range(500)]
        assert min(delays) >= 0 and max(delays) <= ceiling
        assert max(delays) > ceiling * 0.8  # spread over the whole range, not a constant


def test_retry_decision() -> None:
    policy = RetryPolicy(base_s=0.1, cap_s=1.0)
    assert policy.next_delay(3, 3, retryable=True) is None
    assert policy.next_delay(1, 3, retryable=False) is None
    assert policy.next_delay(1, 3, retryable=True, retry_after=7.0) == 7.0
    delay = policy.next_delay(1, 3, retryable=True)
    assert delay is not None and 0 <= delay <= 0.1


async def test_event_hub_routes_by_job_and_to_wildcards() -> None:
    hub = EventHub()
    one, every = hub.subscribe(["a"]), hub.subscribe(None)
    hub.publish(JobChanged("a", "running"))
    hub.publish(JobChanged("b", "running"))
    assert one.queue.qsize() == 1 and every.queue.qsize() == 2
    assert hub.wants("a") and hub.wants("zzz")  # the wildcard listens to everything
    one.close()
    every.close()
    assert not hub.wants("a")


async def test_a_full_subscriber_drops_instead_of_blocking() -> None:
    hub = EventHub(maxsize=2)
    sub = hub.subscribe(["a"])
    for i in range(5):
        hub.publish(TokenDelta("a", str(i)))
    assert sub.queue.qsize() == 2 and sub.dropped == 3
    await asyncio.sleep(0)


def test_models_file_errors_name_the_entry_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "m.yaml"
    bad.write_text(
        "models:\n  - name: x\n    provider: llama_cpp\n    batching: {max_batch_size: 0}\n"
    )
    with pytest.raises(ConfigError, match=r"models\[0\]\.batching\.max_batch_size"):
        load_models(bad)
    bad.write_text("models:\n  - name: x\n    provider: openai\n")
    with pytest.raises(ConfigError, match="base_url"):
        load_models(bad)
    bad.write_text("nope: 1\n")
    with pytest.raises(ConfigError, match="top-level 'models:'"):
        load_models(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_models(tmp_path / "missing.yaml")
    assert load_models(None) == [ModelConfig.model_validate(m) for m in DEFAULT_MODELS]


def registry() -> ModelCatalog:
    return ModelCatalog(
        [
            ModelConfig(name="echo", provider="echo", context_window=20),
            ModelConfig(name="all-minilm-l6-v2", provider="onnx_embedding", context_window=256),
        ]
    )


CHAT = "/v1/chat/completions"


def chat(content: str = "hi", **extra: object) -> dict[str, object]:
    return {"model": "echo", "messages": [{"role": "user", "content": content}], **extra}


def test_validation_accepts_a_good_request_and_names_bad_fields() -> None:
    reg = registry()
    assert validate_request(reg, CHAT, chat()) == (reg.config("echo"), 1)
    with pytest.raises(UnknownModel, match="all-minilm-l6-v2, echo"):
        validate_request(reg, CHAT, {**chat(), "model": "gpt-9"})
    with pytest.raises(InvalidRequest, match=r"body\.messages\[0\]\.role"):
        validate_request(reg, CHAT, {"model": "echo", "messages": [{"role": "robot"}]})
    with pytest.raises(InvalidRequest, match=r"body\.temperature"):
        validate_request(reg, CHAT, chat(temperature=9))
    with pytest.raises(InvalidRequest, match="serves /v1/embeddings, not"):
        validate_request(reg, CHAT, {**chat(), "model": "all-minilm-l6-v2"})


def test_context_window_check_gives_both_numbers() -> None:
    with pytest.raises(ContextWindowExceeded, match="3 tokens and max_tokens asks for 30"):
        validate_request(registry(), CHAT, chat("one two three", max_tokens=30))


def test_embedding_inputs_are_measured_with_the_model_tokenizer() -> None:
    reg = registry()
    body = {"model": "all-minilm-l6-v2", "input": ["short text", "word " * 400]}
    with pytest.raises(ContextWindowExceeded, match=r"input\[1\] has 402 tokens"):
        validate_request(reg, "/v1/embeddings", body)
    with pytest.raises(InvalidRequest, match="token-id arrays"):
        validate_request(reg, "/v1/embeddings", {"model": "all-minilm-l6-v2", "input": [[1, 2]]})


def test_a_relay_restarted_on_another_event_loop_still_sends() -> None:
    """The CLI runs the queue on one loop for its start-up checks, then on the server's: the
    relay's outbox must not stay bound to the first loop (its sender would die silently)."""
    sent: list[bytes] = []

    class Recording(MemoryBackend):
        cross_process_events = True

        async def broadcast(self, payload: bytes) -> None:
            sent.append(payload)

    queue = Queue(Recording())

    async def cycle(text: str) -> None:
        await queue.connect()
        await asyncio.sleep(0.05)  # the sender now waits on its outbox (binding it to this loop)
        queue.publish(TokenDelta("j", text))
        await asyncio.sleep(0.05)
        await queue.close()

    asyncio.run(cycle("first"))
    asyncio.run(cycle("second"))
    assert any(b"second" in p for p in sent), sent
