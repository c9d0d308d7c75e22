"""``keys``: API keys created, listed and revoked straight on the database, so the first key
exists before any server runs."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from genspool.backends import open_storage
from genspool.core.keys import KeyStore, parse_scopes

if TYPE_CHECKING:
    pass

from genspool.cli._common import (
    Db,
    T,
    _settings,
    keys_app,
    out,
)

# -- API keys (on the database) --------------------------------------------------------------


def _on_keys(db: str | None, action: Callable[[KeyStore], Awaitable[T]]) -> T:
    settings = _settings(db, None)
    storage = open_storage(settings.database_url, queue_url=settings.queue_url)

    async def run() -> T:
        await storage.connect()
        try:
            return await action(KeyStore(storage.kv, storage.coordination))
        finally:
            await storage.close()

    return asyncio.run(run())


def _when(t: float | None) -> str:
    return "" if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="Tenant whose jobs the key submits and sees.")],
    scopes: Annotated[str, typer.Option(help="Comma-separated: submit, read, admin.")],
    name: Annotated[str | None, typer.Option(help="A label for people.")] = None,
    rpm: Annotated[int | None, typer.Option(min=1, help="Most submissions per minute.")] = None,
    db: Db = None,
) -> None:
    """Create an API key and print it, as the last line, once."""
    wanted = parse_scopes(scopes)
    key, token = _on_keys(db, lambda s: s.create(tenant, wanted, name=name, rpm=rpm))
    out.print(
        f"created API key {key.id}: tenant {key.tenant}, scopes {','.join(sorted(key.scopes))}"
        + (f", {key.rpm} submissions/min" if key.rpm else ""),
        markup=False,
        highlight=False,
    )
    out.print("Keep it now; it cannot be shown again:", markup=False, highlight=False)
    out.print(token, markup=False, highlight=False)


@keys_app.command("list")
def keys_list(db: Db = None) -> None:
    """List API keys (never their secrets), oldest first."""
    table = Table("id", "tenant", "scopes", "name", "rpm", "created", "revoked")
    for k in _on_keys(db, lambda s: s.list_keys()):
        table.add_row(
            k.id,
            k.tenant,
            ",".join(sorted(k.scopes)),
            escape(k.name or ""),
            str(k.rpm or ""),
            _when(k.created_at),
            _when(k.revoked_at) or "no",
        )
    out.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str, db: Db = None) -> None:
    """Revoke an API key for good; servers stop taking it within GENSPOOL_KEY_CACHE_S."""
    key = _on_keys(db, lambda s: s.revoke(key_id))
    out.print(f"revoked {key.id} (tenant {key.tenant})", markup=False, highlight=False)
