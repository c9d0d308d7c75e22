"""What every command shares: the typer apps, the consoles, the options and the settings."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from genspool.backends import shown_url
from genspool.settings import Settings

if TYPE_CHECKING:
    pass


app = typer.Typer(
    help="Buffer, fan out and batch generative-AI work.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
jobs_app = typer.Typer(help="Inspect and cancel jobs.", no_args_is_help=True)
dlq_app = typer.Typer(help="Dead letters: list and replay.", no_args_is_help=True)
keys_app = typer.Typer(
    help="API keys: create, list, revoke (on the database, no server needed).",
    no_args_is_help=True,
)
app.add_typer(jobs_app, name="jobs")
app.add_typer(dlq_app, name="dlq")
app.add_typer(keys_app, name="keys")
T = TypeVar("T")


def _console(stderr: bool) -> Console:
    # Piped output is for programs and logs: never wrap a line or cut a table column there.
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, soft_wrap=True, width=None if stream.isatty() else 10_000)


out = _console(stderr=False)
err = _console(stderr=True)

Host = Annotated[str | None, typer.Option(help="Interface to bind (default 127.0.0.1).")]
Port = Annotated[int | None, typer.Option(help="Port to listen on (default 8000).")]
Db = Annotated[str | None, typer.Option("--db", help="Queue/store URL (GENSPOOL_DATABASE_URL).")]
QueueOpt = Annotated[
    str | None,
    typer.Option("--queue", help="Queue URL, when not the store's (GENSPOOL_QUEUE_URL)."),
]
ConfigOpt = Annotated[Path | None, typer.Option("--config", help="Models YAML (GENSPOOL_CONFIG).")]
DEFAULT_API = "http://127.0.0.1:8000"
# A client command takes --api/--api-key after its name too; there they win over the global
# options (given before the command), which read GENSPOOL_API_URL / GENSPOOL_API_KEY.
Api = Annotated[
    str | None,
    typer.Option(
        "--api",
        show_default=False,
        help=f"genspool API URL (default: the global --api, GENSPOOL_API_URL, or {DEFAULT_API}).",
    ),
]
Key = Annotated[
    str | None,
    typer.Option("--api-key", help="API key (default: the global --api-key, or GENSPOOL_API_KEY)."),
]
#: A flag (no value): shown without the ``<bool>`` newer typer versions print for every option.
FLAG = ""


def _print_version(value: bool) -> None:
    if value:
        from genspool import __version__

        out.print(f"genspool {__version__}", markup=False, highlight=False)
        raise typer.Exit()


@app.callback()
def _global_options(
    api_url: Annotated[
        str,
        typer.Option(
            "--api",
            envvar="GENSPOOL_API_URL",
            help="URL of the genspool API, for submit, jobs and dlq.",
        ),
    ] = DEFAULT_API,
    api_key: Annotated[
        str | None,
        typer.Option(
            "--api-key",
            envvar="GENSPOOL_API_KEY",
            help="API key for submit, jobs and dlq (a key is needed once keys exist).",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option(
            "--version",
            metavar=FLAG,
            callback=_print_version,
            is_eager=True,
            help="Print the version and exit.",
        ),
    ] = False,
) -> None:
    """Buffer, fan out and batch generative-AI work."""
    GLOBAL.update(api_url=api_url, api_key=api_key)


#: The global options of this run (a process runs one command).
GLOBAL: dict[str, str | None] = {"api_url": DEFAULT_API, "api_key": None}


def _where(settings: Settings) -> str:
    store = f"store {shown_url(settings.database_url)}"
    return store if not settings.queue_url else f"queue {shown_url(settings.queue_url)}, {store}"


def _settings(db: str | None, config: Path | None, **more: Any) -> Settings:
    values = {"database_url": db, "config": config, **more}
    return Settings(**{k: v for k, v in values.items() if v is not None})
