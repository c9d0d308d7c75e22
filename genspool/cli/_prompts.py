"""``prompts``: a running server's prompt registry, from the shell.

``genspool prompts create greet --text "Hello {{name}}"`` stores a text prompt (or the next
version of ``greet``); with ``--chat`` the prompt is a chat: ``--file``/``--text`` then hold a
JSON list of ``{"role", "content"}`` messages, or, when they do not start with ``[``, the one
user message. ``list``, ``get NAME [--version N | --label L]``, ``label NAME LABEL VERSION``
(point a label at a version) and ``history NAME`` (every change: who, when, from -> to) read and
move the rest. A version is never edited; an error of the server is one line and a non-zero
exit.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from genspool.cli._client import _client
from genspool.cli._common import FLAG, Api, Key, app, out
from genspool.exceptions import GenspoolError

if TYPE_CHECKING:
    from genspool.client import Prompt, PromptChange

prompts_app = typer.Typer(
    help="Stored prompts: list, get, create, label, history.", no_args_is_help=True
)
app.add_typer(prompts_app, name="prompts")

Name = Annotated[str, typer.Argument(help="The prompt's id, e.g. greet.")]
AsJson = Annotated[bool, typer.Option("--json", metavar=FLAG, help="As JSON, as the API sends it.")]


def _say(text: str) -> None:
    out.print(text, markup=False, highlight=False)


def _when(ts: float | None) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S") if ts else ""


def _template(p: Prompt) -> str:
    if isinstance(p.template, str):
        return p.template
    return "\n".join(f"[{m.get('role')}] {m.get('content')}" for m in p.template or ())


# -- list, get -----------------------------------------------------------------------------------


@prompts_app.command("list")
def prompts_list(as_json: AsJson = False, api_url: Api = None, api_key: Key = None) -> None:
    """Every prompt at its latest version, by id."""
    with _client(api_url, api_key) as client:
        found = list(client.prompts.list())
    if as_json:
        out.print_json(data={"data": [p.to_dict() for p in found]})
        return
    table = Table("id", "version", "kind", "variables", "description", "created")
    for p in found:
        row = (p.id, str(p.version), p.kind, ", ".join(p.variables), p.description or "")
        table.add_row(*(Text(cell) for cell in row), _when(p.created_at))
    out.print(table)


@prompts_app.command("get")
def prompts_get(
    name: Name,
    version: Annotated[int | None, typer.Option(help="This version (default: the latest).")] = None,
    label: Annotated[str | None, typer.Option(help="The version this label points at.")] = None,
    as_json: AsJson = False,
    api_url: Api = None,
    api_key: Key = None,
) -> None:
    """One version of a prompt: its labels, variables and template."""
    if version is not None and label is not None:
        raise GenspoolError("give --version or --label, not both")
    if version is not None and version < 1:
        raise GenspoolError(f"--version {version}: versions are 1, 2, ...")
    with _client(api_url, api_key) as client:
        found = client.prompts.get(name, version=version, label=label)
    if as_json:
        out.print_json(data=found.to_dict())
        return
    _say("\n".join([
        f"id          {found.id}",
        f"version     {found.version}",
        f"kind        {found.kind}",
        f"labels      {', '.join(found.labels) or '-'}",
        f"variables   {', '.join(found.variables) or '-'}",
        f"created     {_when(found.created_at)} by {found.created_by or '-'}",
        f"description {found.description or '-'}",
        "",
        _template(found),
    ]))  # fmt: skip


# -- create, label -------------------------------------------------------------------------------


def _content(file: Path | None, text: str | None) -> str:
    if (file is None) == (text is None):
        raise GenspoolError("give the template as --file F or --text T (one of them)")
    if text is not None:
        return text
    assert file is not None
    try:
        return file.read_text()
    except OSError as exc:
        raise GenspoolError(f"--file {file}: cannot read it ({exc.strerror})") from exc
    except UnicodeDecodeError as exc:
        raise GenspoolError(f"--file {file}: not UTF-8 text ({exc.reason})") from exc


def _chat(content: str, where: str) -> list[dict[str, Any]]:
    """A chat's messages: a JSON list as given, or the one user message."""
    if not content.lstrip().startswith("["):
        return [{"role": "user", "content": content}]
    try:
        messages = json.loads(content)
    except json.JSONDecodeError as exc:
        raise GenspoolError(
            f'{where}: not a JSON list of {{"role", "content"}} messages ({exc})'
        ) from exc
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise GenspoolError(f'{where}: must be a JSON list of {{"role", "content"}} messages')
    return messages


@prompts_app.command("create")
def prompts_create(
    name: Name,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="The template, from this file.")
    ] = None,
    text: Annotated[str | None, typer.Option("--text", "-t", help="The template.")] = None,
    chat: Annotated[
        bool,
        typer.Option(
            "--chat",
            metavar=FLAG,
            help='A chat prompt: a JSON list of {"role", "content"}, or one user message.',
        ),
    ] = False,
    labels: Annotated[
        list[str] | None,
        typer.Option("--label", "-l", help="Point this label at the new version (repeat)."),
    ] = None,
    description: Annotated[str | None, typer.Option(help="What it is for.")] = None,
    api_url: Api = None,
    api_key: Key = None,
) -> None:
    """Store a prompt, or the next version of NAME; prints its version."""
    content = _content(file, text)
    where = "--file" if file is not None else "--text"
    template: str | list[dict[str, Any]] = _chat(content, where) if chat else content
    with _client(api_url, api_key) as client:
        made = client.prompts.create(
            name, template, kind="chat" if chat else "text", description=description,
            labels=labels or (),
        )  # fmt: skip
    _say(f"{made.id} version {made.version} ({', '.join(made.labels) or 'no labels'})")


@prompts_app.command("label")
def prompts_label(
    name: Name,
    label: Annotated[str, typer.Argument(help="The label, e.g. production.")],
    version: Annotated[int, typer.Argument(help="The version it is to point at.")],
    expect: Annotated[
        int | None,
        typer.Option(help="Move it only if it points at this version now (0: not set yet)."),
    ] = None,
    api_url: Api = None,
    api_key: Key = None,
) -> None:
    """Point LABEL of NAME at VERSION (audited: who, when, from -> to)."""
    with _client(api_url, api_key) as client:
        moved = client.prompts.set_label(name, label, version, expected_version=expect)
    if not moved.moved:
        _say(f"{name}: {label} already points at version {moved.version}")
        return
    before = "(not set)" if moved.from_version is None else str(moved.from_version)
    _say(f"{name}: {label} {before} -> {moved.version}")


# -- history -------------------------------------------------------------------------------------


def _change(c: PromptChange) -> tuple[str, ...]:
    before = "-" if c.from_version is None else str(c.from_version)
    return (_when(c.at), c.action, c.label, f"{before} -> {c.to_version}", c.actor or "-")


@prompts_app.command("history")
def prompts_history(
    name: Name, as_json: AsJson = False, api_url: Api = None, api_key: Key = None
) -> None:
    """Every change of NAME, oldest first: versions created and labels moved."""
    with _client(api_url, api_key) as client:
        changes = list(client.prompts.history(name))
    if as_json:
        out.print_json(data={"data": [c.to_dict() for c in changes]})
        return
    table = Table("at (UTC)", "action", "label", "version", "by")
    for c in changes:
        table.add_row(*(Text(cell) for cell in _change(c)))
    out.print(table)
