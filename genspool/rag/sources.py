"""Local sources: the files of a directory, read in a stable order.

A file that cannot be read is yielded as a :class:`~genspool.rag.crawl.Failed` with its reason
and the walk goes on, as a crawl does with a failing page: an ingest run lists what it could
not read instead of stopping at it, or losing it silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import NamedTuple

from genspool.rag.crawl import Failed

__all__ = ["LocalFile", "walk_directory"]


class LocalFile(NamedTuple):
    """One file's bytes; unpacks as ``path, data``."""

    path: Path
    data: bytes


async def walk_directory(
    root: str | Path, glob: str = "**/*", *, include_hidden: bool = False
) -> AsyncIterator[LocalFile | Failed]:
    """Every regular file under ``root`` matching ``glob``, sorted by relative path.

    Hidden files and directories (a name starting with ``.``, e.g. ``.git``) are left out
    unless ``include_hidden``. Reading runs in a thread, one file at a time, so a large tree
    never sits in memory at once.
    """
    for path in await asyncio.to_thread(_matching, Path(root), glob, include_hidden):
        try:
            yield LocalFile(path, await asyncio.to_thread(path.read_bytes))
        except OSError as exc:
            yield Failed(str(path), f"could not read the file ({exc.strerror or exc})")


def _matching(base: Path, glob: str, include_hidden: bool) -> list[Path]:
    if not base.is_dir():
        raise NotADirectoryError(f"{base}: not a directory")
    found = []
    for path in base.glob(glob):
        relative = path.relative_to(base)
        if not include_hidden and any(part.startswith(".") for part in relative.parts):
            continue
        if path.is_file():
            found.append(relative)
    return [base / relative for relative in sorted(found, key=lambda p: p.as_posix())]
