"""Fan-outs whose branches are real model calls: remote models on the fault-injecting server
(:mod:`genspool.testing.faults`, a real HTTP server on loopback scripted per model), and the
bundled local models (``all-minilm-l6-v2`` for a quorum by embeddings, ``smollm2-135m-instruct``
for a map-reduce over a text 25 times its window).

The API and a worker run in process (:func:`genspool.testing.inprocess.serve`); what the fault
server saw — which calls arrived, which connections were closed before an answer, how many were
in flight — is the evidence that a cancelled branch's call was aborted and that a map kept to its
model's ``max_concurrency``. The checks of the request and the aggregation rules on echo models
are in ``tests/inprocess/test_fanout_api.py``; they are not repeated here.
"""

from __future__ import annotations

import asyncio
import math
import random
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from genspool.backends import JobFilter
from genspool.config import DEFAULT_MODELS, ModelConfig
from genspool.core.job import Job
from genspool.fanout.split import text_counter
from genspool.providers.plugins import get_plugin
from genspool.testing.faults import FaultServer
from genspool.testing.inprocess import InProcess, serve
from tests.helpers.api import FAST_RETRY, As

SMOLLM = "smollm2-135m-instruct"
MINILM = "all-minilm-l6-v2"
SMOLLM_WINDOW = 2048


@pytest.fixture
def faults() -> Iterator[FaultServer]:
    server = FaultServer(hang_s=30.0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


def remote(name: str, faults: FaultServer, **more: Any) -> dict[str, Any]:
    """A model on the fault server that fails fast: one attempt, no retry inside the call."""
    return {
        "name": name,
        "provider": "openai",
        "options": {"base_url": f"{faults.url}/v1"},
        "max_attempts": 1,
        "limits": {"call_retries": 0},
        **more,
    }


def bundled(name: str) -> dict[str, Any]:
    return next(m for m in DEFAULT_MODELS if m["name"] == name)


def chat(model: str, content: str, **more: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **more}


def branch(name: str, model: str, content: str, **more: Any) -> dict[str, Any]:
    """A branch whose request the fault server knows by ``content`` (its last message)."""
    return {"name": name, "body": chat(model, content, max_tokens=8), **more}


async def fan_out(gs: InProcess, body: dict[str, Any], timeout: float = 20.0) -> Job:
    """Submit a fan-out and wait for its parent to end; the parent job as stored."""
    response = await gs.client.post("/v1/fanouts", json=body)
    assert response.status_code == 202, response.text
    return await As(gs, None).wait(response.json()["id"], timeout)


def result_of(parent: Job) -> dict[str, Any]:
    assert parent.status.value == "succeeded", (parent.status, parent.error)
    assert parent.result is not None
    body: dict[str, Any] = parent.result["body"]
    return body


def by_name(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["name"]: b for b in result["branches"]}


async def settled(faults: FaultServer, timeout: float = 5.0) -> dict[str, Any]:
    """The fault server's stats once no request is in flight: a call the worker aborted is
    seen closed by the server's own thread a moment after the parent ended."""
    deadline = time.monotonic() + timeout
    while (stats := faults.stats())["in_flight"] and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert stats["in_flight"] == 0, stats
    return stats


async def children(gs: InProcess, parent_id: str) -> list[Job]:
    """The parent's child jobs, by branch name."""
    jobs = await gs.queue.list_jobs(JobFilter(limit=1000))
    mine = [j for j in jobs if j.metadata.get("genspool.parent") == parent_id]
    return sorted(mine, key=lambda j: str(j.metadata["genspool.branch"]))


# -- all ------------------------------------------------------------------------------------------


async def test_all_with_a_failing_and_a_hanging_branch_is_partial_and_lists_every_branch(
    faults: FaultServer,
) -> None:
    faults.script(
        [
            {"model": "ok-a", "reply": "alpha"},
            {"model": "ok-b", "reply": "beta"},
            {"model": "broken", "outcome": "error", "status": 503},
            {"model": "stuck", "outcome": "hang"},  # 30 s, far past its branch's timeout
        ]
    )
    models = [remote(n, faults) for n in ("ok-a", "ok-b", "broken", "stuck")]
    body = {
        "branches": [
            branch("a", "ok-a", "all: a"),
            branch("b", "ok-b", "all: b"),
            branch("c", "broken", "all: c"),
            branch("d", "stuck", "all: d", timeout_s=0.5),
        ]
    }
    async with serve(models, worker=True, retry=FAST_RETRY) as gs:
        started = time.monotonic()
        parent = await fan_out(gs, body)
        took = time.monotonic() - started
        result = result_of(parent)
        branches = by_name(result)
        stuck_child = (await gs.queue.get(branches["d"]["job_id"])).status.value

    assert result["strategy"] == "all" and result["partial"] is True
    assert [b["name"] for b in result["branches"]] == ["a", "b", "c", "d"]
    assert {n: b["status"] for n, b in branches.items()} == {
        "a": "succeeded",
        "b": "succeeded",
        "c": "failed",
        "d": "timeout",
    }
    assert result["output"] == {"a": "alpha", "b": "beta"}
    assert "503" in branches["c"]["error"]["message"], branches["c"]
    assert branches["d"]["error"]["code"] == "branch_timeout"
    assert "timeout_s=0.5" in branches["d"]["error"]["message"]
    assert "result" not in branches["c"] and "result" not in branches["d"]
    assert stuck_child == "cancelled"
    stats = await settled(faults)
    # Every model was called once (one attempt, no in-call retry), and the hanging call's
    # connection was closed when its branch gave up, not when the hang ended.
    assert {m: s["requests"] for m, s in stats["by_model"].items()} == dict.fromkeys(
        ("ok-a", "ok-b", "broken", "stuck"), 1
    )
    hung = stats["requests"]["all: d"]
    assert hung["outcomes"] == ["hang"] and len(hung["aborted"]) == 1
    assert 0.4 < hung["aborted_after_s"][0] < 2.0, hung
    assert took < 5.0, took


# -- first ----------------------------------------------------------------------------------------

LATENCIES = {"fast-50": 0.05, "mid-100": 0.1, "slow-400": 0.4}
#: From a branch's cancel (before its parent ends) to the fault server seeing its connection
#: closed, on a busy 2-core machine: a loser whose call would have answered sooner than this
#: after the parent ended may answer first, which is no fault of the cancel.
ABORT_SLACK_S = 0.02


async def test_first_wins_with_the_fastest_and_aborts_the_slower_calls(faults: FaultServer) -> None:
    faults.script([{"model": m, "latency_s": s, "reply": m} for m, s in LATENCIES.items()])
    models = [remote(m, faults) for m in LATENCIES]
    body = {
        "aggregate": "first",
        "branches": [branch(m, m, f"first: {m}") for m in ("slow-400", "mid-100", "fast-50")],
    }
    async with serve(models, worker=True, retry=FAST_RETRY) as gs:
        parent = await fan_out(gs, body)
        result = result_of(parent)
        branches = by_name(result)
        ended = {n: (await gs.queue.get(b["job_id"])).status.value for n, b in branches.items()}

    assert result["winner"] == "fast-50" and result["output"] == "fast-50"
    assert result["partial"] is False
    assert result["usage"] == branches["fast-50"]["result"]["usage"]
    assert ended["fast-50"] == "succeeded"

    requests = (await settled(faults))["requests"]
    assert requests["first: fast-50"]["aborted"] == []
    # The parent ended soon after the fastest call answered (its arrival + 50 ms).
    answered = requests["first: fast-50"]["arrivals"][0] + LATENCIES["fast-50"]
    assert parent.finished_at is not None
    lag = parent.finished_at - answered
    print(f"first: parent ended {lag * 1000:.0f} ms after the 50 ms answer")
    assert -0.01 < lag < 0.25, lag

    for loser in ("mid-100", "slow-400"):
        seen = requests[f"first: {loser}"]
        print(f"{loser}: aborted after {[round(s * 1000) for s in seen['aborted_after_s']]} ms")
        assert seen["count"] == 1, seen
        # The losers were cancelled before the parent ended; one whose call would have
        # answered before that (a very busy machine) may have answered first.
        if parent.finished_at < seen["arrivals"][0] + LATENCIES[loser] - ABORT_SLACK_S:
            assert ended[loser] == branches[loser]["status"] == "cancelled", branches[loser]
            assert branches[loser]["error"]["code"] == "not_needed"
            # Its connection was closed before the server answered.
            assert len(seen["aborted"]) == 1, seen
            assert seen["aborted_after_s"][0] < LATENCIES[loser], seen
    # 400 ms is far past the parent's end (the lag above): that call was aborted.
    assert len(requests["first: slow-400"]["aborted"]) == 1


# -- quorum ---------------------------------------------------------------------------------------


async def test_quorum_by_exact_match_cancels_the_vote_it_no_longer_needs(
    faults: FaultServer,
) -> None:
    faults.script(
        [
            {"model": "voter-1", "reply": "Paris"},
            {"model": "voter-2", "reply": " Paris\n", "latency_s": 0.05},
            {"model": "voter-3", "reply": "Lyon", "latency_s": 0.5},
        ]
    )
    models = [remote(f"voter-{i}", faults) for i in (1, 2, 3)]
    votes = [branch(f"v{i}", f"voter-{i}", f"quorum: {i}") for i in (1, 2, 3)]
    async with serve(models, worker=True, retry=FAST_RETRY) as gs:
        parent = await fan_out(gs, {"branches": votes, "aggregate": {"strategy": "quorum", "k": 2}})
    result = result_of(parent)
    assert result["quorum"]["reached"] is True
    assert sorted(result["quorum"]["agreeing"]) == ["v1", "v2"]
    assert result["output"].strip() == "Paris"
    late = by_name(result)["v3"]
    assert late["status"] == "cancelled" and late["error"]["code"] == "not_needed"
    assert len((await settled(faults))["requests"]["quorum: 3"]["aborted"]) == 1


ANSWERS = {
    "paris-1": "The capital of France is Paris.",
    "paris-2": "Paris is France's capital city.",
    "turtles": "I like turtles.",
}


@pytest.mark.slow
async def test_quorum_by_embeddings_of_the_bundled_model(faults: FaultServer) -> None:
    faults.script([{"model": name, "reply": text} for name, text in ANSWERS.items()])
    models = [*(remote(name, faults) for name in ANSWERS), bundled(MINILM)]
    votes = [branch(name, name, f"embedding quorum: {name}") for name in ANSWERS]
    async with serve(models, worker=True, retry=FAST_RETRY) as gs:
        similar, unrelated = await _similarities(gs)
        # The threshold between what the model finds alike and what it does not, measured.
        threshold = (similar + unrelated) / 2
        print(
            f"cosine: paraphrases {similar:.3f}, unrelated at most {unrelated:.3f}; "
            f"threshold {threshold:.3f}"
        )
        assert similar - unrelated > 0.3, (similar, unrelated)

        def quorum(at: float) -> dict[str, Any]:
            spec = {"strategy": "quorum", "k": 2, "match": "embedding", "model": MINILM}
            return {"branches": votes, "aggregate": {**spec, "threshold": at}}

        agreed = result_of(await fan_out(gs, quorum(threshold), timeout=60))
        strict = result_of(await fan_out(gs, quorum((similar + 1) / 2), timeout=60))
        exact = {"branches": votes, "aggregate": {"strategy": "quorum", "k": 2}}
        literal = result_of(await fan_out(gs, exact, timeout=60))

    assert agreed["quorum"]["reached"] is True and agreed["quorum"]["match"] == "embedding"
    assert sorted(agreed["quorum"]["agreeing"]) == ["paris-1", "paris-2"]
    assert agreed["output"] in (ANSWERS["paris-1"], ANSWERS["paris-2"])
    # Above the paraphrases' similarity no two agree; and as texts they differ.
    for none in (strict, literal):
        assert none["quorum"]["reached"] is False and none["output"] is None, none["quorum"]
        assert none["quorum"]["largest"] == 1


async def _similarities(gs: InProcess) -> tuple[float, float]:
    """Cosine similarity of the two paraphrases, and the highest of either with the third."""
    body = {"model": MINILM, "input": list(ANSWERS.values())}
    response = await gs.client.post("/v1/embeddings", json=body)
    assert response.status_code == 200, response.text
    p1, p2, other = (d["embedding"] for d in response.json()["data"])
    return _cosine(p1, p2), max(_cosine(p1, other), _cosine(p2, other))


def _cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


# -- reduce ---------------------------------------------------------------------------------------


async def test_reduce_sends_the_outputs_to_a_remote_model_and_its_failure_keeps_them(
    faults: FaultServer,
) -> None:
    # "merger" is not scripted: the fault server echoes the request's last message, so the
    # reduce's answer is the prompt it received, outputs included.
    faults.script(
        [
            {"model": "en", "reply": "hello"},
            {"model": "fr", "reply": "bonjour"},
            {"model": "merger-down", "outcome": "error", "status": 502},
        ]
    )
    models = [remote(n, faults) for n in ("en", "fr", "merger", "merger-down")]
    body: dict[str, Any] = {
        "branches": [branch("en", "en", "reduce: en"), branch("fr", "fr", "reduce: fr")],
        "aggregate": "reduce",
        "reduce": {"body": chat("merger", "Merge:\n{{outputs}}")},
    }
    async with serve(models, worker=True, retry=FAST_RETRY) as gs:
        merged = result_of(await fan_out(gs, body))
        body["reduce"] = {"body": chat("merger-down", "Merge again:\n{{outputs}}")}
        failed = result_of(await fan_out(gs, body))

    assert merged["output"] == "Merge:\n### en\nhello\n\n### fr\nbonjour"
    assert merged["reduce"]["status"] == "succeeded" and merged["partial"] is False
    branch_tokens = sum(b["result"]["usage"]["total_tokens"] for b in merged["branches"])
    reduce_tokens = merged["reduce"]["result"]["usage"]["total_tokens"]
    assert merged["usage"]["total_tokens"] == branch_tokens + reduce_tokens

    assert failed["partial"] is True
    assert failed["reduce"]["status"] == "failed" and "502" in failed["reduce"]["error"]["message"]
    assert failed["output"] == {"en": "hello", "fr": "bonjour"}  # the branches stay readable
    assert {b["name"]: b["status"] for b in failed["branches"]} == {
        "en": "succeeded",
        "fr": "succeeded",
    }
    assert (await settled(faults))["by_model"]["merger-down"]["requests"] == 1


# -- map ------------------------------------------------------------------------------------------


async def test_a_map_over_items_keeps_exactly_max_concurrency_calls_in_flight(
    faults: FaultServer,
) -> None:
    faults.script([{"model": "mapper", "latency_s": 0.05}, {"model": "collector", "reply": "ok"}])
    mapper = remote("mapper", faults, batching={"max_batch_size": 1, "max_concurrency": 4})
    items = [f"item {i:02d}" for i in range(40)]
    body = {
        "map": {"items": items, "body": chat("mapper", "Describe {{item}}")},
        "reduce": {"body": chat("collector", "Collect:\n{{outputs}}")},
    }
    async with serve([mapper, remote("collector", faults)], worker=True, retry=FAST_RETRY) as gs:
        started = time.monotonic()
        parent = await fan_out(gs, body, timeout=30)
        took = time.monotonic() - started
    result = result_of(parent)
    assert result["strategy"] == "map_reduce" and result["map"] == {"pieces": 40}
    assert all(b["status"] == "succeeded" for b in result["branches"])
    assert result["output"] == "ok" and result["partial"] is False
    mapped = (await settled(faults))["by_model"]["mapper"]
    print(f"map of 40 x 50 ms at max_concurrency 4: {took:.2f} s, peak {mapped['max_in_flight']}")
    assert mapped["requests"] == 40
    assert mapped["max_in_flight"] == 4  # reached, and never more
    assert took >= 40 / 4 * 0.05  # the bound held the whole way


# -- map-reduce over a long text ------------------------------------------------------------------


def _smollm_count() -> Callable[[str], int]:
    """SmolLM2's own tokenizer (a vocab-only load), as the coordinator counts with it."""
    config = ModelConfig.model_validate(bundled(SMOLLM))
    count = text_counter(get_plugin(config.provider).model_card(config))
    assert count is not None
    return count


def _long_text(count: Callable[[str], int], tokens: int, seed: int = 11) -> str:
    """Paragraphs of varied sentences (numbers, punctuation, accents), ``tokens`` at least."""
    rng = random.Random(seed)
    parts = (
        ["The harbour master", "A travelling botanist", "Two retired pilots", "The baker"],
        ["described", "counted", "photographed", "complained about", "slowly repaired"],
        ["the lighthouse on the cliff", "42 jars of honey", "a map from 1873", "the clock"],
        ["at dawn.", "in heavy rain!", "while humming — oddly.", "for the third time?"],
    )
    paragraphs: list[str] = []
    total = 0
    while total < tokens * 1.02:
        sentences = [" ".join(rng.choice(p) for p in parts) for _ in range(rng.randint(3, 12))]
        paragraphs.append(" ".join(sentences) + f" (entry {len(paragraphs)}, naïve café)")
        total += count(paragraphs[-1]) + 1
    text = "\n\n".join(paragraphs)
    assert count(text) >= tokens
    return text


MAP_MAX_TOKENS = 16


#: SmolLM2 for ~52,000 prompt tokens of map pieces: 4 sequences at a time, not the bundled 16.
#: With 16 pieces of ~2,000 tokens prefilled side by side on 2 busy cores, each piece took past
#: the bundled timeout_s (300 s) on every attempt (the test failed after 31 min); 4 at a time,
#: each piece finishes in a quarter of that, and the whole map takes as long.
LONG_PROMPTS = {
    **bundled(SMOLLM),
    "batching": {"max_batch_size": 4, "max_wait_ms": 20, "max_concurrency": 1},
    "limits": {"timeout_s": 900},
}


@pytest.mark.slow
@pytest.mark.timeout(1500)
async def test_map_reduce_over_25_windows_of_text_on_smollm2() -> None:
    count = _smollm_count()
    text = _long_text(count, 25 * SMOLLM_WINDOW)
    prompt = "Summarise in one sentence:\n\n{{chunk}}"
    body = {
        "map": {"text": text, "body": chat(SMOLLM, prompt, max_tokens=MAP_MAX_TOKENS)},
        "reduce": {"body": chat(SMOLLM, "Merge these summaries:\n\n{{outputs}}", max_tokens=32)},
        "deadline_s": 3600,
    }
    async with serve([LONG_PROMPTS], worker=True, retry=FAST_RETRY) as gs:
        started = time.monotonic()
        parent = await fan_out(gs, body, timeout=3600)
        took = time.monotonic() - started
        kids = await children(gs, parent.id)
    result = result_of(parent)
    mapped = [k for k in kids if str(k.metadata["genspool.branch"]).startswith("map-")]
    print(f"map-reduce of {count(text)} tokens: {len(mapped)} map requests, {took:.0f} s")
    assert len(mapped) == result["map"]["pieces"] >= 25
    for child in mapped:
        counted = child.metadata["genspool.prompt_tokens"]
        assert counted + MAP_MAX_TOKENS <= SMOLLM_WINDOW, (child.metadata, counted)
        assert child.result is not None  # and the model's own count agrees
        assert child.result["body"]["usage"]["prompt_tokens"] == counted
    assert result["reduce"]["final"]["status"] == "succeeded"
    assert isinstance(result["output"], str) and result["output"].strip()
    assert result["partial"] is False


async def test_a_reduce_that_cannot_shrink_fails_naming_the_level_and_sizes() -> None:
    # The echo provider counts words, so the coordinator can plan levels; as a reducer it
    # answers with its whole prompt, which is longer than the outputs it was given.
    models = [
        {"name": "mapper", "provider": "echo"},
        {"name": "reducer", "provider": "echo", "context_window": 60},
    ]
    items = [" ".join(f"w{i}x{j}" for j in range(10)) for i in range(12)]  # 10 words each
    body = {
        "map": {"items": items, "body": chat("mapper", "{{item}}")},
        "reduce": {"body": chat("reducer", "Merge these: {{outputs}}", max_tokens=8)},
    }
    async with serve(models, worker=True, retry=FAST_RETRY) as gs:
        started = time.monotonic()
        parent = await fan_out(gs, body, timeout=20)
        took = time.monotonic() - started
        kids = await children(gs, parent.id)
    assert parent.status.value == "failed", parent.result
    assert parent.attempts == 1  # not retried: it would stall the same way
    error = parent.error or {}
    assert error["code"] == "reduce_stalled", error
    # 120 words of outputs, 46 fitting one request: 3 requests, each answered with its input
    # plus the 2 words of "Merge these:". A text counts the words it adds to a message, and
    # an empty message already counts one word: 120 words count 119, 126 count 125.
    sizes = re.match(
        r"reduce level 1 did not shrink: (\d+) tokens in 3 request\(s\) became (\d+) tokens "
        r"needing 3 request\(s\); its outputs are no shorter than its input",
        error["message"],
    )
    assert sizes is not None, error["message"]
    before, after = int(sizes[1]), int(sizes[2])
    assert (before, after) == (12 * 10 - 1, 12 * 10 + 3 * 2 - 1), error["message"]
    assert [b["status"] for b in error["branches"]] == ["succeeded"] * 12  # still readable
    reduced = [k.metadata["genspool.branch"] for k in kids]
    reduced = [name for name in reduced if name.startswith("reduce")]
    assert reduced == ["reduce-1-0000", "reduce-1-0001", "reduce-1-0002"]  # no final call
    assert took < 5.0, took
