"""Loading of the SQL files that sit in ``backends/sql/<dialect>/``.

Migrations are numbered files (``001_init.sql``); queries live in ``queries.sql``, each after a
``-- name: <name>`` line.
"""

from __future__ import annotations

import re
from importlib import resources

__all__ = ["load_queries", "migrations"]

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


def _dir(dialect: str) -> resources.abc.Traversable:
    return resources.files("genspool.backends") / "sql" / dialect


def migrations(dialect: str) -> list[tuple[int, str]]:
    """``(version, sql)`` pairs in order."""
    found = []
    for entry in _dir(dialect).iterdir():
        head = entry.name.split("_", 1)[0]
        if entry.name.endswith(".sql") and head.isdigit():
            found.append((int(head), entry.read_text()))
    return sorted(found)


def load_queries(dialect: str, **fmt: str) -> dict[str, str]:
    text = (_dir(dialect) / "queries.sql").read_text()
    parts = _NAME.split(text)[1:]
    queries = {}
    for name, sql in zip(parts[::2], parts[1::2], strict=True):
        for key, value in fmt.items():  # not str.format: queries hold JSON braces
            sql = sql.replace("{" + key + "}", value)
        queries[name] = sql.strip()
    return queries
