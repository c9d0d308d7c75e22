"""The PromptStore role's contract on every backend that keeps prompts (memory, SQLite,
PostgreSQL, and the PostgreSQL store of a Redis or NATS deployment): versions back whole and
never overwritten, the highest version, tenant scoping, paging, the compare-and-set of label
moves (also when writers race), and an audit entry written with each change and only then."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from genspool.core.prompts import AuditEntry, PromptLabel, Prompts, PromptVersion
from genspool.core.queue import Queue
from genspool.core.roles import PromptStore
from tests.helpers.backends import BACKENDS, kind_url, open_backend

KINDS = [k for k in BACKENDS if k not in ("redis", "nats")]


@pytest.fixture(params=KINDS)
def backend_url(request: pytest.FixtureRequest, namespaced_url: Callable[[str], str]) -> str:
    return kind_url(request.param, namespaced_url)


def store_of(queue: Queue) -> PromptStore:
    prompts = queue.storage.prompts
    assert prompts is not None
    return prompts


def version(n: int, prompt_id: str = "greet", tenant: str = "acme") -> PromptVersion:
    template = (("system", "Be {{tone}}."), ("user", "Hello {{name}} #" + str(n)))
    return PromptVersion(tenant, prompt_id, n, "chat", template, ("name", "tone"), 1000.0 + n,
                         "key_1", "d")  # fmt: skip


def audit(entry_id: str, to: int, prompt_id: str = "greet", tenant: str = "acme") -> AuditEntry:
    return AuditEntry(entry_id, tenant, prompt_id, "version.created", "latest", to - 1 or None, to,
                      1000.0 + to, "key_1")  # fmt: skip


def label(v: int, revision: int, name: str = "production", tenant: str = "acme") -> PromptLabel:
    return PromptLabel(tenant, "greet", name, v, revision, 2000.0 + revision, "key_2")


@pytest.mark.parametrize("kind", ["redis", "nats", "redis+postgres", "nats+postgres"])
def test_a_queue_server_alone_keeps_no_prompts(
    kind: str, namespaced_url: Callable[[str], str]
) -> None:
    storage = open_backend(kind_url(kind, namespaced_url))
    if "+" in kind:
        assert storage.prompts is not None
        assert storage.prompts is storage.store  # type: ignore[comparison-overlap]
    else:
        assert storage.prompts is None


async def test_versions_come_back_whole_never_overwritten_and_tenant_scoped(queue: Queue) -> None:
    store = store_of(queue)
    text = PromptVersion("acme", "note", 1, "text", "Say {{x}}", ("x",), 5.0)
    assert await store.prompt_put(version(1), audit("pa_01", 1))
    assert await store.prompt_put(version(2), audit("pa_02", 2))
    assert await store.prompt_put(text, audit("pa_03", 1, "note"))
    other = version(9, tenant="beta")
    assert await store.prompt_put(other, audit("pa_04", 9, tenant="beta"))
    changed = PromptVersion("acme", "greet", 2, "text", "overwritten", (), 9.0)
    assert not await store.prompt_put(changed, audit("pa_05", 2))  # a number is taken once
    assert await store.prompt_get("acme", "greet", 2) == version(2)
    assert await store.prompt_get("acme", "greet", None) == version(2)  # the highest
    assert await store.prompt_get("acme", "note", 1) == text
    assert await store.prompt_get("beta", "greet", 2) is None
    assert await store.prompt_get("beta", "greet", None) == other
    assert await store.prompt_get("acme", "greet", 3) is None
    assert await store.prompt_get("acme", "nothing", None) is None
    ids = [e.id for e in await store.audit_list("acme", "greet", None, 10)]
    assert ids == ["pa_01", "pa_02"]  # the refused put wrote no entry


async def test_versions_and_prompts_page(queue: Queue) -> None:
    store = store_of(queue)
    for n in range(1, 6):
        await store.prompt_put(version(n), audit(f"pa_{n:02}", n))
    for i, name in enumerate(("alpha", "zeta")):
        await store.prompt_put(version(1, name), audit(f"pa_1{i}", 1, name))
        await store.prompt_put(version(2, name), audit(f"pa_2{i}", 2, name))
    await store.prompt_put(version(1, "beta-only", "beta"), audit("pa_30", 1, "x", "beta"))
    found = await store.prompt_versions("acme", "greet", None, 2)
    assert [v.version for v in found] == [5, 4]
    found = await store.prompt_versions("acme", "greet", 4, 10)
    assert [v.version for v in found] == [3, 2, 1]
    latest = await store.prompt_list("acme", None, 10)
    assert [(v.prompt_id, v.version) for v in latest] == [("alpha", 2), ("greet", 5), ("zeta", 2)]
    latest = await store.prompt_list("acme", "alpha", 1)
    assert [(v.prompt_id, v.version) for v in latest] == [("greet", 5)]
    assert await store.prompt_list("nobody", None, 10) == []


async def test_a_label_moves_by_compare_and_set_with_its_audit(queue: Queue) -> None:
    store = store_of(queue)
    first = AuditEntry("pa_a1", "acme", "greet", "label.moved", "production", None, 1, 5.0, "k")
    second = AuditEntry("pa_a2", "acme", "greet", "label.moved", "production", 1, 2, 6.0, "k")
    stale = AuditEntry("pa_a3", "acme", "greet", "label.moved", "production", 1, 3, 7.0, "k")
    assert not await store.label_put(label(1, 2), 1, first)  # revision 1 expected: none stored
    assert await store.label_put(label(1, 1), 0, first)
    assert not await store.label_put(label(9, 1), 0, stale)  # it exists now
    assert await store.label_put(label(2, 2), 1, second)
    assert not await store.label_put(label(3, 2), 1, stale)  # a stale revision
    assert await store.label_get("acme", "greet", "production") == label(2, 2)
    assert await store.label_get("beta", "greet", "production") is None
    await store.label_put(label(1, 1, "canary"), 0, AuditEntry(
        "pa_a4", "acme", "greet", "label.moved", "canary", None, 1, 8.0))  # fmt: skip
    assert await store.label_list("acme", "greet") == [label(1, 1, "canary"), label(2, 2)]
    assert await store.label_list("beta", "greet") == []
    entries = await store.audit_list("acme", "greet", None, 10)
    assert entries == [first, second, entries[2]]
    assert entries[2].label == "canary"
    assert await store.audit_list("acme", "greet", "pa_a2", 10) == entries[2:]
    assert await store.audit_list("beta", "greet", None, 10) == []


async def test_racing_label_moves_one_wins_per_revision(queue: Queue) -> None:
    store = store_of(queue)
    await store.label_put(label(1, 1), 0, audit("pa_00", 1))

    async def move(i: int) -> bool:
        entry = AuditEntry(f"pa_r{i:02}", "acme", "greet", "label.moved", "production", 1, i, 1.0)
        return await store.label_put(label(i, 2), 1, entry)

    won = await asyncio.gather(*(move(i) for i in range(2, 12)))
    assert sum(won) == 1
    winner = 2 + won.index(True)
    assert (await store.label_get("acme", "greet", "production")) == label(winner, 2)
    moved = [
        e for e in await store.audit_list("acme", "greet", None, 50) if e.id.startswith("pa_r")
    ]
    assert [e.to_version for e in moved] == [winner]


async def test_racing_creates_number_versions_once_each(queue: Queue) -> None:
    """The registry's numbering over the role: concurrent creates all land, 1..n, no gaps."""
    registry = Prompts(store_of(queue))
    made = await asyncio.gather(
        *(registry.create("acme", "raced", "text", f"v{i} {{{{x}}}}") for i in range(8))
    )
    assert sorted(v.version for v in made) == list(range(1, 9))
    entries = await store_of(queue).audit_list("acme", "raced", None, 50)
    assert sorted(e.to_version for e in entries) == list(range(1, 9))
