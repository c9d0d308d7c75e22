"""Fixtures shared by the whole suite; the helpers behind them live in :mod:`tests.helpers`.

``spawner`` (per test) and ``module_spawner`` (per module) start real ``genspool`` processes
(:mod:`tests.helpers.processes`); ``namespaced_url`` gives each test a backend namespace of its
own. When a test fails, the tail of the stderr of every process still running is attached to
the report.

``private_postgres``, ``private_redis`` and ``private_nats`` are servers of this session's own
(:mod:`tests.helpers.servers`), for the tests that stop, restart, kill or pause a server
(``pgvector_url`` is one more, a PostgreSQL with pgvector, :mod:`tests.helpers.pgvector`): the
shared servers on the default ports are only ever used, in namespaces. The session checks that
it kept to this: it reads who each shared server is when it starts and again when it ends, and
fails if any was restarted.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.pgvector import PgVectorServer
from tests.helpers.processes import LIVE, Spawner
from tests.helpers.processes import namespaced_url as _namespaced
from tests.helpers.servers import (
    MissingBinary,
    NatsServer,
    PostgresServer,
    PrivateServer,
    RedisServer,
    shared_identities,
)

IN_CI = os.environ.get("CI") == "true"
_SHARED_AT_START = pytest.StashKey[dict[str, str]]()
_SHARED_CHANGED = pytest.StashKey[list[str]]()


@pytest.fixture
def namespaced_url(tmp_path: Path) -> Callable[[str], str]:
    """``kind -> URL``: a backend URL whose data no other test sees."""
    return lambda kind: _namespaced(kind, tmp_path)


@pytest.fixture
def spawner(tmp_path: Path) -> Iterator[Spawner]:
    """Start genspool processes for one test."""
    s = Spawner(tmp_path / "genspool")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def module_spawner(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Spawner]:
    """Start genspool processes shared by the tests of one module."""
    s = Spawner(tmp_path_factory.mktemp("genspool"))
    try:
        yield s
    finally:
        s.close()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.failed and report.when in ("setup", "call"):
        for proc in LIVE:
            report.sections.append((f"genspool process {proc.name} (stderr)", proc.report()))


# -- private servers, for the tests that take a server down ----------------------------------


def _private(kind: type[PrivateServer]) -> Iterator[PrivateServer]:
    try:
        server = kind()
    except MissingBinary as exc:
        if IN_CI:
            pytest.fail(f"a private {kind.name} server is needed: {exc}")
        pytest.skip(f"no private {kind.name} server: {exc}")
    try:
        server.prepare()
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def _private_postgres() -> Iterator[PrivateServer]:
    yield from _private(PostgresServer)


@pytest.fixture(scope="session")
def _private_redis() -> Iterator[PrivateServer]:
    yield from _private(RedisServer)


@pytest.fixture(scope="session")
def _private_nats() -> Iterator[PrivateServer]:
    yield from _private(NatsServer)


@pytest.fixture(scope="session")
def pgvector_url() -> Iterator[str]:
    """``postgresql://…`` of a PostgreSQL with pgvector ≥ 0.8 of this session's own
    (:mod:`tests.helpers.pgvector`), started at its first use and stopped at the session's end.
    Tests share it: each keeps to tables or databases of its own."""
    for server in _private(PgVectorServer):
        yield server.url


@pytest.fixture
def private_postgres(_private_postgres: PrivateServer) -> Iterator[PrivateServer]:
    """A PostgreSQL of this session's own (user ``postgres``, database ``postgres``), which the
    test may stop, restart, kill or pause; the next test gets it running again."""
    yield _private_postgres
    _private_postgres.ensure_running()


@pytest.fixture
def private_redis(_private_redis: PrivateServer) -> Iterator[PrivateServer]:
    """A Redis of this session's own, which the test may take down (handed on running)."""
    yield _private_redis
    _private_redis.ensure_running()


@pytest.fixture
def private_nats(_private_nats: PrivateServer) -> Iterator[PrivateServer]:
    """A NATS with JetStream of this session's own, which the test may take down (handed on
    running)."""
    yield _private_nats
    _private_nats.ensure_running()


# -- the guard: the shared servers are never restarted ---------------------------------------


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config.stash[_SHARED_AT_START] = shared_identities()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Fail the run if a shared server that was up at the start is not the same process at the
    end: something in the suite restarted, stopped or paused a server it does not own."""
    before = session.config.stash.get(_SHARED_AT_START, {})
    after = shared_identities()
    changed = [
        f"{kind}: {was}  ->  {after[kind]}"
        for kind, was in before.items()
        if not was.startswith(("unreachable", "unknown")) and after[kind] != was
    ]
    session.config.stash[_SHARED_CHANGED] = changed
    if changed:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    changed = terminalreporter.config.stash.get(_SHARED_CHANGED, [])
    if changed:
        terminalreporter.write_sep("!", "A SHARED SERVER WAS RESTARTED OR STOPPED", red=True)
        for line in changed:
            terminalreporter.write_line(f"  {line}", red=True, bold=True)
