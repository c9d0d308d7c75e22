"""``files`` and ``batch``: the Files and Batch APIs of a running server, from the shell.

``genspool batch create input.jsonl --endpoint /v1/chat/completions --wait --output out.jsonl``
uploads the file (streamed), creates the batch and follows it with a progress bar on stderr
(lines done of the total, failures, rate, time left) until it ends; the output file's id goes
to stdout, and with ``--output`` its bytes to a file. ``files`` uploads, lists, shows, downloads
and deletes files; ``batch list|get|cancel|output`` the rest. Bytes are never held whole: an
upload is read from disk as it is sent, a download written as it arrives.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from genspool.cli._client import _client
from genspool.cli._common import FLAG, Api, Key, app, err, out
from genspool.exceptions import GenspoolError

if TYPE_CHECKING:
    from genspool.client import Batch, Client, FileObject, Page

files_app = typer.Typer(help="Files: upload, list, get, content, delete.", no_args_is_help=True)
batch_app = typer.Typer(
    help="Batches (the OpenAI Batch API): create, list, get, cancel, output.", no_args_is_help=True
)
app.add_typer(files_app, name="files")
app.add_typer(batch_app, name="batch")

#: Seconds between two readings of a batch while --wait follows it.
POLL_S = 0.5

After = Annotated[str | None, typer.Option(help="The next page: the id the last page printed.")]
AsJson = Annotated[bool, typer.Option("--json", metavar=FLAG, help="As JSON, as the API sends it.")]
Output = Annotated[
    Path | None,
    typer.Option("--output", "-o", help="Write the bytes to this file (default: stdout)."),
]


def _readable(path: Path) -> Path:
    """``path`` if it is a file this process can read; else one line saying why not."""
    if not path.exists():
        raise GenspoolError(f"{path}: no such file")
    if not path.is_file():
        raise GenspoolError(f"{path}: not a file")
    try:
        with path.open("rb"):
            return path
    except OSError as exc:
        raise GenspoolError(f"{path}: cannot read it ({exc.strerror})") from exc


@contextlib.contextmanager
def _destination(output: Path | None) -> Iterator[Path | BinaryIO]:
    """Where downloaded bytes go: the file named (through ``<name>.part``), or stdout."""
    if output is None:
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    if output.is_dir():
        raise GenspoolError(f"--output {output}: is a directory; name a file")
    yield output


def _download(client: Client, file_id: str, output: Path | None) -> int:
    try:
        with _destination(output) as to:
            return client.files.content(file_id, to)
    except OSError as exc:
        where = "stdout" if output is None else f"--output {output}"
        raise GenspoolError(f"{where}: cannot write it ({exc.strerror})") from exc


def _when(ts: int | None) -> str:
    if not ts:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


def _print_page(page: Page[Any], table: Table, as_json: bool) -> None:
    if as_json:
        data = [item.to_dict() for item in page.data]
        out.print_json(data={"data": data, "has_more": page.has_more, "last_id": page.last_id})
        return
    out.print(table)
    if page.has_more and page.last_id:
        out.print(f"next page: --after {page.last_id}", markup=False, highlight=False)


# -- files -------------------------------------------------------------------------------------


@files_app.command("upload")
def files_upload(
    path: Annotated[Path, typer.Argument(help="The file to upload (read as it is sent).")],
    purpose: Annotated[str, typer.Option(help="batch, user_data, ...")] = "batch",
    expires_after: Annotated[
        int | None, typer.Option(help="Seconds the file lives (3600 to 2592000).")
    ] = None,
    as_json: AsJson = False,
    api_url: Api = None,
    api_key: Key = None,
) -> None:
    """Upload a file and print its id."""
    source = _readable(path)
    with _client(api_url, api_key) as client:
        made = client.files.create(source, purpose=purpose, expires_after_s=expires_after)
    if as_json:
        out.print_json(data=made.to_dict())
    else:
        out.print(made.id, markup=False, highlight=False)


def _files_table(files: list[FileObject]) -> Table:
    table = Table("id", "purpose", "bytes", "filename", "created")
    for f in files:
        table.add_row(f.id, f.purpose, str(f.bytes), f.filename, _when(f.created_at))
    return table


@files_app.command("list")
def files_list(
    purpose: Annotated[str | None, typer.Option(help="Only files of this purpose.")] = None,
    limit: Annotated[int, typer.Option(help="How many (one page).")] = 20,
    order: Annotated[str, typer.Option(help="desc (newest first) or asc.")] = "desc",
    after: After = None,
    as_json: AsJson = False,
    api_url: Api = None,
    api_key: Key = None,
) -> None:
    """List files, one page at a time (the next page: --after <id>)."""
    with _client(api_url, api_key) as client:
        page = client.files.page(purpose=purpose, limit=limit, order=order, after=after)
    _print_page(page, _files_table(page.data), as_json)


@files_app.command("get")
def files_get(file_id: str, api_url: Api = None, api_key: Key = None) -> None:
    """Show one file's record as JSON (size, purpose, SHA-256, expiry)."""
    with _client(api_url, api_key) as client:
        out.print_json(data=client.files.retrieve(file_id).to_dict())


@files_app.command("content")
def files_content(
    file_id: str, output: Output = None, api_url: Api = None, api_key: Key = None
) -> None:
    """Download a file's bytes, to stdout or --output."""
    with _client(api_url, api_key) as client:
        _download(client, file_id, output)


@files_app.command("delete")
def files_delete(file_id: str, api_url: Api = None, api_key: Key = None) -> None:
    """Delete a file: its record and its bytes."""
    with _client(api_url, api_key) as client:
        client.files.delete(file_id)
    out.print(f"deleted {file_id}", markup=False, highlight=False)


# -- batches -----------------------------------------------------------------------------------


def _metadata(pairs: list[str] | None) -> dict[str, str] | None:
    if not pairs:
        return None
    bad = next((p for p in pairs if "=" not in p), None)
    if bad is not None:
        raise GenspoolError(f"--metadata {bad}: give KEY=VALUE")
    return dict(p.split("=", 1) for p in pairs)


@batch_app.command("create")
def batch_create(
    file: Annotated[Path, typer.Argument(help="A JSONL file in OpenAI's batch format.")],
    endpoint: Annotated[str, typer.Option(help="Where every line goes.")] = "/v1/chat/completions",
    window: Annotated[
        str, typer.Option(help="completion_window: 24h, or 1s to 30d (60s, 1h, 7d).")
    ] = "24h",
    metadata: Annotated[
        list[str] | None, typer.Option(help="KEY=VALUE kept on the batch (repeat).")
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", metavar=FLAG, help="Follow it to the end, then print the output file id."
        ),
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="With --wait: download the output here.")
    ] = None,
    api_url: Api = None,
    api_key: Key = None,
) -> None:
    """Upload FILE and create a batch over it; print the batch id (with --wait: follow it)."""
    if output is not None and not wait:
        raise GenspoolError("--output needs --wait (or use: genspool batch output BATCH_ID)")
    source, meta = _readable(file), _metadata(metadata)
    with _client(api_url, api_key) as client:
        uploaded = client.files.create(source, purpose="batch")
        batch = _create(client, uploaded.id, endpoint, window, meta)
        if not wait:
            out.print(batch.id, markup=False, highlight=False)
            return
        err.print(f"{batch.id}: {batch.status}", markup=False, highlight=False)
        try:
            done = _follow(client, batch)
        except KeyboardInterrupt:  # only the watching stops: say so, and how to go on
            err.print(
                f"{batch.id} goes on; genspool batch get {batch.id} (or cancel) to see to it",
                markup=False,
                highlight=False,
            )
            raise
        _report(client, done, output)


def _create(
    client: Client, file_id: str, endpoint: str, window: str, meta: dict[str, str] | None
) -> Batch:
    """The batch; if the server refuses it, the file uploaded for it is deleted again."""
    try:
        return client.batches.create(
            file_id, endpoint=endpoint, completion_window=window, metadata=meta
        )
    except GenspoolError:
        with contextlib.suppress(GenspoolError):
            client.files.delete(file_id)
        raise


class _Rate(ProgressColumn):
    """Lines per second, from rich's moving estimate."""

    def render(self, task: Task) -> Text:
        speed = task.speed
        return Text("- lines/s" if speed is None else f"{speed:.1f} lines/s", style="cyan")


def _follow(client: Client, batch: Batch) -> Batch:
    """Poll the batch until it ends, with a progress bar on stderr."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        _Rate(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=err) as bar:
        task = bar.add_task(batch.status, total=None, failed=0)

        def show(b: Batch) -> None:
            counts = b.request_counts
            total = counts.total or None
            bar.update(
                task, description=b.status, total=total, completed=counts.done, failed=counts.failed
            )

        return client.batches.wait(batch.id, poll_s=POLL_S, on_update=show)


def _report(client: Client, batch: Batch, output: Path | None) -> None:
    """Print the output file's id (and download it); a batch that did not complete exits
    non-zero, saying why."""
    if batch.status == "failed":
        raise GenspoolError(f"batch {batch.id} failed: {_errors(batch)}")
    if batch.output_file_id is not None:
        out.print(batch.output_file_id, markup=False, highlight=False)
        if output is not None:
            _download(client, batch.output_file_id, output)
    counts = batch.request_counts
    if batch.error_file_id is not None:
        err.print(
            f"{counts.failed} of {counts.total} lines failed: error file {batch.error_file_id}"
            f" (genspool batch output {batch.id} --errors)",
            markup=False,
            highlight=False,
        )
    if batch.status != "completed":
        raise GenspoolError(
            f"batch {batch.id} {batch.status}: {counts.completed} of {counts.total} lines done"
        )


def _errors(batch: Batch) -> str:
    """The first errors of a malformed input, each with its line."""
    shown = [
        f"line {e.get('line')}: {e.get('message') or e.get('code')}"
        if e.get("line")
        else str(e.get("message") or e.get("code"))
        for e in batch.errors[:3]
    ]
    more = len(batch.errors) - len(shown)
    return "; ".join(shown) + (f" (and {more} more)" if more > 0 else "") or "no reason given"


def _batches_table(batches: list[Batch]) -> Table:
    table = Table("id", "status", "endpoint", "done", "failed", "created", "output file")
    for b in batches:
        c = b.request_counts
        row = (b.id, b.status, b.endpoint, f"{c.done}/{c.total}", str(c.failed))
        table.add_row(*row, _when(b.created_at), b.output_file_id or "")
    return table


@batch_app.command("list")
def batch_list(
    limit: Annotated[int, typer.Option(help="How many (one page, up to 100).")] = 20,
    after: After = None,
    as_json: AsJson = False,
    api_url: Api = None,
    api_key: Key = None,
) -> None:
    """List batches, newest first, one page at a time (the next page: --after <id>)."""
    with _client(api_url, api_key) as client:
        page = client.batches.page(limit=limit, after=after)
    _print_page(page, _batches_table(page.data), as_json)


@batch_app.command("get")
def batch_get(batch_id: str, api_url: Api = None, api_key: Key = None) -> None:
    """Show one batch as JSON: status, request_counts, usage, files, errors."""
    with _client(api_url, api_key) as client:
        out.print_json(data=client.batches.retrieve(batch_id).to_dict())


@batch_app.command("cancel")
def batch_cancel(batch_id: str, api_url: Api = None, api_key: Key = None) -> None:
    """Cancel a batch: finished lines are kept, the rest end as batch_cancelled."""
    with _client(api_url, api_key) as client:
        out.print(client.batches.cancel(batch_id).status, markup=False, highlight=False)


@batch_app.command("output")
def batch_output(
    batch_id: str,
    errors: Annotated[
        bool, typer.Option("--errors", metavar=FLAG, help="The error file instead.")
    ] = False,
    output: Output = None,
    api_url: Api = None,
    api_key: Key = None,
) -> None:
    """Download a batch's output file (or, with --errors, its error file)."""
    with _client(api_url, api_key) as client:
        batch = client.batches.retrieve(batch_id)
        file_id = batch.error_file_id if errors else batch.output_file_id
        if file_id is None:
            kind = "error" if errors else "output"
            raise GenspoolError(f"batch {batch_id} has no {kind} file ({batch.status})")
        _download(client, file_id, output)
