"""Fan-outs through the API, in process, on echo models (they compute nothing): the request's
checks, aggregation with partial failure, tenancy, cancel and replay, branch events, routes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest

from genspool.backends import JobFilter
from genspool.testing.inprocess import InProcess, serve
from tests.helpers.api import (
    DOOMED_AT_ONCE,
    FAST_RETRY,
    As,
    Keys,
    assert_error,
    chat_body,
    make_keys,
    slow_model,
)

MODELS: list[dict[str, Any]] = [
    {"name": "echo", "provider": "echo"},
    {"name": "other", "provider": "echo"},
    DOOMED_AT_ONCE,
    slow_model(3000),
]


@pytest.fixture
async def gs() -> AsyncIterator[InProcess]:
    async with serve(MODELS, worker=True, retry=FAST_RETRY, key_cache_s=0.0) as running:
        yield running


@pytest.fixture
async def keys(gs: InProcess) -> Keys:
    return await make_keys(gs.services.keys)


def branch(name: str, model: str, text: str = "hi", **more: Any) -> dict[str, Any]:
    return {"name": name, "body": chat_body(model, text), **more}


async def fan(who: As, body: dict[str, Any], expect: int = 202) -> dict[str, Any]:
    response = await who.request("POST", "/v1/fanouts", json=body)
    assert response.status_code == expect, response.text
    out: dict[str, Any] = response.json()
    return out


async def ended(who: As, job_id: str, timeout: float = 10.0) -> dict[str, Any]:
    await who.wait(job_id, timeout)
    response = await who.get(job_id)
    assert response.status_code == 200, response.text
    out: dict[str, Any] = response.json()
    return out


# -- the request's checks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, "exactly one of branches"),
        ({"branches": [branch("a", "echo")], "event": {"x": 1}}, "got branches, event"),
        ({"branches": [branch("a", "echo"), branch("a", "other")]}, "given twice: a"),
        ({"branches": [branch("a", "echo")], "aggregate": "quorum"}, "quorum needs k"),
        ({"branches": [branch("a", "echo")], "aggregate": "reduce"}, "needs reduce"),
        ({"branches": [branch("a", "echo")], "deadline_s": 0}, "deadline_s"),
        ({"branches": [{"name": "bad name!", "body": chat_body("echo")}]}, "name"),
    ],
)
async def test_a_malformed_fanout_is_a_400_naming_what_is_wrong(
    gs: InProcess, body: dict[str, Any], words: str
) -> None:
    message = assert_error(await As(gs, None).request("POST", "/v1/fanouts", json=body), 400)
    assert words in message, message


async def test_a_bad_branch_is_refused_with_its_name_before_anything_runs(gs: InProcess) -> None:
    body = {"branches": [branch("good", "echo"), branch("typo", "nope")]}
    message = assert_error(await As(gs, None).request("POST", "/v1/fanouts", json=body), 404)
    assert "branches[1] (typo)" in message and "nope" in message
    assert await As(gs, None).ids() == set()  # nothing was queued


async def test_map_and_reduce_templates_must_use_their_placeholders(gs: InProcess) -> None:
    no_chunk = {
        "map": {"text": "long", "body": chat_body("echo")},
        "reduce": {"body": chat_body("echo", "{{outputs}}")},
    }
    message = assert_error(await As(gs, None).request("POST", "/v1/fanouts", json=no_chunk), 400)
    assert "{{chunk}}" in message
    no_outputs = {
        "branches": [branch("a", "echo")],
        "aggregate": "reduce",
        "reduce": {"body": chat_body("echo")},
    }
    message = assert_error(await As(gs, None).request("POST", "/v1/fanouts", json=no_outputs), 400)
    assert "{{outputs}}" in message


async def test_the_fanout_model_is_not_a_model_clients_ask_for(gs: InProcess) -> None:
    anyone = As(gs, None)
    models = (await anyone.request("GET", "/v1/models")).json()["data"]
    assert "genspool-fanout" not in {m["id"] for m in models}
    job = {"url": "/v1/fanouts", "body": {"model": "genspool-fanout", "branches": []}}
    message = assert_error(await anyone.request("POST", "/v1/jobs", json=job), 400)
    assert "POST /v1/fanouts" in message


# -- aggregation ----------------------------------------------------------------------------------


async def test_all_lists_every_branch_and_says_partial_when_one_failed(gs: InProcess) -> None:
    anyone = As(gs, None)
    body = {
        "branches": [
            branch("one", "echo", "first"),
            branch("two", "other", "second"),
            branch("bad", "doomed"),
        ]
    }
    parent = await fan(anyone, body)
    assert parent["status"] == "queued" and parent["model"] == "genspool-fanout"
    done = await ended(anyone, parent["id"])
    assert done["status"] == "succeeded", done
    result = done["result"]["body"]
    assert result["strategy"] == "all" and result["partial"] is True
    by_name = {b["name"]: b for b in result["branches"]}
    assert [b["name"] for b in result["branches"]] == ["one", "two", "bad"]
    assert by_name["one"]["status"] == by_name["two"]["status"] == "succeeded"
    assert by_name["bad"]["status"] == "failed" and "timeout" in by_name["bad"]["error"]["message"]
    assert result["output"] == {"one": "first", "two": "second"}
    assert result["usage"]["total_tokens"] > 0
    child = (await anyone.get(by_name["one"]["job_id"])).json()
    assert child["metadata"]["genspool.parent"] == parent["id"]


async def test_when_every_branch_fails_the_parent_fails_with_every_branch_in_its_error(
    gs: InProcess,
) -> None:
    anyone = As(gs, None)
    parent = await fan(anyone, {"branches": [branch("x", "doomed"), branch("y", "doomed")]})
    done = await ended(anyone, parent["id"])
    assert done["status"] == "failed" and done["attempts"] == 1  # not retried
    error = done["error"]
    assert error["code"] == "fanout_failed"
    assert [b["status"] for b in error["branches"]] == ["failed", "failed"]


async def test_first_takes_the_first_success_and_cancels_the_rest(gs: InProcess) -> None:
    anyone = As(gs, None)
    body = {
        "branches": [branch("slow", "slow", "late"), branch("fast", "echo", "early")],
        "aggregate": "first",
    }
    parent = await fan(anyone, body)
    done = await ended(anyone, parent["id"], timeout=2.5)  # well before the slow one's 3 s
    result = done["result"]["body"]
    assert result["winner"] == "fast" and result["output"] == "early"
    slow = next(b for b in result["branches"] if b["name"] == "slow")
    assert slow["status"] == "cancelled" and slow["error"]["code"] == "not_needed"
    assert (await anyone.get(slow["job_id"])).json()["status"] == "cancelled"
    fast = next(b for b in result["branches"] if b["name"] == "fast")
    assert result["usage"] == fast["result"]["usage"]  # the cancelled branch counts nothing
    assert result["partial"] is False  # a branch no longer needed is not a failure


async def test_quorum_by_exact_match_and_a_quorum_not_reached_is_a_result(gs: InProcess) -> None:
    anyone = As(gs, None)
    votes = [branch("a", "echo", "yes"), branch("b", "other", " yes "), branch("c", "echo", "no")]
    done = await ended(
        anyone,
        (await fan(anyone, {"branches": votes, "aggregate": {"strategy": "quorum", "k": 2}}))["id"],
    )
    quorum = done["result"]["body"]
    assert quorum["quorum"]["reached"] is True and sorted(quorum["quorum"]["agreeing"]) == [
        "a",
        "b",
    ]
    assert quorum["output"].strip() == "yes"
    split = [branch("a", "echo", "yes"), branch("b", "other", "no"), branch("c", "echo", "maybe")]
    done = await ended(
        anyone,
        (await fan(anyone, {"branches": split, "aggregate": {"strategy": "quorum", "k": 2}}))["id"],
    )
    assert done["status"] == "succeeded"
    none = done["result"]["body"]
    assert (
        none["quorum"]["reached"] is False
        and none["output"] is None
        and none["quorum"]["largest"] == 1
    )


async def test_reduce_receives_the_outputs_and_its_failure_keeps_them_readable(
    gs: InProcess,
) -> None:
    anyone = As(gs, None)
    body = {
        "branches": [branch("en", "echo", "hello"), branch("fr", "other", "bonjour")],
        "aggregate": "reduce",
        "reduce": {"body": chat_body("echo", "Merge: {{outputs}}")},
    }
    done = await ended(anyone, (await fan(anyone, body))["id"])
    result = done["result"]["body"]
    assert result["output"] == "Merge: ### en\nhello\n\n### fr\nbonjour"
    assert result["reduce"]["status"] == "succeeded" and result["partial"] is False
    body["reduce"] = {"body": chat_body("doomed", "Merge: {{outputs}}")}
    done = await ended(anyone, (await fan(anyone, body))["id"])
    result = done["result"]["body"]
    assert done["status"] == "succeeded" and result["partial"] is True
    assert result["reduce"]["status"] == "failed"
    assert {b["name"]: b["status"] for b in result["branches"]} == {
        "en": "succeeded",
        "fr": "succeeded",
    }


async def test_a_branch_past_its_timeout_is_cancelled_and_reported(gs: InProcess) -> None:
    anyone = As(gs, None)
    body = {"branches": [branch("quick", "echo"), branch("late", "slow", timeout_s=0.3)]}
    done = await ended(anyone, (await fan(anyone, body))["id"], timeout=2.5)
    late = next(b for b in done["result"]["body"]["branches"] if b["name"] == "late")
    assert late["status"] == "timeout" and "timeout_s=0.3" in late["error"]["message"]
    assert (await anyone.get(late["job_id"])).json()["status"] == "cancelled"


# -- parent and children --------------------------------------------------------------------------


async def test_children_inherit_tenant_and_priority_and_are_404_to_other_tenants(
    gs: InProcess, keys: Keys
) -> None:
    a, b = As(gs, keys.a), As(gs, keys.b)
    parent = await fan(a, {"branches": [branch("one", "echo")], "priority": 7})
    done = await ended(a, parent["id"])
    child_id = done["result"]["body"]["branches"][0]["job_id"]
    child = (await a.get(child_id)).json()
    assert child["tenant"] == "acme" and child["priority"] == 7
    assert child["metadata"]["genspool.scopes"] == ["read", "submit"]
    for job_id in (parent["id"], child_id):
        assert_error(await b.get(job_id), 404, "not_found")


async def test_cancelling_the_parent_cancels_its_branches(gs: InProcess) -> None:
    anyone = As(gs, None)
    parent = await fan(anyone, {"branches": [branch("s1", "slow"), branch("s2", "slow")]})
    children = await _children(gs, parent["id"], 2)
    assert (await anyone.request("POST", f"/v1/jobs/{parent['id']}/cancel")).status_code == 200
    for child in children:
        assert (await anyone.wait(child, 2.0)).status.value == "cancelled"


async def test_replaying_a_parent_reruns_only_the_branches_that_did_not_succeed(
    gs: InProcess,
) -> None:
    anyone = As(gs, None)
    parent = await fan(anyone, {"branches": [branch("fast", "echo"), branch("slow", "slow")]})
    fast, slow = await _children(gs, parent["id"], 2)
    assert (await anyone.wait(fast, 2.0)).status.value == "succeeded"
    await anyone.request("POST", f"/v1/jobs/{parent['id']}/cancel")
    assert (await anyone.wait(slow, 2.0)).status.value == "cancelled"
    replayed = await anyone.request("POST", f"/v1/jobs/{parent['id']}/replay")
    assert replayed.status_code == 200, replayed.text
    done = await ended(anyone, parent["id"], timeout=8.0)
    result = done["result"]["body"]
    assert result["partial"] is False
    ids = {b["name"]: b["job_id"] for b in result["branches"]}
    assert ids == {"fast": fast, "slow": slow}  # the same children
    assert (await anyone.get(fast)).json()["attempts"] == 1  # the succeeded one did not run again


async def test_the_parents_events_have_one_per_branch_as_it_ends(gs: InProcess) -> None:
    anyone = As(gs, None)
    parent = await fan(anyone, {"branches": [branch("one", "echo"), branch("two", "other")]})
    seen: list[dict[str, Any]] = []
    async with gs.client.stream("GET", f"/v1/jobs/{parent['id']}/events") as response:
        async for line in response.aiter_lines():
            if line.startswith("data:"):
                seen.append(orjson.loads(line[5:]))
                if seen[-1]["status"] in ("succeeded", "failed"):
                    break
    branches = [e["branch"]["name"] for e in seen if "branch" in e]
    assert sorted(branches) == ["one", "two"]
    assert seen[-1]["status"] == "succeeded"
    assert seen.index(next(e for e in seen if "branch" in e)) < len(seen) - 1


async def _children(gs: InProcess, parent_id: str, n: int) -> list[str]:
    """The parent's child jobs once it made them, in branch order."""
    for _ in range(200):
        jobs = await gs.queue.list_jobs(JobFilter(limit=100))
        mine = [j for j in jobs if j.metadata.get("genspool.parent") == parent_id]
        if len(mine) == n:
            return [j.id for j in sorted(mine, key=lambda j: j.metadata["genspool.branch"])]
        await asyncio.sleep(0.02)
    raise AssertionError(f"the parent made no {n} children")


# -- routes ---------------------------------------------------------------------------------------

ROUTE = {
    "description": "French support questions go to two models",
    "pattern": {"lang": ["fr"], "task": [{"prefix": "support"}], "size": [{"numeric": ["<", 100]}]},
    "targets": [
        {"name": "a", "body": chat_body("echo", "Réponds: {{event.text}}")},
        {
            "name": "b",
            "body": {"model": "other", "messages": [{"role": "user", "content": "{{event.text}}"}]},
        },
    ],
}


async def test_routes_are_admin_to_write_and_an_invalid_pattern_names_its_path(
    gs: InProcess, keys: Keys
) -> None:
    admin, a = As(gs, keys.admin), As(gs, keys.a)
    assert_error(await a.request("PUT", "/v1/routes/fr", json=ROUTE), 403)
    created = await admin.request("PUT", "/v1/routes/fr", json=ROUTE)
    assert created.status_code == 201, created.text
    assert (await admin.request("PUT", "/v1/routes/fr", json=ROUTE)).status_code == 200
    listed = (await a.request("GET", "/v1/routes")).json()["data"]
    assert [(r["name"], r["source"]) for r in listed] == [("fr", "api")]
    bad = {**ROUTE, "pattern": {"detail": {"size": [{"prefix": 5}]}}}
    message = assert_error(await admin.request("PUT", "/v1/routes/bad", json=bad), 400)
    assert "detail.size" in message, message
    assert (await admin.request("DELETE", "/v1/routes/fr")).json()["deleted"] is True
    assert_error(await admin.request("GET", "/v1/routes/fr"), 404)
    assert_error(await admin.request("DELETE", "/v1/routes/fr"), 404)


async def test_routes_test_answers_match_or_400(gs: InProcess) -> None:
    anyone = As(gs, None)
    ask = {
        "pattern": ROUTE["pattern"],
        "event": {"lang": "fr", "task": "support-billing", "size": 3},
    }
    assert (await anyone.request("POST", "/v1/routes/test", json=ask)).json() == {"match": True}
    ask["event"] = {"lang": "fr", "task": "sales", "size": 3}
    assert (await anyone.request("POST", "/v1/routes/test", json=ask)).json() == {"match": False}
    ask["pattern"] = {"lang": "fr"}
    message = assert_error(await anyone.request("POST", "/v1/routes/test", json=ask), 400)
    assert "lang" in message


async def test_an_event_runs_every_matching_routes_targets_with_the_event_templated(
    gs: InProcess,
) -> None:
    anyone = As(gs, None)
    await anyone.request("PUT", "/v1/routes/fr", json=ROUTE)
    other = {
        "pattern": {"lang": ["fr", "de"]},
        "targets": [{"name": "all", "body": chat_body("echo", "{{event.lang}}")}],
    }
    await anyone.request("PUT", "/v1/routes/any", json=other)
    event = {"lang": "fr", "task": "support", "size": 10, "text": "Où est ma facture ?"}
    done = await ended(anyone, (await fan(anyone, {"event": event}))["id"])
    result = done["result"]["body"]
    assert result["routes"] == ["any", "fr"]
    assert result["output"] == {
        "any.all": "fr",
        "fr.a": "Réponds: Où est ma facture ?",
        "fr.b": "Où est ma facture ?",
    }
    assert {b["route"] for b in result["branches"]} == {"any", "fr"}
    message = assert_error(
        await anyone.request("POST", "/v1/fanouts", json={"event": {"lang": "en"}}), 400
    )
    assert "matches no route" in message
