"""``genspool drift report --model M``: a running server's drift report of one model, as a table
(and, with ``--html FILE``, a self-contained page with its charts). A window is ``START/END``,
each end epoch seconds, an ISO 8601 time, ``now`` or a time before now (``-7d/-1d``)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from genspool.cli._client import _client
from genspool.cli._common import Api, Key, app, out
from genspool.exceptions import GenspoolError

__all__ = ["drift_app"]

drift_app = typer.Typer(help="Drift of models' answers: reports.", no_args_is_help=True)
app.add_typer(drift_app, name="drift")

WindowOpt = Annotated[
    str | None, typer.Option(help="START/END, e.g. -8d/-1d or 2025-06-01/2025-06-08.")
]


def _ends(text: str | None, name: str) -> dict[str, str]:
    if text is None:
        return {}
    start, sep, end = text.partition("/")
    if not sep or not start or not end:
        raise GenspoolError(f"--{name} must be START/END (e.g. -8d/-1d), not {text!r}")
    return {f"{name}_start": start, f"{name}_end": end}


def _table(report: dict[str, Any]) -> Table:
    b, c = report["baseline"], report["current"]
    title = (f"drift of {report['model']}: {report['verdict']} (baseline {b['samples']},"
             f" current {c['samples']} samples)")  # fmt: skip
    table = Table("method", "value", "threshold", "verdict", title=title)
    for m in report["methods"]:
        verdict = "[red]DRIFT[/]" if m["flagged"] else "[green]ok[/]"
        table.add_row(m["name"], f"{m['value']:.4g}", f"{m['threshold']:.4g}", verdict)
    return table


@drift_app.command("report")
def drift_report(
    model: Annotated[str, typer.Option(help="The model whose samples to compare.")],
    baseline: WindowOpt = None,
    current: WindowOpt = None,
    html: Annotated[
        Path | None, typer.Option(help="Also write the report as an HTML page.")
    ] = None,
    api_url: Api = None,
    api_key: Key = None,
) -> None:
    """Compare a model's current window of sampled answers with its baseline window."""
    from genspool.client._base import Call

    params = {"model": model, **_ends(baseline, "baseline"), **_ends(current, "current")}
    with _client(api_url, api_key) as client:
        report: dict[str, Any] = client._run(Call("GET", "/v1/drift", dict, params=params))
    out.print(_table(report))
    if html is not None:
        from genspool.drift.html import report_html

        html.write_text(report_html(report), encoding="utf-8")
        out.print(f"wrote {html}")
