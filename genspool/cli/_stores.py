"""``stores`` and ``search``: a running server's vector stores, from the shell.

``genspool stores list|create NAME|get STORE|delete STORE`` manage them; ``genspool search
STORE "query"`` prints the best chunks as a table (score, file, page, headings, the start of the
text) or, with ``--json``, as the API sends them. A STORE is an id (``vs_…``) or a name; a name
held by several stores is refused, naming how many, so a command never picks one silently.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table
from rich.text import Text

from genspool.cli._batches import _when
from genspool.cli._client import _client
from genspool.cli._common import FLAG, Api, Key, app, out
from genspool.cli._fanout import _json_arg
from genspool.exceptions import GenspoolError

if TYPE_CHECKING:
    from genspool.client import Client, SearchHit, VectorStore

stores_app = typer.Typer(help="Vector stores: list, create, get, delete.", no_args_is_help=True)
app.add_typer(stores_app, name="stores")

Store = Annotated[str, typer.Argument(help="The store's id (vs_…) or its name.")]
AsJson = Annotated[bool, typer.Option("--json", metavar=FLAG, help="As JSON, as the API sends it.")]
STORE_ID = re.compile(r"^vs_[0-9a-f]+$")
#: Characters of a chunk's text shown in the search table.
SNIPPET = 120
#: The server's bound on ``max_num_results``.
MAX_K = 10_000


def find_store(client: Client, name_or_id: str) -> VectorStore | None:
    """The store with this id, or the one store with this name (None: no such store)."""
    if STORE_ID.match(name_or_id):
        return client.store(name_or_id)
    named = [s for s in client.stores() if s.name == name_or_id]
    if len(named) > 1:
        raise GenspoolError(
            f"{len(named)} vector stores are named {name_or_id!r}; give the id of one"
            " (genspool stores list)"
        )
    return named[0] if named else None


def resolve_store(client: Client, name_or_id: str) -> VectorStore:
    found = find_store(client, name_or_id)
    if found is None:
        raise GenspoolError(f"no vector store named {name_or_id!r} (genspool stores list)")
    return found


# -- stores ------------------------------------------------------------------------------------


def _stores_table(found: list[VectorStore]) -> Table:
    table = Table("id", "name", "model", "files", "failed", "status", "bytes", "created")
    for s in found:
        c = s.file_counts
        files = f"{c.get('completed', 0)}/{c.get('total', 0)}"
        row = (s.id, Text(s.name or ""), s.model or "", files, str(c.get("failed", 0)), s.status)
        table.add_row(*row, str(s.usage_bytes), _when(s.created_at))
    return table


@stores_app.command("list")
def stores_list(as_json: AsJson = False, api_url: Api = None, api_key: Key = None) -> None:
    """Every vector store, newest first: its model, files done of all, and size."""
    with _client(api_url, api_key) as client:
        found = list(client.stores())
    if as_json:
        out.print_json(data={"data": [s.to_dict() for s in found]})
    else:
        out.print(_stores_table(found))


@stores_app.command("create")
def stores_create(
    name: Annotated[str, typer.Argument(help="Its name (ingest and search find it by it).")],
    model: Annotated[
        str | None, typer.Option(help="The served embedding model (default: the server's).")
    ] = None,
    api_url: Api = None,
    api_key: Key = None,
) -> None:
    """Create a vector store and print its id."""
    if not name.strip() or STORE_ID.match(name):
        raise GenspoolError(f"{name!r}: give a name (not empty, not shaped like an id)")
    with _client(api_url, api_key) as client:
        made = client.create_store(name, model=model)
    out.print(made.id, markup=False, highlight=False)


def _summary(s: VectorStore) -> str:
    c = s.file_counts
    return "\n".join([
        f"id        {s.id}",
        f"name      {s.name or '-'}",
        f"status    {s.status}",
        f"model     {s.model or '-'} ({s.dimensions or '?'} dimensions)",
        f"files     {c.get('total', 0)}: {c.get('completed', 0)} completed,"
        f" {c.get('in_progress', 0)} in progress, {c.get('failed', 0)} failed",
        f"bytes     {s.usage_bytes}",
        f"created   {_when(s.created_at)}",
        f"metadata  {json.dumps(dict(s.metadata))}",
    ])  # fmt: skip


@stores_app.command("get")
def stores_get(
    store: Store, as_json: AsJson = False, api_url: Api = None, api_key: Key = None
) -> None:
    """One store: its model, file counts and size."""
    with _client(api_url, api_key) as client:
        found = resolve_store(client, store)
    if as_json:
        out.print_json(data=found.to_dict())
    else:
        out.print(_summary(found), markup=False, highlight=False)


@stores_app.command("delete")
def stores_delete(store: Store, api_url: Api = None, api_key: Key = None) -> None:
    """Delete a store and its chunks (the uploaded files stay)."""
    with _client(api_url, api_key) as client:
        found = resolve_store(client, store)
        client.delete_store(found.id)
    out.print(f"deleted {found.id}", markup=False, highlight=False)


# -- search ------------------------------------------------------------------------------------


def _snippet(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= SNIPPET else flat[: SNIPPET - 1] + "…"


def _hits_table(hits: list[SearchHit]) -> Table:
    table = Table("score", "file", "page", "headings", "text")
    for h in hits:
        page = "" if h.page is None else str(h.page)
        where = Text(" > ".join(h.headings))
        table.add_row(f"{h.score:.3f}", Text(h.filename), page, where, Text(_snippet(h.text)))
    return table


def _filters(given: str | None) -> dict[str, object] | None:
    if given is None:
        return None
    found = _json_arg(given, "--filter")
    if not isinstance(found, dict):
        raise GenspoolError('--filter must be a JSON object ({"type": "eq", "key": …, "value": …})')
    return found


@app.command()
def search(
    store: Store,
    query: Annotated[str, typer.Argument(help="What to look for, in words.")],
    k: Annotated[int, typer.Option("-k", help="How many chunks, best first.")] = 10,
    filter: Annotated[
        str | None,
        typer.Option(
            "--filter", help="OpenAI's attribute filter as JSON (or @file): applied before ranking."
        ),
    ] = None,
    threshold: Annotated[
        float | None, typer.Option(help="Only chunks scoring at least this (0 to 1).")
    ] = None,
    as_json: AsJson = False,
    api_url: Api = None,
    api_key: Key = None,
) -> None:
    """Search a vector store: the best chunks with their score, file, page and headings."""
    if not 1 <= k <= MAX_K:
        raise GenspoolError(f"-k {k}: must be from 1 to {MAX_K}")
    if threshold is not None and not 0 <= threshold <= 1:
        raise GenspoolError(f"--threshold {threshold}: must be from 0 to 1")
    if not query.strip():
        raise GenspoolError("give the text to search for")
    filters = _filters(filter)
    with _client(api_url, api_key) as client:
        found = resolve_store(client, store)
        hits = client.search(found.id, query, k=k, filters=filters, score_threshold=threshold)
    if as_json:
        out.print_json(data={"data": [h.to_dict() for h in hits]})
    else:
        out.print(_hits_table(hits))
