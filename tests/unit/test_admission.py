"""Load shedding decisions, on the in-memory queue, with an injected clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from genspool.api.admission import Admission
from genspool.backends.memory import MemoryBackend
from genspool.config import ModelConfig
from genspool.core.job import Job
from genspool.core.queue import Queue
from genspool.exceptions import RateLimited

DEEP = ModelConfig(name="m", provider="echo", admission={"max_queue_depth": 3})
OLD = ModelConfig(name="o", provider="echo", admission={"max_queue_age_s": 10})
FREE = ModelConfig(name="f", provider="echo")


def job(model: str) -> Job:
    return Job(url="/v1/chat/completions", model=model, body={"model": model, "messages": []})


async def test_depth_limit_counts_the_snapshot_and_what_was_admitted_since(tmp_path: Path) -> None:
    async with Queue(MemoryBackend()) as queue:
        shed = Admission(queue, [DEEP, FREE])
        await queue.submit_many([job("m"), job("m")])
        await shed.refresh()
        shed.check(DEEP)  # 2 waiting + this one = 3
        with pytest.raises(RateLimited, match="3 jobs are waiting and its max_queue_depth is 3"):
            shed.check(DEEP)
        shed.check(DEEP, priority=10)  # interactive work keeps a reserve
        for _ in range(100):
            shed.check(FREE)  # no limits, no refusal


async def test_retry_after_follows_the_drain_rate(tmp_path: Path) -> None:
    now = [1000.0]
    async with Queue(MemoryBackend()) as queue:
        shed = Admission(queue, [DEEP], clock=lambda: now[0])
        await queue.submit_many([job("m") for _ in range(23)])
        await shed.refresh()
        await queue.lease("m", 20)  # the model drains 20 jobs in 2 s
        now[0] += 2.0
        await shed.refresh()
        with pytest.raises(RateLimited) as refused:
            shed.check(DEEP)  # 3 waiting, 1 over: 1 / (10 jobs/s) -> the 1 s floor
        assert refused.value.retry_after == 1.0 and refused.value.headers["Retry-After"] == "1"


async def test_age_limit_sheds_bulk_but_not_interactive_work(tmp_path: Path) -> None:
    async with Queue(MemoryBackend()) as queue:
        submitted = await queue.submit(job("o"))
        now = submitted.created_at + 25.0
        shed = Admission(queue, [OLD], clock=lambda: now)
        await shed.refresh()
        with pytest.raises(RateLimited, match=r"has waited 25\.0 s and its max_queue_age_s is 10"):
            shed.check(OLD)
        shed.check(OLD, priority=10)


def test_without_limits_nothing_is_refreshed() -> None:
    assert not Admission(None, [FREE]).enabled  # type: ignore[arg-type]
