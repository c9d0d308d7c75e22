"""``pipeline``: the configured pipelines of a running server and their runs, from the shell.

``genspool pipeline run reviews -i since=2026-01-01 --wait --output out/`` starts a run and
follows it with a progress bar on stderr (items done of the total once the source is read
through, failures, rate, time left), then downloads the run's output files into ``out/`` and
prints their paths. A run that failed, was cancelled or had failed items exits non-zero, saying
why (and where the failed items' error file went). ``list``, ``runs``, ``get``, ``cancel``,
``items`` and ``ticks`` read the rest.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn
from rich.table import Table
from rich.text import Text

from genspool.cli._batches import _download, _when
from genspool.cli._client import _client
from genspool.cli._common import FLAG, Api, Key, app, err, out
from genspool.cli._fanout import _json_arg
from genspool.exceptions import GenspoolError

if TYPE_CHECKING:
    from genspool.client import Client, Pipeline, PipelineRun

pipeline_app = typer.Typer(
    help="Pipelines: list them, run one, and read its runs, items and ticks.",
    no_args_is_help=True,
)
app.add_typer(pipeline_app, name="pipeline")

Name = Annotated[str, typer.Argument(help="The pipeline's name (genspool pipeline list).")]
RunId = Annotated[str, typer.Argument(help="The run's id (genspool pipeline runs NAME).")]
AsJson = Annotated[bool, typer.Option("--json", metavar=FLAG, help="As JSON, as the API sends it.")]


def _say(text: str) -> None:
    err.print(text, markup=False, highlight=False)


# -- list --------------------------------------------------------------------------------------


def _triggers(on: Any) -> str:
    """``http``, ``cron 0 9 * * MON (Europe/Paris)``, ``files ./inbox/*.jsonl``, ``events``."""
    shown = ["http"] if on.get("http", True) else []
    for s in on.get("schedule") or ():
        zone = s.get("timezone", "UTC")
        shown.append(f"cron {s.get('cron')}" + ("" if zone == "UTC" else f" ({zone})"))
    if files := on.get("files"):
        shown.append(f"files {files.get('path')}/{files.get('glob', '*')}")
    if on.get("events"):
        shown.append("events")
    return "\n".join(shown) or "-"


def _inputs(p: Pipeline) -> str:
    def one(name: str, spec: Any) -> str:
        if spec.get("required"):
            return f"{name} (required)"
        return name if spec.get("default") is None else f"{name}={json.dumps(spec['default'])}"

    return "\n".join(one(k, v) for k, v in p.inputs.items()) or "-"


def _pipelines_table(found: list[Pipeline]) -> Table:
    table = Table("name", "triggers", "inputs", "steps", "sinks")
    for p in found:
        steps = " → ".join(f"{s.get('id')} ({s.get('kind')})" for s in p.steps)
        row = (p.name, _triggers(p.on), _inputs(p), steps, ", ".join(p.sinks) or "-")
        table.add_row(*(Text(cell) for cell in row))
    return table


@pipeline_app.command("list")
def pipeline_list(as_json: AsJson = False, api_url: Api = None, api_key: Key = None) -> None:
    """The configured pipelines: what starts them, their inputs, steps and sinks."""
    with _client(api_url, api_key) as client:
        found = client.pipelines()
    if as_json:
        out.print_json(data={"data": [p.to_dict() for p in found]})
    else:
        out.print(_pipelines_table(found))


# -- run ---------------------------------------------------------------------------------------


def _run_inputs(pairs: list[str] | None, given: str | None) -> dict[str, Any]:
    """``--input-json`` (an object), then each ``-i KEY=VALUE`` over it; a VALUE that parses
    as JSON is that value (``-i n=5`` is the number 5), else the string as written."""
    inputs: dict[str, Any] = {}
    if given is not None:
        found = _json_arg(given, "--input-json")
        if not isinstance(found, dict):
            raise GenspoolError('--input-json must be a JSON object ({"name": value, …})')
        inputs.update(found)
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise GenspoolError(f"-i {pair}: give KEY=VALUE")
        inputs[key.strip()] = _value(value)
    return inputs


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _output_dir(output: Path | None, wait: bool) -> Path | None:
    if output is None:
        return Path.cwd() if wait else None
    if not wait:
        raise GenspoolError("--output needs --wait (the files exist once the run has ended)")
    if output.exists() and not output.is_dir():
        raise GenspoolError(f"--output {output}: not a directory")
    return output


@pipeline_app.command("run")
def pipeline_run(
    name: Name,
    inputs: Annotated[
        list[str] | None,
        typer.Option(
            "--input", "-i", metavar="KEY=VALUE", help="VALUE as JSON if it parses (repeat)."
        ),
    ] = None,
    input_json: Annotated[
        str | None, typer.Option(help="The inputs as a JSON object (or @file, or - for stdin).")
    ] = None,
    force: Annotated[
        bool,
        typer.Option("--force", metavar=FLAG, help="Run even the items an earlier run finished."),
    ] = False,
    idempotency_key: Annotated[
        str | None, typer.Option(help="Same key, same run (a retried command starts none).")
    ] = None,
    wait: Annotated[
        bool,
        typer.Option(
            "--wait", metavar=FLAG, help="Follow it to the end, then download its output files."
        ),
    ] = False,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", help="With --wait: the directory for the files (default: .)."
        ),
    ] = None,
    api_url: Api = None,
    api_key: Key = None,
) -> None:
    """Start a run of NAME and print its id (with --wait: follow it, download its files)."""
    given, target = _run_inputs(inputs, input_json), _output_dir(output, wait)
    with _client(api_url, api_key) as client:
        run = client.start_run(name, inputs=given, idempotency_key=idempotency_key, force=force)
        if target is None:
            out.print(run.id, markup=False, highlight=False)
            return
        _say(f"{run.id}: {run.status}")
        try:
            done = _follow(client, run)
        except KeyboardInterrupt:  # only the watching stops: say so, and how to go on
            _say(
                f"{run.id} goes on; genspool pipeline get {name} {run.id} (or cancel) to see to it"
            )
            raise
        _report(client, done, target)


class _Rate(ProgressColumn):
    """Items per second, as the server measures them."""

    def render(self, task: Task) -> Text:
        return Text(f"{task.fields['rate']:.1f} items/s", style="cyan")


class _Left(ProgressColumn):
    """Time left at the server's rate, once the total is known."""

    def render(self, task: Task) -> Text:
        rate, total = task.fields["rate"], task.total
        if total is None or rate <= 0 or task.finished:
            return Text("-:--:--", style="progress.remaining")
        left = int((total - task.completed) / rate)
        return Text(
            f"{left // 3600}:{left // 60 % 60:02d}:{left % 60:02d}", style="progress.remaining"
        )


def _follow(client: Client, run: PipelineRun) -> PipelineRun:
    """Follow the run's events until it ends, with a progress bar on stderr."""
    columns = (
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed, {task.fields[skipped]} skipped"),
        _Rate(),
        _Left(),
    )
    with Progress(*columns, console=err) as bar:
        task = bar.add_task(run.status, total=None, failed=0, skipped=0, rate=0.0)

        def show(r: PipelineRun) -> None:
            c = r.counts
            total = c.total or None
            bar.update(
                task, description=r.status, total=total, completed=c.done,
                failed=c.failed, skipped=c.skipped, rate=r.rate,
            )  # fmt: skip

        return client.wait_run(run.pipeline, run.id, on_update=show)


def _report(client: Client, run: PipelineRun, target: Path) -> None:
    """Download the output files (paths to stdout) and the error file; a run that did not
    complete, or had failed items, exits non-zero saying why."""
    if run.status == "failed":
        raise GenspoolError(f"run {run.id} failed: {_reason(run.error)}")
    for file_id in run.output_file_ids:
        out.print(str(_save(client, file_id, target)), markup=False, highlight=False)
    c = run.counts
    if run.status != "completed":
        raise GenspoolError(
            f"run {run.id} {run.status}: {c.done} of {c.total or c.read} items done"
        )
    if c.failed:
        where = (
            "no error file"
            if run.error_file_id is None
            else str(_save(client, run.error_file_id, target))
        )
        raise GenspoolError(f"run {run.id}: {c.failed} of {c.total} items failed; errors: {where}")


def _save(client: Client, file_id: str, target: Path) -> Path:
    """The file downloaded into ``target`` under its own name (never a path: ``/`` dropped)."""
    name = Path(client.files.retrieve(file_id).filename).name or file_id
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise GenspoolError(f"--output {target}: cannot create it ({exc.strerror})") from exc
    _download(client, file_id, target / name)
    return target / name


def _reason(error: Any) -> str:
    if not error:
        return "no reason given"
    code, message = error.get("code"), error.get("message")
    return f"{message} ({code})" if code and message else str(message or code)


# -- runs, get, cancel, items, ticks -----------------------------------------------------------


def _runs_table(runs: list[PipelineRun]) -> Table:
    table = Table("id", "status", "trigger", "done", "failed", "skipped", "created", "files")
    for r in runs:
        c = r.counts
        done = f"{c.done}/{c.total}" if c.total else f"{c.done}/{c.read}+"
        row = (r.id, r.status, r.trigger, done, str(c.failed), str(c.skipped))
        table.add_row(*row, _when(r.created_at), str(len(r.output_file_ids)))
    return table


@pipeline_app.command("runs")
def pipeline_runs(
    name: Name,
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    as_json: AsJson = False,
    api_url: Api = None,
    api_key: Key = None,
) -> None:
    """NAME's runs, newest first."""
    if limit < 1:
        raise GenspoolError(f"--limit {limit}: must be 1 or more")
    with _client(api_url, api_key) as client:
        runs = list(itertools.islice(client.runs(name, limit=min(limit, 100)), limit))
    if as_json:
        out.print_json(data={"data": [r.to_dict() for r in runs]})
    else:
        out.print(_runs_table(runs))


def _summary(run: PipelineRun) -> list[str]:
    c = run.counts
    lines = [
        f"run       {run.id} ({run.pipeline}, by {run.trigger})",
        f"status    {run.status}",
        f"items     {c.done} of {c.total or f'{c.read}+'} done: {c.succeeded} succeeded,"
        f" {c.failed} failed, {c.skipped} skipped, {c.pending} pending",
        f"rate      {run.rate:.1f} items/s",
        f"created   {_when(run.created_at)}",
        f"ended     {_when(run.ended_at)}",
        f"inputs    {json.dumps(run.inputs)}",
        f"outputs   {', '.join(run.output_file_ids) or '-'}",
        f"errors    {run.error_file_id or '-'}",
    ]
    return lines + ([f"error     {_reason(run.error)}"] if run.error else [])


@pipeline_app.command("get")
def pipeline_get(
    name: Name, run_id: RunId, as_json: AsJson = False, api_url: Api = None, api_key: Key = None
) -> None:
    """One run: status, counts, rate, inputs and files (--json: as the API sends it)."""
    with _client(api_url, api_key) as client:
        run = client.run(name, run_id)
    if as_json:
        out.print_json(data=run.to_dict())
    else:
        out.print("\n".join(_summary(run)), markup=False, highlight=False)


@pipeline_app.command("cancel")
def pipeline_cancel(name: Name, run_id: RunId, api_url: Api = None, api_key: Key = None) -> None:
    """Cancel a run: the items finished so far are kept in its sinks."""
    with _client(api_url, api_key) as client:
        out.print(client.cancel_run(name, run_id).status, markup=False, highlight=False)


@pipeline_app.command("items")
def pipeline_items(
    name: Name,
    run_id: RunId,
    status: Annotated[
        str | None, typer.Option(help="Only items in this state: pending, done, failed, skipped.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", metavar=FLAG, help="One JSON line per item.")
    ] = False,
    api_url: Api = None,
    api_key: Key = None,
) -> None:
    """A run's items in source order: key, status, and a failed one's error."""
    with _client(api_url, api_key) as client:
        items = client.run_items(name, run_id, status=status, limit=1000)
        if as_json:
            for item in items:
                out.print(json.dumps(item.to_dict()), markup=False, highlight=False)
            return
        table = Table("seq", "key", "status", "error")
        for item in items:
            error = item.error or {}
            where = f"{error.get('step')}: " if error.get("step") else ""
            detail = Text(f"{where}{error.get('message', '')}"[:100]) if error else Text("")
            table.add_row(str(item.seq), Text(item.key), item.status, detail)
    out.print(table)


@pipeline_app.command("ticks")
def pipeline_ticks(
    name: Name,
    limit: Annotated[int, typer.Option(help="How many, newest first (up to 1000).")] = 20,
    as_json: AsJson = False,
    api_url: Api = None,
    api_key: Key = None,
) -> None:
    """NAME's schedule ticks, newest first: fired (with the run), skipped or missed."""
    with _client(api_url, api_key) as client:
        ticks = client.ticks(name, limit=limit)
    if as_json:
        data = [dataclasses.asdict(t) for t in ticks]
        out.print_json(data={"data": data})
        return
    table = Table("at (UTC)", "outcome", "run")
    for t in ticks:
        table.add_row(_when(int(t.at)), t.outcome, t.run_id or "")
    out.print(table)
