"""``submit``, ``jobs`` and ``dlq``: clients of a running server's HTTP API, through
:class:`genspool.Client`."""

from __future__ import annotations

import contextlib
import json
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from genspool.exceptions import APIConnectionError, GenspoolError

if TYPE_CHECKING:
    from genspool.client import Client, Job, JobEvent

from genspool.cli._common import (
    DEFAULT_API,
    FLAG,
    GLOBAL,
    Api,
    Key,
    app,
    dlq_app,
    err,
    jobs_app,
    out,
)

CHAT, EMBEDDINGS = "/v1/chat/completions", "/v1/embeddings"
TERMINAL = frozenset({"succeeded", "failed", "cancelled", "expired"})

# -- client commands -------------------------------------------------------------------------


@contextlib.contextmanager
def _client(api_url: str | None, api_key: str | None) -> Iterator[Client]:
    """A client of the API whose errors read as one line each: the server's message with its
    status, or that the server cannot be reached. ``--api``/``--api-key`` given after the
    command win over the global ones (which read GENSPOOL_API_URL / GENSPOOL_API_KEY)."""
    from genspool.client import Client  # client commands only; keeps worker start-up light

    api_url = api_url or GLOBAL["api_url"] or DEFAULT_API
    api_key = api_key or GLOBAL["api_key"]
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
    model: Annotated[
        str | None,
        typer.Option(
            show_default=False,
            help="Model to use (default: from /v1/models, the first chat model, or the first "
            "embedding model with --embed).",
        ),
    ] = None,
    embed: Annotated[
        bool, typer.Option("--embed", metavar=FLAG, help="An embeddings job.")
    ] = False,
    request: Annotated[
        str | None,
        typer.Option("--json", help="A job or request as JSON (or @file, or - for stdin)."),
    ] = None,
    max_tokens: Annotated[int | None, typer.Option(help="Chat: most tokens to generate.")] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait",
            metavar=FLAG,
            help="Wait and print the answer; progress (status changes, and a chat's tokens on a "
            "terminal) goes to stderr.",
        ),
    ] = False,
    api_url: Api = None,
    api_key: Key = None,
) -> None:
    """Submit a job and print its id (or, with --wait, its answer)."""
    with _client(api_url, api_key) as client:
        spec = _job_spec(prompt, model, embed, request, max_tokens, client)
        # Queue options from --json go through as given; the server says which it rejects.
        options = {k: v for k, v in spec.items() if k not in ("url", "body")}
        created = client.submit(spec["url"], spec.get("body", {}), extra_body=options)
        if not wait:
            out.print(created.id)
            return
        progress = Progress(created.id, tokens=sys.stderr.isatty())
        done = _follow(client, created, progress)
    if done.status != "succeeded" or done.result is None:
        raise GenspoolError(f"job {done.id} {done.status.value}: {done.to_dict().get('error')}")
    body = dict(done.result.body)
    if body.get("object") != "chat.completion":
        out.print_json(data=body)
        return
    answer = body["choices"][0]["message"]["content"]
    # On a terminal the streamed tokens already showed the answer; a pipe always gets it.
    if not (sys.stdout.isatty() and answer == progress.streamed):
        out.print(answer, markup=False)


def _follow(client: Client, job: Job, progress: Progress) -> Job:
    """Wait for ``job`` while telling stderr how it goes: each status change, and the tokens
    of a chat as they come when stderr is a terminal. The final state is read from the API."""
    progress.status(job.status.value)
    with contextlib.suppress(APIConnectionError), client.events(job.id) as events:
        for event in events:
            progress.event(event)
            if event.ends:
                break
    progress.done()
    return client.wait(job.id)


class Progress:
    """``job_…: queued``, ``job_…: running (attempt 1)``, token deltas inline, on stderr."""

    def __init__(self, job_id: str, *, tokens: bool) -> None:
        self.job_id, self.tokens = job_id, tokens
        self.last: str | None = None
        self.mid_line = False
        self.started = time.monotonic()
        self.streamed = ""  # the tokens shown

    def event(self, event: JobEvent) -> None:
        if event.delta is not None:
            if self.tokens:
                sys.stderr.write(event.delta)
                sys.stderr.flush()
                self.streamed += event.delta
                self.mid_line = True
            return
        status = str(getattr(event.status, "value", event.status))
        self.status(status, f" (attempt {event.attempts})" if status == "running" else "")

    def status(self, status: str, detail: str = "") -> None:
        if status == self.last:
            return
        self.last = status
        self._end_line()
        took = f" after {time.monotonic() - self.started:.1f} s" if status in TERMINAL else ""
        err.print(f"{self.job_id}: {status}{detail}{took}", markup=False, highlight=False)

    def done(self) -> None:
        self._end_line()

    def _end_line(self) -> None:
        if self.mid_line:
            sys.stderr.write("\n")
            self.mid_line = False


def _default_model(client: Client, url: str) -> str:
    """The model for ``url`` when none is named, from ``GET /v1/models``: the first that serves
    only that endpoint (an embedding model for embeddings), else the first that serves it."""
    serving = [m for m in client.models() if url in m.endpoints]
    if not serving:
        raise GenspoolError(f"no served model answers {url}; pass --model")
    return next((m.id for m in serving if set(m.endpoints) == {url}), serving[0].id)


def _job_spec(
    prompt: str | None,
    model: str | None,
    embed: bool,
    request: str | None,
    max_tokens: int | None,
    client: Client,
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
        return spec if "url" in spec else {"url": CHAT, "body": spec}
    if prompt is None:
        raise GenspoolError("give a prompt or --json")
    url = EMBEDDINGS if embed else CHAT
    model = model or _default_model(client, url)
    if embed:
        return {"url": url, "body": {"model": model, "input": prompt}}
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": prompt}]}
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    return {"url": url, "body": body}


def _table(jobs: Iterable[Job]) -> Table:
    table = Table("id", "status", "model", "attempts", "error")
    for j in jobs:
        error = j.error.message if j.error is not None else ""
        table.add_row(j.id, j.status.value, j.model, str(j.attempts), error[:60])
    return table


#: The paging options of the list commands.
After = Annotated[str | None, typer.Option(help="The next page: the cursor the last page printed.")]
AsJson = Annotated[
    bool, typer.Option("--json", metavar=FLAG, help="One JSON document: the API's page.")
]


@jobs_app.command("list")
def jobs_list(
    status: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    model: Annotated[str | None, typer.Option(help="Only jobs of this model.")] = None,
    limit: Annotated[int, typer.Option(help="How many (one page, up to 1000).")] = 20,
    after: After = None,
    as_json: AsJson = False,
    api_url: Api = None,
    api_key: Key = None,
) -> None:
    """List jobs, newest first, one page at a time (the next page: --after <cursor>)."""
    filters = {"status": status, "model": model}
    _print_page("/v1/jobs", filters, limit, after, as_json, api_url, api_key)


def _print_page(
    path: str,
    filters: dict[str, Any],
    limit: int,
    after: str | None,
    as_json: bool,
    api_url: str | None,
    api_key: str | None,
) -> None:
    from genspool.client._base import Pager

    pager = Pager.of(path, limit, **filters)
    pager.after = after
    with _client(api_url, api_key) as client:
        page: Mapping[str, Any] = client._run(pager.call())  # one page, with its cursor
    if as_json:
        out.print_json(data=page)
        return
    out.print(_table(pager.advance(page)))
    if page.get("has_more") and page.get("next_cursor"):
        out.print(f"next page: --after {page['next_cursor']}", markup=False, highlight=False)


@jobs_app.command("get")
def jobs_get(job_id: str, api_url: Api = None, api_key: Key = None) -> None:
    """Show one job as JSON: its request, every attempt (history) and its result or error."""
    with _client(api_url, api_key) as client:
        out.print_json(data=client.get(job_id).to_dict())


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, api_url: Api = None, api_key: Key = None) -> None:
    """Cancel a queued or running job."""
    with _client(api_url, api_key) as client:
        out.print(client.cancel(job_id).status.value)


@jobs_app.command("replay")
def jobs_replay(job_id: str, api_url: Api = None, api_key: Key = None) -> None:
    """Queue an ended job again (failed, cancelled or expired), with fresh attempts."""
    with _client(api_url, api_key) as client:
        out.print(client.replay(job_id).status.value)


@dlq_app.command("list")
def dlq_list(
    model: Annotated[str | None, typer.Option(help="Only dead letters of this model.")] = None,
    limit: Annotated[int, typer.Option(help="How many (one page, up to 1000).")] = 20,
    after: After = None,
    as_json: AsJson = False,
    api_url: Api = None,
    api_key: Key = None,
) -> None:
    """List dead letters, newest first, one page at a time (the next page: --after <cursor>)."""
    _print_page("/v1/dlq", {"model": model}, limit, after, as_json, api_url, api_key)


@dlq_app.command("replay")
def dlq_replay(job_id: str, api_url: Api = None, api_key: Key = None) -> None:
    """Queue a dead-lettered job again (a cancelled or expired one too)."""
    with _client(api_url, api_key) as client:
        out.print(client.replay(job_id).status.value)
