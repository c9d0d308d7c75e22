"""The ``genspool`` command: run the server parts, and talk to a running server.

``serve`` / ``api`` / ``worker`` run genspool and stop cleanly on SIGINT/SIGTERM
(:mod:`genspool.cli._shutdown`); ``submit``, ``jobs`` and ``dlq`` are clients of the HTTP API
(``--api``, default ``http://127.0.0.1:8000``, and ``--api-key``: before the command, or after
it where they win); ``keys`` manages API keys straight on the database, so the first one exists
before any server runs. Errors print one line to stderr and exit non-zero.
"""

from __future__ import annotations

import sys

from rich.markup import escape

# Importing the command modules registers their commands, in the order --help lists them.
from genspool.cli import _server  # noqa: F401

# isort: split
from genspool.cli import _client  # noqa: F401

# isort: split
from genspool.cli import _fanout  # noqa: F401

# isort: split
from genspool.cli import _batches  # noqa: F401

# isort: split
from genspool.cli import _pipelines  # noqa: F401

# isort: split
from genspool.cli import _ingest, _stores  # noqa: F401

# isort: split
from genspool.cli import _prompts  # noqa: F401

# isort: split
from genspool.cli import _drift  # noqa: F401

# isort: split
from genspool.cli import _keys  # noqa: F401

# isort: split
from genspool.cli import _backup  # noqa: F401

# isort: split
from genspool.cli._common import app, err
from genspool.exceptions import GenspoolError

__all__ = ["app", "main"]


def main() -> None:
    try:
        app()
    except GenspoolError as exc:
        err.print(f"[red]error:[/] {escape(exc.message)}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C before a server or worker runs: nothing to drain
        sys.exit(130)
