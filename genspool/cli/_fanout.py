"""``fanout`` and ``routes``: fan a request out through a running server, and its routes.

``genspool fanout -m model-a -m model-b "prompt"`` sends the prompt to each model as a branch
(``--json`` takes a whole ``POST /v1/fanouts`` body, ``--event`` an event for the routes) and
shows a live table of the branches as they land; the parent's result is printed at the end.
``genspool routes list`` and ``genspool routes test PATTERN EVENT`` read and try the rules.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.live import Live
from rich.table import Table

from genspool.cli._client import TERMINAL, _client
from genspool.cli._common import FLAG, Api, Key, app, err, out
from genspool.exceptions import APIConnectionError, GenspoolError

routes_app = typer.Typer(help="Fan-out routes: list them, try a pattern.", no_args_is_help=True)
app.add_typer(routes_app, name="routes")

STRATEGIES = ("all", "first", "quorum", "reduce")


def _json_arg(text: str, what: str) -> Any:
    """JSON given inline, as ``@file``, or ``-`` for stdin."""
    if text == "-":
        text = sys.stdin.read()
    elif text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as exc:
            raise GenspoolError(f"{what}: cannot read {text[1:]}: {exc.strerror}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise GenspoolError(f"{what} is not valid JSON: {exc}") from exc


@app.command()
def fanout(
    prompt: Annotated[str | None, typer.Argument(help="A prompt sent to every --model.")] = None,
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="A branch per model (repeat).")
    ] = None,
    event: Annotated[
        str | None, typer.Option(help="An event (JSON, @file or -) matched against the routes.")
    ] = None,
    request: Annotated[
        str | None, typer.Option("--json", help="A whole POST /v1/fanouts body (JSON, @file, -).")
    ] = None,
    aggregate: Annotated[str, typer.Option(help="all, first, quorum or reduce.")] = "all",
    k: Annotated[int | None, typer.Option(help="quorum: branches that must agree.")] = None,
    deadline: Annotated[float | None, typer.Option(help="Seconds before giving up.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json-out", metavar=FLAG, help="Print the parent job as JSON.")
    ] = False,
    api_url: Api = None,
    api_key: Key = None,
) -> None:
    """Fan a prompt out to several models (or an event to the routes); watch branches land."""
    body = _body(prompt, model, event, request, aggregate, k, deadline)
    with _client(api_url, api_key) as client:
        parent = client.fanout(body)
        err.print(f"{parent.id}: {parent.status.value}", markup=False, highlight=False)
        rows: dict[str, dict[str, Any]] = {}
        with Live(_branches(rows), console=err, transient=False) as live:
            try:
                with client.events(parent.id) as events:
                    for ev in events:
                        if ev.progress is not None and ev.progress[0] == "branch":
                            rows[ev.progress[1]["name"]] = ev.progress[1]
                            live.update(_branches(rows))
                        if ev.ends:
                            break
            except APIConnectionError:
                pass  # the final state is read below
            done = client.wait(parent.id)
            # Branches that ended before the events were followed are in the result (or error).
            final = done.result.body if done.result is not None else done.to_dict().get("error")
            for b in (final or {}).get("branches", []):
                rows[b["name"]] = b
            live.update(_branches(rows))
    if as_json:
        out.print_json(json.dumps(done.to_dict()))
        return
    if done.status.value != "succeeded" or done.result is None:
        message = done.error.message if done.error is not None else done.status.value
        raise GenspoolError(f"fan-out {done.id} {done.status.value}: {message}")
    result = done.result.body
    output = result.get("output")
    text = output if isinstance(output, str) else json.dumps(output, indent=2, ensure_ascii=False)
    if result.get("partial"):
        err.print("[yellow]partial:[/] not every branch succeeded", highlight=False)
    out.print(text, markup=False)


def _body(
    prompt: str | None,
    models: list[str] | None,
    event: str | None,
    request: str | None,
    aggregate: str,
    k: int | None,
    deadline: float | None,
) -> dict[str, Any]:
    if request is not None:
        given = _json_arg(request, "--json")
        if not isinstance(given, dict):
            raise GenspoolError("--json must be a JSON object")
        return given
    if aggregate not in STRATEGIES:
        raise GenspoolError(f"--aggregate {aggregate}: choose from {', '.join(STRATEGIES)}")
    body: dict[str, Any] = {"aggregate": {"strategy": aggregate, **({"k": k} if k else {})}}
    if deadline is not None:
        body["deadline_s"] = deadline
    if event is not None:
        body["event"] = _json_arg(event, "--event")
        return body
    if prompt is None or not models:
        raise GenspoolError("give a prompt and --model twice or more, or --event, or --json")
    body["branches"] = [
        {"name": m, "body": {"model": m, "messages": [{"role": "user", "content": prompt}]}}
        for m in models
    ]
    return body


def _branches(rows: dict[str, dict[str, Any]]) -> Table:
    table = Table("branch", "status", "answer / error", title="branches", title_justify="left")
    for name, b in rows.items():
        status = b.get("status", "")
        colour = "green" if status == "succeeded" else "red" if status in TERMINAL else "yellow"
        detail = (
            _answer(b.get("result")) if "result" in b else (b.get("error") or {}).get("message", "")
        )
        table.add_row(name, f"[{colour}]{status}[/]", str(detail)[:80])
    return table


def _answer(body: Any) -> str:
    try:
        return str(body["choices"][0]["message"]["content"])
    except (KeyError, IndexError, TypeError):
        return json.dumps(body)[:80]


@routes_app.command("list")
def routes_list(
    as_json: Annotated[bool, typer.Option("--json", metavar=FLAG, help="As JSON.")] = False,
    api_url: Api = None,
    api_key: Key = None,
) -> None:
    """The fan-out routes: the models file's and those written through the API."""
    with _client(api_url, api_key) as client:
        routes = client.routes()
    if as_json:
        out.print_json(json.dumps(routes))
        return
    table = Table("name", "source", "pattern", "targets")
    for r in routes:
        targets = ", ".join(f"{t['name']} → {t['body'].get('model', '?')}" for t in r["targets"])
        table.add_row(r["name"], r["source"], json.dumps(r["pattern"]), targets)
    out.print(table)


@routes_app.command("test")
def routes_test(
    pattern: Annotated[str, typer.Argument(help="An event pattern (JSON, @file or -).")],
    event: Annotated[str, typer.Argument(help="An event (JSON, @file or -).")],
    api_url: Api = None,
    api_key: Key = None,
) -> None:
    """Whether EVENT matches PATTERN (exit status 0: it does, 1: it does not)."""
    with _client(api_url, api_key) as client:
        matched = client.test_route(_json_arg(pattern, "PATTERN"), _json_arg(event, "EVENT"))
    out.print("match" if matched else "no match")
    raise typer.Exit(0 if matched else 1)
