"""Property-based tests of the whole HTTP API from its own ``/openapi.json`` (schemathesis):
whatever a client sends to whatever route, the answer is never a 5xx.

A real ``genspool serve`` on SQLite with an echo model (named as such: it computes nothing).
Run twice: with an admin key, so that every route is reached past authentication (key
creation and revocation included), and with no key at all.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers.processes import Spawner

SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))
MODELS = [
    {"name": "echo", "provider": "echo"},
    {"name": "tiny", "provider": "echo", "context_window": 16},
]


@pytest.mark.parametrize("authenticated", [True, False], ids=["admin-key", "no-key"])
def test_no_input_gives_a_server_error(spawner: Spawner, authenticated: bool) -> None:
    db = spawner.root / "fuzz.db"
    created = spawner.run(
        "keys", "create", "--tenant", "ops", "--scopes", "admin", "--db", spawner.sqlite_url(db)
    )
    assert created.returncode == 0, created.stderr
    key = created.stdout.strip().splitlines()[-1]
    server = spawner.server(MODELS, db=db)
    auth = ["-H", f"Authorization: Bearer {key}"] if authenticated else []
    done = subprocess.run(
        [SCHEMATHESIS, "run", f"{server.url}/openapi.json", "--checks", "not_a_server_error",
         "--max-examples", "30", "--seed", "1", "--no-color", *auth],
        capture_output=True, text=True, timeout=600, check=False, cwd=spawner.root,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    counts = re.search(r"(\d+) generated, (\d+) passed", done.stdout)
    assert counts and counts[1] == counts[2] and int(counts[1]) > 100, done.stdout[-3000:]
