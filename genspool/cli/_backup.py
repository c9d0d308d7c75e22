"""``backup`` and ``restore``: one archive of all state, checked, and loaded into any SQL
backend; SQLite → PostgreSQL migration is these two commands (:mod:`genspool.ops.backup`)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer

from genspool.cli._common import Db, _settings, app, out
from genspool.ops.backup import Manifest, backup, restore, verify


def _summary(verb: str, path: Path, found: Manifest) -> None:
    rows = sum(found.counts.values())
    jobs = found.counts.get("jobs", 0)
    out.print(
        f"{verb} {path}: {rows} records in {len(found.counts)} tables ({jobs} jobs), "
        f"{found.blobs} file blobs, schema {found.source} v{found.schema_version}",
        markup=False,
        highlight=False,
    )


@app.command("backup")
def backup_cmd(
    file: Annotated[Path, typer.Argument(help="The archive to write (or, with --verify, check).")],
    verify_only: Annotated[
        bool, typer.Option("--verify", help="Check an archive's checksums and counts only.")
    ] = False,
    db: Db = None,
) -> None:
    """Write every record and file blob to one archive, consistent while the service runs."""
    if verify_only:
        _summary("verified", file, verify(file))
        return
    url = _settings(db, None).database_url
    _summary("wrote", file, asyncio.run(backup(url, file)))


@app.command("restore")
def restore_cmd(
    file: Annotated[Path, typer.Argument(help="An archive written by genspool backup.")],
    force: Annotated[
        bool, typer.Option("--force", help="Replace the records of a non-empty target.")
    ] = False,
    db: Db = None,
) -> None:
    """Load an archive into a SQLite or PostgreSQL database; running jobs come back queued."""
    url = _settings(db, None).database_url
    _summary("restored", file, asyncio.run(restore(file, url, force=force)))
