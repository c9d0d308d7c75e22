"""Each resilience layer alone, on a scripted provider (a fake, named as such: it only replays
the outcomes a test gives it) and a fake clock whose ``sleep`` moves time instead of waiting."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pytest

from genspool.config import ModelConfig, check_fallbacks, load_models
from genspool.core.retry import RetryPolicy
from genspool.exceptions import (
    CircuitOpen,
    ConfigError,
    ModelError,
    ModelRateLimited,
    ModelTimeout,
)
from genspool.providers.base import CHAT, EMBEDDINGS, Provider, Request, Response
from genspool.resilience import (
    NAMESPACE,
    Breaker,
    BreakerLayer,
    BreakerPolicy,
    CallTimeout,
    Fallback,
    InCallRetry,
    JobDeadline,
    LocalShared,
    PerRequest,
    RateLimit,
    Shared,
    State,
    find_layer,
)
from genspool.resilience.layer import Layer
from genspool.resilience.ratelimit import request_tokens
from genspool.runtime import ModelRegistry

Result = Response | ModelError


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def ok(model: str = "m") -> Response:
    return {"object": "chat.completion", "model": model, "choices": []}


def fail(retryable: bool = True, retry_after: float | None = None) -> ModelError:
    return ModelError("scripted failure", retryable=retryable, retry_after=retry_after)


class ScriptedProvider(Provider):
    """Answers each request with the next scripted outcome (a fake: it runs no model)."""

    endpoints = frozenset({CHAT, EMBEDDINGS})

    def __init__(
        self, model: str = "m", script: Sequence[Result] = (), default: Result | None = None
    ) -> None:
        super().__init__(model)
        self.script = list(script)
        self.default = default if default is not None else ok(model)
        self.calls: list[list[Request]] = []
        self.delay_s = 0.0

    @property
    def requests(self) -> int:
        return sum(len(c) for c in self.calls)

    async def handle(self, batch: Sequence[Request]) -> list[Result]:
        self.calls.append(list(batch))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        return [self.script.pop(0) if self.script else self._default() for _ in batch]

    def _default(self) -> Result:
        return dict(self.default) if isinstance(self.default, dict) else self.default

    def count_tokens(self, url: str, body: dict[str, Any]) -> int | None:
        if url != CHAT:
            return None  # as a provider without a tokenizer for that endpoint
        return sum(len(str(m["content"]).split()) for m in body["messages"])


def chat(text: str = "one two three", **body: Any) -> Request:
    return Request(CHAT, {"model": "m", "messages": [{"role": "user", "content": text}], **body})


def batch(n: int) -> list[Request]:
    return [chat(f"request {i}") for i in range(n)]


class RecordingShared(LocalShared):
    def __init__(self) -> None:
        super().__init__()
        self.reservations: list[tuple[str, float, float, float]] = []

    async def reserve(
        self, key: str, cost: float, rate_per_s: float, burst: float, now: float
    ) -> float:
        self.reservations.append((key, cost, rate_per_s, burst))
        return await super().reserve(key, cost, rate_per_s, burst, now)


def breaker_stack(
    provider: Provider, clock: FakeClock, shared: LocalShared | None = None, **policy: Any
) -> BreakerLayer:
    breaker = Breaker(BreakerPolicy(**policy), clock)
    return BreakerLayer(provider, breaker=breaker, shared=Shared(*[shared or LocalShared()] * 2))


# -- circuit breaker --------------------------------------------------------------------------


async def test_breaker_opens_after_consecutive_failures_and_stops_calling() -> None:
    clock = FakeClock()
    inner = ScriptedProvider(default=fail())
    layer = breaker_stack(inner, clock, failures=3, failure_ratio=None, cooldown_s=10)
    for _ in range(2):
        await layer.handle(batch(1))
    assert layer.breaker.state is State.CLOSED
    await layer.handle(batch(1))
    assert layer.breaker.state is State.OPEN and layer.breaker.opens == 1
    clock.now += 4
    results = await layer.handle(batch(2))
    assert inner.requests == 3  # nothing reached the model while open
    assert all(isinstance(r, CircuitOpen) and r.retryable for r in results)
    assert [r.retry_after for r in results if isinstance(r, ModelError)] == [6.0, 6.0]
    assert all(r.code == "circuit_open" for r in results if isinstance(r, ModelError))


async def test_a_success_resets_the_consecutive_count() -> None:
    clock = FakeClock()
    inner = ScriptedProvider(script=[fail(), fail(), ok(), fail(), fail()])
    layer = breaker_stack(inner, clock, failures=3, failure_ratio=None)
    for _ in range(5):
        await layer.handle(batch(1))
    assert layer.breaker.state is State.CLOSED and layer.breaker.failures == 2


async def test_breaker_opens_on_the_failure_ratio_over_its_window() -> None:
    clock = FakeClock()
    script = [fail(), ok()] * 4  # never three failures in a row, but half of all calls fail
    inner = ScriptedProvider(script=script)
    layer = breaker_stack(inner, clock, failures=3, failure_ratio=0.5, min_calls=8, window_s=10)
    for _ in range(7):
        await layer.handle(batch(1))
        clock.now += 1
    assert layer.breaker.state is State.CLOSED  # 7 calls: below min_calls
    await layer.handle(batch(1))
    assert layer.breaker.state is State.OPEN


async def test_old_outcomes_leave_the_ratio_window() -> None:
    clock = FakeClock()
    inner = ScriptedProvider(script=[fail()] * 3)
    layer = breaker_stack(inner, clock, failures=5, failure_ratio=0.5, min_calls=4, window_s=10)
    for _ in range(3):
        await layer.handle(batch(1))
    clock.now += 11  # the three failures are now out of the window
    for _ in range(4):
        await layer.handle(batch(1))  # kept, they would make 3 failures in 4 calls
    assert layer.breaker.state is State.CLOSED


async def test_half_open_lets_a_limited_number_of_probes_through_and_closes_on_success() -> None:
    clock = FakeClock()
    inner = ScriptedProvider(script=[fail(), fail()])
    layer = breaker_stack(inner, clock, failures=2, failure_ratio=None, cooldown_s=5, probes=1)
    await layer.handle(batch(2))
    assert layer.breaker.state is State.OPEN
    clock.now += 5
    results = await layer.handle(batch(3))
    assert inner.requests == 3  # one probe out of three
    assert not isinstance(results[0], ModelError)
    assert all(isinstance(r, CircuitOpen) for r in results[1:])
    assert layer.breaker.state is State.CLOSED and layer.breaker.previous is State.HALF_OPEN
    assert len(await layer.handle(batch(4))) == 4 and inner.requests == 7


async def test_a_failed_probe_opens_the_breaker_again_for_a_new_cooldown() -> None:
    clock = FakeClock()
    inner = ScriptedProvider(default=fail())
    layer = breaker_stack(inner, clock, failures=1, failure_ratio=None, cooldown_s=5)
    await layer.handle(batch(1))
    clock.now += 6
    await layer.handle(batch(1))  # the probe fails
    assert layer.breaker.state is State.OPEN and layer.breaker.opens == 2
    refused = (await layer.handle(batch(1)))[0]
    assert isinstance(refused, CircuitOpen) and refused.retry_after == 5.0


async def test_probe_slots_are_held_while_a_probe_runs() -> None:
    clock = FakeClock()
    breaker = Breaker(BreakerPolicy(failures=1, failure_ratio=None, cooldown_s=1, probes=2), clock)
    breaker.record(True, probe=False)
    clock.now += 1
    assert breaker.admit(1) == 1 and breaker.state is State.HALF_OPEN
    assert breaker.admit(5) == 1  # one slot left of two
    assert breaker.admit(1) == 0
    breaker.record(None, probe=True)  # a probe cancelled: its slot comes back, no verdict
    assert breaker.state is State.HALF_OPEN and breaker.admit(1) == 1


async def test_only_failures_that_say_something_about_the_endpoint_count() -> None:
    clock = FakeClock()
    script: list[Result] = [fail(retryable=False)] * 5
    script += [CircuitOpen("x", retry_after=1), ModelRateLimited("y", retry_after=1)] * 3
    inner = ScriptedProvider(script=script)
    layer = breaker_stack(inner, clock, failures=2, failure_ratio=0.1, min_calls=1)
    for _ in range(11):
        await layer.handle(batch(1))
    assert layer.breaker.state is State.CLOSED and layer.breaker.failures == 0


async def test_timeouts_count_as_failures() -> None:
    clock = FakeClock()
    inner = ScriptedProvider(default=ModelTimeout("slow"))
    layer = breaker_stack(inner, clock, failures=2, failure_ratio=None)
    await layer.handle(batch(2))
    assert layer.breaker.state is State.OPEN


async def test_every_transition_is_written_to_the_shared_kv() -> None:
    clock, shared = FakeClock(), LocalShared()
    inner = ScriptedProvider(script=[fail()])
    layer = breaker_stack(inner, clock, shared, failures=1, failure_ratio=None, cooldown_s=3)
    assert await shared.kv_list(NAMESPACE) == {}
    await layer.handle(batch(1))
    stored = orjson.loads((await shared.kv_list(NAMESPACE))["m"])
    assert stored["state"] == "open" and stored["opens_count"] == 1
    assert stored["since"] == clock.now and stored["open_until"] == clock.now + 3
    assert stored["failures"] == 1
    clock.now += 3
    await layer.handle(batch(1))  # open -> half-open -> closed, each written
    stored = orjson.loads((await shared.kv_get(NAMESPACE, "m")) or b"{}")
    assert stored["state"] == "closed" and stored["previous"] == "half_open"
    assert stored["opens_count"] == 1 and stored["failures"] == 0


async def test_a_provider_that_raises_counts_as_failing() -> None:
    class Broken(ScriptedProvider):
        async def handle(self, batch: Sequence[Request]) -> list[Result]:
            raise RuntimeError("bug")

    layer = breaker_stack(Broken(), FakeClock(), failures=2, failure_ratio=None)
    with pytest.raises(RuntimeError):
        await layer.handle(batch(2))
    assert layer.breaker.state is State.OPEN


# -- rate limit -------------------------------------------------------------------------------


async def test_limiter_waits_as_long_as_the_reservation_says() -> None:
    clock, shared = FakeClock(), RecordingShared()
    inner = ScriptedProvider()
    layer = RateLimit(inner, shared=Shared(shared, shared), rpm=60, clock=clock, sleep=clock.sleep)
    for _ in range(6):
        await layer.handle(batch(10))  # 60 requests: one minute's burst
    assert clock.slept == [] and inner.requests == 60
    await layer.handle(batch(3))  # refills at 1 request/s
    assert clock.slept == [pytest.approx(3.0)]
    assert inner.requests == 63
    assert shared.reservations[-1] == ("rpm:m", 3.0, 1.0, 60)


async def test_tokens_are_prompt_plus_max_tokens_or_a_default() -> None:
    clock, shared = FakeClock(), RecordingShared()
    inner = ScriptedProvider()
    layer = RateLimit(
        inner,
        shared=Shared(shared, shared),
        tpm=6000,
        clock=clock,
        sleep=clock.sleep,
        default_completion_tokens=50,
    )
    requests = [chat("a b c", max_tokens=10), chat("d e"), chat("f", max_completion_tokens=7)]
    await layer.handle(requests)
    assert shared.reservations == [("tpm:m", (3 + 10) + (2 + 50) + (1 + 7), 100.0, 6000)]
    embed = Request(EMBEDDINGS, {"model": "m", "input": "x" * 40})
    assert request_tokens(inner, embed, 50) == 11  # no tokenizer: ~4 characters a token
    counted = Request(CHAT, chat("a b c").body, prompt_tokens=40)  # as the API counted it
    assert request_tokens(inner, counted, 50) == 40 + 50  # not tokenized again


async def test_limiter_waits_only_while_the_job_deadline_allows() -> None:
    clock, shared = FakeClock(), LocalShared()
    inner = ScriptedProvider()
    limited = RateLimit(
        inner, shared=Shared(shared, shared), rpm=6, clock=clock, sleep=clock.sleep, reserve_s=2.0
    )  # 0.1 request/s: each request past the burst waits 10 s
    stack = JobDeadline(limited, timeout_s=15, clock=clock)
    await stack.handle(batch(6))
    results = await stack.handle(batch(1))  # waits 10 s: 15 - 10 leaves more than 2 s
    assert clock.slept == [pytest.approx(10.0)] and not isinstance(results[0], ModelError)
    results = await JobDeadline(limited, timeout_s=11, clock=clock).handle(batch(1))
    assert isinstance(results[0], ModelRateLimited) and results[0].retryable
    assert results[0].retry_after == pytest.approx(10.0)
    assert inner.requests == 7 and len(clock.slept) == 1


# -- timeouts ---------------------------------------------------------------------------------


async def test_call_timeout_turns_a_slow_call_into_retryable_timeouts() -> None:
    inner = ScriptedProvider()
    inner.delay_s = 5.0
    layer = CallTimeout(inner, call_timeout_s=0.02, clock=FakeClock())
    results = await layer.handle(batch(2))
    assert all(isinstance(r, ModelTimeout) and r.retryable for r in results)
    assert "call_timeout_s=0.02" in str(results[0])


async def test_call_timeout_never_runs_past_the_job_deadline() -> None:
    clock = FakeClock()
    seen: list[float] = []

    class Probe(ScriptedProvider):
        async def handle(self, batch: Sequence[Request]) -> list[Result]:
            seen.append(layer.budget())
            clock.now += 8  # this call took 8 s of the job's 10
            return await super().handle(batch)

    layer = CallTimeout(Probe(), call_timeout_s=30, clock=clock, margin_s=0.5)
    await JobDeadline(layer, timeout_s=10, clock=clock).handle(batch(1))
    assert seen == [9.5]  # min(call 30 s, job 10 s - margin)
    assert layer.budget() == 30  # outside a job: the call timeout alone


async def test_per_request_calls_keep_the_answers_a_hung_request_would_cost() -> None:
    class OneHangs(ScriptedProvider):
        async def handle(self, batch: Sequence[Request]) -> list[Result]:
            if any("hang" in r.body["messages"][0]["content"] for r in batch):
                await asyncio.sleep(5)
            return await super().handle(batch)

    clock = FakeClock()
    stack = PerRequest(CallTimeout(OneHangs(), call_timeout_s=0.05, clock=clock))
    results = await stack.handle([chat("fine"), chat("hang"), chat("fine too")])
    assert [type(r) for r in results] == [dict, ModelTimeout, dict]


# -- in-call retry ----------------------------------------------------------------------------


async def test_in_call_retry_retries_only_retryable_failures() -> None:
    clock = FakeClock()
    inner = ScriptedProvider(script=[fail(), fail(retryable=False), ok(), fail(), ok()])
    layer = InCallRetry(inner, retries=2, clock=clock, sleep=clock.sleep)
    results = await layer.handle(batch(3))
    assert [len(c) for c in inner.calls] == [3, 1, 1]  # only the first request is retried
    assert not isinstance(results[0], ModelError)
    assert isinstance(results[1], ModelError) and not results[1].retryable
    assert len(clock.slept) == 2


async def test_in_call_retry_is_bounded_and_backs_off_with_full_jitter() -> None:
    clock = FakeClock()
    inner = ScriptedProvider(default=fail())
    policy = RetryPolicy(base_s=0.1, cap_s=1.0, rng=random.Random(3))
    layer = InCallRetry(inner, retries=3, policy=policy, clock=clock, sleep=clock.sleep)
    results = await layer.handle(batch(1))
    assert isinstance(results[0], ModelError) and inner.requests == 4
    assert all(0 <= s <= c for s, c in zip(clock.slept, (0.1, 0.2, 0.4), strict=True))


async def test_in_call_retry_honours_retry_after() -> None:
    clock = FakeClock()
    inner = ScriptedProvider(script=[fail(retry_after=1.5)])
    layer = InCallRetry(inner, retries=2, clock=clock, sleep=clock.sleep)
    results = await layer.handle(batch(1))
    assert not isinstance(results[0], ModelError)
    assert clock.slept[0] >= 1.5


async def test_in_call_retry_never_waits_past_the_call_timeout() -> None:
    clock = FakeClock()
    inner = ScriptedProvider(script=[fail(retry_after=3.0)])
    retry = InCallRetry(inner, retries=2, clock=clock, sleep=clock.sleep)
    results = await CallTimeout(retry, call_timeout_s=4.0, clock=clock).handle(batch(1))
    # 3 s of the 4 would leave the retried request less time than the wait: not retried here,
    # the error goes up with its Retry-After for the queue to honour.
    assert isinstance(results[0], ModelError) and results[0].retry_after == 3.0
    assert inner.requests == 1 and clock.slept == []


# -- fallbacks --------------------------------------------------------------------------------


def stacks(**providers: Provider) -> Callable[[str], Provider]:
    return lambda name: providers[name]


async def test_retryable_failures_go_to_the_first_fallback_and_say_who_answered() -> None:
    primary = ScriptedProvider("a", script=[fail(), fail(retryable=False), ok("a")])
    backup = ScriptedProvider("b")
    layer = Fallback(primary, fallbacks=["b"], resolve=stacks(b=backup))
    results = await layer.handle(batch(3))
    assert isinstance(results[0], dict) and results[0]["model"] == "b"
    assert isinstance(results[1], ModelError)  # a bad request is not sent elsewhere
    assert isinstance(results[2], dict) and results[2]["model"] == "a"
    assert backup.requests == 1


async def test_an_open_breaker_routes_to_the_first_fallback_whose_breaker_is_closed() -> None:
    clock = FakeClock()
    a = breaker_stack(ScriptedProvider("a", default=fail()), clock, failures=1, failure_ratio=None)
    b_inner = ScriptedProvider("b", default=fail())
    b = breaker_stack(b_inner, clock, failures=1, failure_ratio=None)
    c = ScriptedProvider("c")
    await a.handle(batch(1))
    await b.handle(batch(1))
    assert a.breaker.state is State.OPEN and b.breaker.state is State.OPEN
    layer = Fallback(a, fallbacks=["b", "c"], resolve=stacks(b=b, c=c))
    results = await layer.handle(batch(2))
    assert [r["model"] for r in results if isinstance(r, dict)] == ["c", "c"]
    assert b_inner.requests == 1  # b's breaker is open: skipped, not called


async def test_when_every_fallback_fails_the_first_models_error_is_kept() -> None:
    first = fail(retry_after=2.0)
    layer = Fallback(
        ScriptedProvider("a", script=[first]),
        fallbacks=["b"],
        resolve=stacks(b=ScriptedProvider("b", default=fail(retry_after=9.0))),
    )
    assert (await layer.handle(batch(1)))[0] is first


def model(name: str, *fallbacks: str) -> ModelConfig:
    return ModelConfig(name=name, provider="echo", fallbacks=list(fallbacks))


def test_fallbacks_must_name_served_models_and_not_loop(tmp_path: Path) -> None:
    check_fallbacks([model("a", "b", "c"), model("b", "c"), model("c")])  # a chain is fine
    with pytest.raises(ConfigError, match=r"unknown \['x'\]"):
        check_fallbacks([model("a", "x")])
    with pytest.raises(ConfigError, match="loop: a -> b -> c -> a"):
        check_fallbacks([model("a", "b"), model("b", "c"), model("c", "a")])
    with pytest.raises(ValueError, match="its own fallback"):
        model("a", "a")
    with pytest.raises(ConfigError, match="loop"):
        ModelRegistry([model("a", "b"), model("b", "a")])
    path = tmp_path / "models.yaml"
    path.write_text(
        "models:\n"
        "  - {name: a, provider: echo, fallbacks: [b]}\n"
        "  - {name: b, provider: echo, fallbacks: [a]}\n"
    )
    with pytest.raises(ConfigError, match=r"models file .*loop: a -> b -> a"):
        load_models(path)


def test_call_timeout_cannot_exceed_the_job_timeout() -> None:
    with pytest.raises(ValueError, match="call_timeout_s"):
        ModelConfig(name="a", provider="echo", limits={"timeout_s": 5, "call_timeout_s": 10})


# -- composition ------------------------------------------------------------------------------


def layers(provider: Provider) -> list[str]:
    names = []
    while isinstance(provider, Layer):
        names.append(type(provider).__name__)
        provider = provider.inner
    return [*names, type(provider).__name__]


def test_the_stack_order_is_fixed() -> None:
    remote = ModelConfig(
        name="r",
        provider="openai",
        options={"base_url": "http://127.0.0.1:9/v1"},
        limits={"rpm": 60},
        fallbacks=["e"],
    )
    registry = ModelRegistry([remote, ModelConfig(name="e", provider="echo")])
    assert layers(registry.provider("r")) == [
        "JobDeadline",
        "Fallback",
        "BreakerLayer",
        "RateLimit",
        "PerRequest",
        "CallTimeout",
        "InCallRetry",
        "OpenAIProvider",
    ]
    # In-process models: no endpoint to protect, no in-call retry, unless asked for.
    assert layers(registry.provider("e")) == ["JobDeadline", "CallTimeout", "EchoProvider"]
    echo = ModelRegistry([ModelConfig(name="e", provider="echo", breaker={"enabled": True})])
    assert find_layer(echo.provider("e"), BreakerLayer) is not None
    assert echo.has_breaker("e") and registry.has_breaker("r") and not registry.has_breaker("e")
    retrying = ModelConfig(name="e", provider="echo", limits={"call_retries": 1})
    assert "InCallRetry" in layers(ModelRegistry([retrying]).provider("e"))


async def test_a_registry_without_a_backend_serves_through_its_layers() -> None:
    limits = {"rpm": 600, "tpm": 60_000}
    registry = ModelRegistry([ModelConfig(name="e", provider="echo", limits=limits)])
    stack = registry.provider("e")
    assert stack.endpoints == frozenset({CHAT, EMBEDDINGS})
    assert stack.count_tokens(CHAT, chat("a b").body) == 2
    assert getattr(stack, "dimensions", None) == 8  # provider attributes show through
    result = (await stack.handle([chat("hello there")]))[0]
    assert isinstance(result, dict) and result["model"] == "e"
    assert isinstance(registry.shared.kv, LocalShared)
    await registry.aclose()
