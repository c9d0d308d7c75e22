"""Tenants: another tenant's job is exactly like an unknown one, lists and dead letters are
per tenant, admin sees all, and the per-key submission limit."""

from __future__ import annotations

import json

from genspool.testing.inprocess import InProcess
from tests.helpers.api import CHAT, As, Keys, assert_error, chat_body

UNKNOWN = "job_ffffffffffffffffffffffff"


async def test_another_tenants_job_is_exactly_like_an_unknown_one(
    gs: InProcess, keys: Keys
) -> None:
    a, b = As(gs, keys.a), As(gs, keys.b)
    theirs = (await a.chat("echo"))["id"]
    for method, suffix in (("GET", ""), ("GET", "/events"), ("POST", "/cancel"), ("DELETE", "")):
        seen = await b.request(method, f"/v1/jobs/{theirs}{suffix}")
        nobody = await b.request(method, f"/v1/jobs/{UNKNOWN}{suffix}")
        assert seen.status_code == nobody.status_code == 404, (method, suffix, seen.text)
        assert seen.json() == json.loads(nobody.text.replace(UNKNOWN, theirs))
    assert (await a.wait(theirs)).status.value == "succeeded"  # b cancelled nothing


async def test_dead_letters_are_per_tenant(gs: InProcess, keys: Keys) -> None:
    a, b, admin = As(gs, keys.a), As(gs, keys.b), As(gs, keys.admin)
    dead = (await a.chat("doomed", "will fail"))["id"]
    assert (await a.wait(dead)).status.value == "failed"
    assert_error(await b.request("POST", f"/v1/dlq/{dead}/replay"), 404, "not_found")
    assert dead not in await b.ids("/v1/dlq")
    assert dead in await a.ids("/v1/dlq") and dead in await admin.ids("/v1/dlq")
    replayed = await a.request("POST", f"/v1/dlq/{dead}/replay")
    assert replayed.json()["status"] == "queued"
    assert (await a.wait(dead)).status.value == "failed"
    assert (await admin.request("POST", f"/v1/dlq/{dead}/replay")).status_code == 200


async def test_lists_show_only_the_callers_tenant_and_admin_sees_all(
    gs: InProcess, keys: Keys
) -> None:
    a, b, admin = As(gs, keys.a), As(gs, keys.b), As(gs, keys.admin)
    mine, theirs = (await a.chat("echo"))["id"], (await b.chat("echo"))["id"]
    assert mine in await a.ids() and theirs not in await a.ids()
    assert theirs in await b.ids() and mine not in await b.ids()
    assert {mine, theirs} <= await admin.ids()
    acme = await admin.ids(tenant="acme")
    assert mine in acme and theirs not in acme
    assert mine in await As(gs, keys.a_read).ids()
    refused = await b.request("GET", "/v1/jobs", params={"tenant": "acme"})
    assert "admin" in assert_error(refused, 403, "insufficient_scope")
    assert (await b.request("GET", "/v1/jobs", params={"tenant": "beta"})).status_code == 200


async def test_openai_routes_submit_under_the_keys_tenant(gs: InProcess, keys: Keys) -> None:
    a, b = As(gs, keys.a), As(gs, keys.b)
    answer = await b.request("POST", CHAT, json=chat_body("echo", "openai route"))
    assert answer.status_code == 200, answer.text
    assert answer.json()["choices"][0]["message"]["content"] == "openai route"
    (job_id,) = await b.ids()
    assert_error(await a.get(job_id), 404, "not_found")
    assert (await a.request("GET", "/v1/models")).json()["data"]


async def test_per_key_rate_limit_answers_429_and_reading_is_not_limited(
    gs: InProcess, keys: Keys
) -> None:
    limited = As(gs, keys.limited)
    accepted = [(await limited.chat("echo", f"limited {i}"))["id"] for i in range(3)]
    refused = await limited.request("POST", "/v1/jobs", json={"url": CHAT, "body": {}})
    assert "3 requests per minute" in assert_error(refused, 429, "rate_limit_exceeded")
    retry_after = refused.headers["retry-after"]
    assert retry_after.isdigit() and 1 <= int(retry_after) <= 20, retry_after
    chat = await limited.request("POST", CHAT, json=chat_body("echo"))
    assert_error(chat, 429, "rate_limit_exceeded")  # one budget for every submitting route
    assert (await limited.request("GET", "/v1/jobs")).status_code == 200
    await As(gs, keys.a).chat("echo", "another key of the same tenant is not limited")
    for job_id in accepted:
        assert (await limited.wait(job_id)).status.value == "succeeded"
