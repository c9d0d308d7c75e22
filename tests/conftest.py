"""Fixtures shared by the whole suite; the helpers behind them live in :mod:`tests.helpers`.

``spawner`` (per test) and ``module_spawner`` (per module) start real ``genspool`` processes
(:mod:`tests.helpers.processes`); ``namespaced_url`` gives each test a backend namespace of its
own. When a test fails, the tail of the stderr of every process still running is attached to
the report.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.helpers.processes import LIVE, Spawner
from tests.helpers.processes import namespaced_url as _namespaced


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
