"""Continuous batching with the real bundled models: answers are stored and pushed per job as
soon as each ends, a job's timeout is its own, cancelling one request leaves the others
running, and higher-priority work takes a sequence from a long generation within the bound
the worker documents (``preempt_check_s`` plus one decode step).

The worker runs in this process on a real SQLite file; SmolLM2 (chat) and MiniLM (embeddings)
are the bundled weights. A "long" request asks for 1,500 tokens of counting, which SmolLM2
keeps doing at temperature 0 until max_tokens (checked for these two prompts)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from genspool.backends.sqlite import SQLiteBackend
from genspool.config import ModelConfig
from genspool.core.decode_rate import read_rate
from genspool.core.events import JobChanged
from genspool.core.job import Job
from genspool.core.queue import Queue
from genspool.core.retry import RetryPolicy
from genspool.core.worker import Worker
from genspool.providers.base import CHAT, EMBEDDINGS, Request
from genspool.providers.llama import LlamaChatProvider
from genspool.providers.onnx_embed import OnnxEmbeddingProvider
from genspool.runtime import ModelRegistry

pytestmark = pytest.mark.slow

MODEL = "smollm2-135m-instruct"
LONG_PROMPT = "Write the numbers from 1 to 3000 separated by commas."
OTHER_LONG = "List every integer from 1 to 10000 in order, one per line. Do not stop."


def chat(content: str, max_tokens: int) -> dict[str, Any]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "temperature": 0,
    }


def long_body() -> dict[str, Any]:
    return chat(LONG_PROMPT, 1500)


def short_body(i: int = 0) -> dict[str, Any]:
    return chat(f"What is the capital of France? ({i})", 4)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


def config(cache_dir: Path, **overrides: Any) -> ModelConfig:
    spec: dict[str, Any] = {
        "name": MODEL,
        "provider": "llama_cpp",
        "context_window": 2048,
        "max_attempts": 1,
        "batching": {"max_batch_size": 2},
        "options": {"cache_dir": str(cache_dir)},
    }
    return ModelConfig(**(spec | overrides))


@asynccontextmanager
async def running(
    tmp_path: Path, cfg: ModelConfig, **worker: Any
) -> AsyncIterator[tuple[Queue, Worker]]:
    queue = Queue(SQLiteBackend.from_url(f"sqlite:///{tmp_path}/q.db"), retry=RetryPolicy())
    async with queue:
        w = Worker(queue, ModelRegistry([cfg]), drain_timeout_s=0.5, maintain_s=0.2, **worker)
        task = asyncio.create_task(w.run())
        ready = asyncio.create_task(w.ready.wait())
        await asyncio.wait({task, ready}, timeout=120, return_when=asyncio.FIRST_COMPLETED)
        if task.done():  # the worker died starting: its error, not a wait for the timeout
            ready.cancel()
            task.result()
        assert ready.done(), "the worker did not load its model in 120 s"
        try:
            yield queue, w
        finally:
            w.stop()
            await asyncio.wait_for(task, 30)


def job(body: dict[str, Any], priority: int = 0) -> Job:
    return Job(url=CHAT, model=MODEL, body=body, priority=priority, max_attempts=1)


async def finished(queue: Queue, jobs: list[Job], timeout: float) -> list[tuple[str, float]]:
    """(job id, seconds) for each job's final event, in the order they were pushed."""
    order: list[tuple[str, float]] = []
    start = time.monotonic()
    async with asyncio.timeout(timeout):
        async for event in queue.subscribe([j.id for j in jobs]):
            if isinstance(event, JobChanged) and event.ends:
                order.append((event.id, time.monotonic() - start))
                if len(order) == len(jobs):
                    break
    return order


async def test_a_short_job_is_stored_and_pushed_before_a_long_one_beside_it(
    tmp_path: Path, cache_dir: Path
) -> None:
    async with running(tmp_path, config(cache_dir)) as (queue, _):
        alone = job(short_body(1))
        await queue.submit(alone)
        [(_, own_time)] = await finished(queue, [alone], 60)

        short, long = job(short_body(2)), job(long_body())
        events = queue.subscribe([short.id, long.id])
        await queue.submit_many([long, short])
        first = None
        async with asyncio.timeout(60):
            async for event in events:
                if isinstance(event, JobChanged) and event.ends:
                    first = event
                    break
        assert first is not None and first.id == short.id and first.status == "succeeded"
        stored = await queue.get(short.id)
        assert stored.result is not None  # stored, not only pushed
        assert stored.result["body"]["usage"]["completion_tokens"] <= 4
        assert stored.finished_at is not None and stored.started_at is not None
        took = stored.finished_at - stored.started_at
        assert took < 3 * own_time + 1.0, (took, own_time)
        assert (await queue.get(long.id)).status.value == "running"  # still generating


async def test_only_the_slow_job_times_out(tmp_path: Path, cache_dir: Path) -> None:
    cfg = config(cache_dir, limits={"timeout_s": 8}, batching={"max_batch_size": 3})
    async with running(tmp_path, cfg) as (queue, _):
        long, short, medium = job(long_body()), job(short_body()), job(chat("Tell a joke.", 24))
        await queue.submit_many([long, short, medium])
        await finished(queue, [long, short, medium], 60)
        done = {j.id: j for j in await queue.get_many([long.id, short.id, medium.id])}
        assert done[short.id].status.value == "succeeded"
        assert done[medium.id].status.value == "succeeded"
        failed = done[long.id]
        assert failed.status.value == "failed" and failed.error is not None
        assert "timeout_s=8" in failed.error["message"], failed.error


async def test_higher_priority_work_takes_a_sequence_from_a_long_generation(
    tmp_path: Path, cache_dir: Path
) -> None:
    async with running(tmp_path, config(cache_dir)) as (queue, worker):
        longs = [job(long_body()), job(chat(OTHER_LONG, 1500))]
        await queue.submit_many(longs)
        async with asyncio.timeout(30):  # both sequences busy
            while [j.status.value for j in await queue.get_many([j.id for j in longs])] != [
                "running"
            ] * 2:
                await asyncio.sleep(0.05)
        await asyncio.sleep(1.0)

        urgent = job(short_body(3), priority=10)
        await queue.submit(urgent)
        [(_, took)] = await finished(queue, [urgent], 60)
        # The documented bound: preempt_check_s plus one decode step, then its own 4 tokens.
        assert took < worker.preempt_check_s + 3.0, took
        assert (await queue.get(urgent.id)).status.value == "succeeded"
        after = await queue.get_many([j.id for j in longs])
        # One long job was handed back (its attempt not counted) and runs again; neither failed.
        assert all(j.status.value in ("queued", "running") for j in after), after
        assert all(j.attempts <= 1 for j in after), [j.attempts for j in after]


# -- the provider alone --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def llama(cache_dir: Path) -> Iterator[LlamaChatProvider]:
    p = LlamaChatProvider(MODEL, context_window=2048, max_batch_size=4, cache_dir=cache_dir)
    asyncio.run(p.load())
    yield p
    asyncio.run(p.aclose())


async def test_cancelling_one_request_leaves_the_others_running(llama: LlamaChatProvider) -> None:
    bodies = [chat(f"Name {n} fruits.", 24) for n in (2, 3, 4)]
    alone = [await llama.handle([Request(CHAT, b)]) for b in bodies]

    calls = [asyncio.create_task(llama.handle([Request(CHAT, b)])) for b in bodies]
    doomed = asyncio.create_task(llama.handle([Request(CHAT, long_body())]))
    await asyncio.sleep(0.5)
    doomed.cancel()
    with pytest.raises(asyncio.CancelledError):
        await doomed
    together = await asyncio.gather(*calls)
    text = [r[0]["choices"][0]["message"]["content"] for r in alone]  # type: ignore[index]
    assert [r[0]["choices"][0]["message"]["content"] for r in together] == text  # type: ignore[index]


async def test_requests_join_a_running_batch_and_leave_when_they_end(
    llama: LlamaChatProvider,
) -> None:
    long = asyncio.create_task(llama.handle([Request(CHAT, chat(LONG_PROMPT, 300))]))
    await asyncio.sleep(0.5)
    started = time.monotonic()
    [short] = await llama.handle([Request(CHAT, short_body())])
    joined = time.monotonic() - started
    assert isinstance(short, dict) and short["usage"]["completion_tokens"] <= 4
    assert not long.done()  # answered while the long one still decodes
    [result] = await long
    assert isinstance(result, dict) and result["usage"]["completion_tokens"] == 300
    assert joined < 5.0, joined


async def test_embeddings_answer_each_request_when_its_sub_batch_is_done() -> None:
    provider = OnnxEmbeddingProvider("minilm", sub_batch=4)
    await provider.load()
    words = "a much longer text about queues and batches"
    long = [" ".join([words] * 20) + str(i) for i in range(64)]
    short = [f"hi {i}" for i in range(4)]
    # A round already running: the requests below wait for it, then make up the next round
    # together, sorted by length.
    running = asyncio.create_task(provider.handle([Request(EMBEDDINGS, {"input": long})]))
    await asyncio.sleep(0.05)
    calls = {
        text: asyncio.create_task(provider.handle([Request(EMBEDDINGS, {"input": text})]))
        for text in long + short
    }
    done, _ = await asyncio.wait(calls.values(), return_when=asyncio.FIRST_COMPLETED)
    first = {text for text, task in calls.items() if task in done}
    assert first and first <= set(short), first  # the short texts' sub-batch ran first
    assert not all(calls[t].done() for t in long)
    await asyncio.gather(running, *calls.values())
    vectors, _ = provider.embed(long + short)
    for i, text in enumerate(long + short):
        [answer] = calls[text].result()
        assert isinstance(answer, dict), answer
        got = np.array(answer["data"][0]["embedding"], dtype=np.float32)
        assert np.allclose(got, vectors[i], atol=1e-5)


async def test_the_worker_publishes_the_measured_decode_rate(
    tmp_path: Path, cache_dir: Path
) -> None:
    async with running(tmp_path, config(cache_dir)) as (queue, _):
        measured = job(chat(LONG_PROMPT, 40))
        await queue.submit(measured)
        await finished(queue, [measured], 60)
        async with asyncio.timeout(10):
            while (rate := await read_rate(queue.storage.kv, MODEL)) is None:
                await asyncio.sleep(0.1)
        assert 1 < rate < 10_000, rate
