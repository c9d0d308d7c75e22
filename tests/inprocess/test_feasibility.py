"""At the door: a chat request whose ``max_tokens`` cannot be generated within the model's
``timeout_s`` at its measured decode rate gets a 400 naming the three numbers.

The rate is measured for real: the in-process worker runs an echo model (named as such: it
computes nothing) whose ``latency_ms`` makes each answer take a known time, so its measured
rate is about (words echoed) / (latency)."""

from __future__ import annotations

import asyncio
import re

import httpx

from genspool.core.decode_rate import read_rate
from genspool.testing.inprocess import serve
from tests.helpers.api import CHAT, assert_error, chat_body

#: Echoes 40 words in ~0.5 s: about 80 tokens/s, so ~160 tokens fit in timeout_s=2.
PACED = {
    "name": "paced",
    "provider": "echo",
    "limits": {"timeout_s": 2},
    "options": {"latency_ms": 500},
}
WORDS = " ".join(f"w{i}" for i in range(40))


def asking(max_tokens: int, key: str = "max_tokens") -> dict[str, object]:
    return {"url": CHAT, "body": {**chat_body("paced", "hi"), key: max_tokens}}


async def refused_eventually(client: httpx.AsyncClient, job: dict[str, object]) -> httpx.Response:
    """The API caches the rate a few seconds: submit until it has read the published one."""
    async with asyncio.timeout(15):
        while (answer := await client.post("/v1/jobs", json=job)).status_code == 202:
            await asyncio.sleep(0.2)
    return answer


async def test_no_measurement_no_refusal() -> None:
    async with serve([PACED], worker=True) as gs:
        assert (await gs.client.post("/v1/jobs", json=asking(1000))).status_code == 202


async def test_max_tokens_beyond_the_measured_rate_is_refused_with_the_numbers() -> None:
    async with serve([PACED], worker=True) as gs:
        answer = await gs.client.post("/v1/chat/completions", json=chat_body("paced", WORDS))
        assert answer.status_code == 200, answer.text
        async with asyncio.timeout(10):  # the worker publishes what it measured
            while (rate := await read_rate(gs.queue.storage.kv, "paced")) is None:
                await asyncio.sleep(0.05)
        assert 20 < rate < 100, rate

        refused = await refused_eventually(gs.client, asking(1000))
        message = assert_error(refused, 400)
        assert "max_tokens=1000" in message and "timeout_s=2" in message, message
        measured = re.search(r"about ([\d.]+) tokens/s", message)
        assert measured and abs(float(measured.group(1)) - rate) < 1, message

        chat = await gs.client.post("/v1/chat/completions", json=asking(1000)["body"])
        assert "max_tokens=1000" in assert_error(chat, 400)
        other_key = await gs.client.post("/v1/jobs", json=asking(1000, "max_completion_tokens"))
        assert "max_completion_tokens=1000" in assert_error(other_key, 400)
        fits = await gs.client.post("/v1/jobs", json=asking(int(rate)))  # one second's worth
        assert fits.status_code == 202, fits.text
