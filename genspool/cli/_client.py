"""``submit``, ``jobs`` and ``dlq``: clients of a running server's HTTP API, through
:class:`genspool.Client`."""

from __future__ import annotations

import contextlib
import itertools
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from genspool.exceptions import APIConnectionError, GenspoolError

if TYPE_CHECKING:
    from genspool.client import Client, Job

from genspool.cli._common import (
    DEFAULT_API,
    Api,
    Key,
    app,
    dlq_app,
    jobs_app,
    out,
)

# -- client commands -------------------------------------------------------------------------


@contextlib.contextmanager
def _client(api_url: str, api_key: str | None) -> Iterator[Client]:
    """A client of the API whose errors read as one line each: the server's message with its
    status, or that the server cannot be reached."""
    from genspool.client import Client  # client commands only; keeps worker start-up light

    try:
        with Client(api_url, api_key, timeout=60) as client:
            yield client
    except APIConnectionError as exc:
        cause = exc.__cause__ or exc
        message = f"cannot reach genspool at {api_url} ({cause}); is it running?"
        raise GenspoolError(message) from exc
    except GenspoolError as exc:
        if exc.response is None:
            raise
        raise GenspoolError(f"HTTP {exc.response.status_code}: {exc.message}") from exc


@app.command()
def submit(
    prompt: Annotated[str | None, typer.Argument(help="A prompt, or omit and use --json.")] = None,
    model: Annotated[str, typer.Option(help="Model to use.")] = "smollm2-135m-instruct",
    embed: Annotated[bool, typer.Option("--embed", help="An embeddings job.")] = False,
    request: Annotated[
        str | None,
        typer.Option("--json", help="A job or request as JSON (or @file, or - for stdin)."),
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Chat: most tokens to generate.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait and print the answer.")] = False,
    api_url: Api = DEFAULT_API,
    api_key: Key = None,
) -> None:
    """Submit a job and print its id (or, with --wait, its answer)."""
    spec = _job_spec(prompt, model, embed, request, max_tokens)
    with _client(api_url, api_key) as client:
        # Queue options from --json go through as given; the server says which it rejects.
        options = {k: v for k, v in spec.items() if k not in ("url", "body")}
        created = client.submit(spec["url"], spec.get("body", {}), extra_body=options)
        if not wait:
            out.print(created.id)
            return
        done = client.wait(created.id)
    if done.status != "succeeded" or done.result is None:
        raise GenspoolError(f"job {done.id} {done.status.value}: {done.to_dict().get('error')}")
    body = dict(done.result.body)
    if body.get("object") == "chat.completion":
        out.print(body["choices"][0]["message"]["content"], markup=False)
    else:
        out.print_json(data=body)


def _job_spec(
    prompt: str | None, model: str, embed: bool, request: str | None, max_tokens: int | None
) -> dict[str, Any]:
    if request is not None:
        text = (
            sys.stdin.read()
            if request == "-"
            else (Path(request[1:]).read_text() if request.startswith("@") else request)
        )
        try:
            spec = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GenspoolError(f"--json is not valid JSON: {exc}") from exc
        if not isinstance(spec, dict):
            raise GenspoolError("--json must be a JSON object")
        return spec if "url" in spec else {"url": "/v1/chat/completions", "body": spec}
    if prompt is None:
        raise GenspoolError("give a prompt or --json")
    if embed:
        return {"url": "/v1/embeddings", "body": {"model": model, "input": prompt}}
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return {"url": "/v1/chat/completions", "body": body}


def _table(jobs: Iterable[Job]) -> Table:
    table = Table("id", "status", "model", "attempts", "error")
    for j in jobs:
        error = j.error.message if j.error is not None else ""
        table.add_row(j.id, j.status.value, j.model, str(j.attempts), error[:60])
    return table


@jobs_app.command("list")
def jobs_list(
    status: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    model: Annotated[str | None, typer.Option(help="Only jobs of this model.")] = None,
    limit: Annotated[int, typer.Option(help="How many.")] = 20,
    api_url: Api = DEFAULT_API,
    api_key: Key = None,
) -> None:
    """List jobs, newest first."""
    with _client(api_url, api_key) as client:
        # One page of ``limit`` jobs: the listing stops before it would fetch another.
        jobs = list(itertools.islice(client.list(status=status, model=model, limit=limit), limit))
    out.print(_table(jobs))


@jobs_app.command("get")
def jobs_get(job_id: str, api_url: Api = DEFAULT_API, api_key: Key = None) -> None:
    """Show one job as JSON."""
    with _client(api_url, api_key) as client:
        out.print_json(data=client.get(job_id).to_dict())


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, api_url: Api = DEFAULT_API, api_key: Key = None) -> None:
    """Cancel a queued or running job."""
    with _client(api_url, api_key) as client:
        out.print(client.cancel(job_id).status.value)


@dlq_app.command("list")
def dlq_list(
    limit: Annotated[int, typer.Option(help="How many.")] = 20,
    api_url: Api = DEFAULT_API,
    api_key: Key = None,
) -> None:
    """List dead letters, newest first."""
    with _client(api_url, api_key) as client:
        jobs = list(itertools.islice(client.dead_letters(limit=limit), limit))
    out.print(_table(jobs))


@dlq_app.command("replay")
def dlq_replay(job_id: str, api_url: Api = DEFAULT_API, api_key: Key = None) -> None:
    """Queue a dead-lettered job again."""
    with _client(api_url, api_key) as client:
        out.print(client.replay(job_id).status.value)
