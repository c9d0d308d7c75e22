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
Api = Annotated[str, typer.Option("--api", envvar="GENSPOOL_API_URL", help="genspool API URL.")]
Key = Annotated[
    str | None,
    typer.Option("--api-key", envvar="GENSPOOL_API_KEY", help="API key (GENSPOOL_API_KEY)."),
]
DEFAULT_API = "http://127.0.0.1:8000"


def _where(settings: Settings) -> str:
    store = f"store {shown_url(settings.database_url)}"
    return store if not settings.queue_url else f"queue {shown_url(settings.queue_url)}, {store}"


def _settings(db: str | None, config: Path | None, **more: Any) -> Settings:
    values = {"database_url": db, "config": config, **more}
    return Settings(**{k: v for k, v in values.items() if v is not None})
