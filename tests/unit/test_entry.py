"""genspool's own plugins are found without scanning the installed packages, and the table that
finds them says what ``pyproject.toml`` declares."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from genspool._entry import BUILTIN, find

ROOT = Path(__file__).parents[2]


def test_the_builtin_table_is_what_pyproject_declares() -> None:
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    assert {group: declared[group] for group in BUILTIN} == BUILTIN


def test_a_builtin_entry_point_loads_and_names_its_extra() -> None:
    ref = find("genspool.backends", "postgres")
    assert ref is not None and ref.extras == ["postgres"]
    memory = find("genspool.backends", "memory")
    assert memory is not None and memory.extras == [] and memory.load().__name__ == "MemoryBackend"
    assert find("genspool.backends", "nope") is None


def test_opening_a_builtin_backend_and_provider_scans_no_installed_package() -> None:
    code = (
        "import importlib.metadata as md\n"
        "groups = []\n"
        "real = md.entry_points\n"
        "md.entry_points = lambda **kw: (groups.append(kw.get('group')), real(**kw))[1]\n"
        "from genspool.backends import open_storage\n"
        "from genspool.providers.plugins import get_plugin\n"
        "open_storage('memory://x'); get_plugin('echo')\n"
        "print([g for g in groups if g and g.startswith('genspool')])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
