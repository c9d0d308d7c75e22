"""Webhooks in process: the API and a worker over ``memory://``, and a real receiver on
loopback (tests.helpers.receiver). Checked: a receiver that is down (its port refuses
connections) gets every event once it comes up, each signature valid by ``verify``; a receiver
that answers 4xx dead-letters the delivery with its answer as the reason; another tenant's
jobs send nothing and its subscriptions are 404; bad subscriptions are 400 naming the field."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from genspool.core.job import JobStatus
from genspool.core.retry import RetryPolicy
from genspool.testing.inprocess import InProcess, serve
from genspool.webhooks import verify
from tests.helpers.api import MODELS, As, Keys, assert_error, make_keys
from tests.helpers.receiver import Receiver

#: Short backoffs: 25 attempts span well over the second the receiver is down.
RETRY = RetryPolicy(base_s=0.05, cap_s=0.2)


@pytest.fixture
async def gs() -> AsyncIterator[InProcess]:
    async with serve(MODELS, worker=True, retry=RETRY, key_cache_s=0.0) as running:
        yield running


@pytest.fixture
async def keys(gs: InProcess) -> Keys:
    return await make_keys(gs.services.keys)


async def subscribe(api: As, url: str, events: list[str], **extra: Any) -> dict[str, Any]:
    r = await api.request("POST", "/v1/webhooks", json={"url": url, "events": events, **extra})
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


async def arrived(receiver: Receiver, count: int, timeout: float = 15.0) -> None:
    async with asyncio.timeout(timeout):
        while len(receiver.got) < count:
            receiver.arrived.clear()
            await receiver.arrived.wait()


async def test_a_receiver_down_then_up_gets_every_event_signed(gs: InProcess, keys: Keys) -> None:
    receiver = Receiver()  # not started: connections are refused
    api = As(gs, keys.a)
    hook = await subscribe(api, receiver.url, ["job.*"])
    assert hook["secret"].startswith("whsec_")
    ids = [(await api.chat("echo", f"n{i}"))["id"] for i in range(5)]
    for job_id in ids:
        await api.wait(job_id)
    await asyncio.sleep(1.0)  # deliveries fail against the closed port meanwhile
    assert receiver.got == []
    await receiver.start()
    try:
        await arrived(receiver, 5)
        await asyncio.sleep(0.3)  # no duplicate follows
    finally:
        await receiver.stop()
    events = []
    for d in receiver.got:
        verify(hook["secret"], d.headers, d.body)
        events.append(orjson.loads(d.body))
    assert sorted(e["data"]["id"] for e in events) == sorted(ids)
    assert {e["type"] for e in events} == {"job.succeeded"}
    assert len({d.headers["webhook-id"] for d in receiver.got}) == 5
    listed = (await api.request("GET", "/v1/webhooks")).json()["data"]
    assert [h["id"] for h in listed] == [hook["id"]] and "secret" not in listed[0]


async def test_a_receiver_that_refuses_dead_letters_the_delivery(gs: InProcess, keys: Keys) -> None:
    receiver = Receiver(status=410)
    await receiver.start()
    api = As(gs, keys.a)
    try:
        await subscribe(api, receiver.url, ["job.succeeded"])
        await api.wait((await api.chat("echo"))["id"])
        await arrived(receiver, 1)
        await asyncio.sleep(0.3)
    finally:
        await receiver.stop()
    assert len(receiver.got) == 1  # not retried
    dead = (await api.request("GET", "/v1/dlq")).json()["data"]
    assert [j["model"] for j in dead] == ["genspool-webhooks"]
    assert "answered 410" in dead[0]["error"]["message"]
    assert dead[0]["error"]["code"] == "webhook_refused"
    assert dead[0]["status"] == JobStatus.FAILED.value


async def test_tenants_see_and_receive_only_their_own(gs: InProcess, keys: Keys) -> None:
    receiver = Receiver()
    await receiver.start()
    a, b = As(gs, keys.a), As(gs, keys.b)
    try:
        hook = await subscribe(a, receiver.url, ["*"])
        await b.wait((await b.chat("echo"))["id"])
        job_a = (await a.chat("echo"))["id"]
        await a.wait(job_a)
        await arrived(receiver, 1)
        await asyncio.sleep(0.3)
    finally:
        await receiver.stop()
    assert [orjson.loads(d.body)["data"]["id"] for d in receiver.got] == [job_a]
    assert (await b.request("GET", "/v1/webhooks")).json()["data"] == []
    assert_error(await b.request("DELETE", f"/v1/webhooks/{hook['id']}"), 404)
    assert (await a.request("DELETE", f"/v1/webhooks/{hook['id']}")).status_code == 200
    assert_error(await a.request("DELETE", f"/v1/webhooks/{hook['id']}"), 404)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        ({"url": "ftp://x.example/h", "events": ["job.*"]}, "url"),
        ({"url": "http://127.0.0.1:9/h", "events": ["job.finished"]}, "events[0]"),
        ({"url": "http://127.0.0.1:9/h", "events": []}, "events"),
        ({"url": "http://127.0.0.1:9/h", "events": ["batch.*", "nope.*"]}, "events[1]"),
        ({"url": "http://127.0.0.1:9/h"}, "events"),
        ({"url": "http://127.0.0.1:9/h", "events": ["*"], "colour": "red"}, "colour"),
    ],
)
async def test_bad_subscriptions_are_400_naming_the_field(
    gs: InProcess, keys: Keys, body: dict[str, Any], where: str
) -> None:
    r = await As(gs, keys.a).request("POST", "/v1/webhooks", json=body)
    message = assert_error(r, 400)
    assert where in message


async def test_a_deployment_without_a_store_of_subscriptions_answers_501(keys: Keys) -> None:
    del keys
    from genspool.api import routes_webhooks
    from genspool.api.deps import Services

    svc: Any = type("S", (), {"webhooks": None})()
    with pytest.raises(routes_webhooks.WebhooksUnavailable) as caught:
        routes_webhooks._webhooks(svc)
    assert caught.value.status_code == 501
    assert Services  # the real services carry the field (built by build_services)
