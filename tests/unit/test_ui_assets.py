"""The web UI's files (genspool/api/ui): the vendored htmx is the pinned release, byte for
byte; everything the UI serves is package data, so ``pip install .`` ships it; and no template
or static file holds inline script, inline style or an inline event handler (the
Content-Security-Policy would block them) or anything shaped like an API key."""

from __future__ import annotations

import fnmatch
import hashlib
import re
import tomllib
from pathlib import Path

import genspool.api.ui as ui

ROOT = Path(__file__).resolve().parents[2]
UI = Path(ui.__file__).parent
#: htmx.org 2.0.11 from the npm registry (``npm pack htmx.org@2.0.11``): package/dist/htmx.min.js
#: of the tarball whose integrity is sha512-Thx/WtpeOQqSrqBCw/A1cwGJGg4UrVa3+sW0GmrM3p4gJgO89ec
#: H4qtbnyzDDWFvBTqjnIMCgELTNt636dtamA==
HTMX = "htmx-2.0.11.min.js"
HTMX_SHA256 = "d6fdc75f204e6bdefa99b69bf1e6d4ac69b8a364f77929f45c13476b4000f717"


def test_the_vendored_htmx_is_the_pinned_release() -> None:
    data = (UI / "static" / HTMX).read_bytes()
    assert hashlib.sha256(data).hexdigest() == HTMX_SHA256
    assert (UI / "static" / "htmx-LICENSE.txt").read_text().startswith("Zero-Clause BSD")


def test_the_pages_load_the_pinned_htmx_and_nothing_from_another_host() -> None:
    base = (UI / "templates" / "base.html").read_text()
    scripts = re.findall(r'<script[^>]*src="([^"]+)"', base)
    assert scripts == ["{{ ui }}/static/" + HTMX, "{{ ui }}/static/genspool-ui.js"]
    for path in (UI / "templates").iterdir():
        text = path.read_text()
        assert not re.search(r"""(?:src|href|action|hx-\w+)=["'](?:https?:)?//""", text), path


def test_every_file_the_ui_serves_is_package_data() -> None:
    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"
    ]["genspool"]
    package = UI.parents[1]  # genspool/
    for folder in ("templates", "static"):
        files = [p for p in (UI / folder).iterdir() if p.is_file()]
        assert files, folder
        for path in files:
            relative = path.relative_to(package).as_posix()
            assert any(fnmatch.fnmatch(relative, g) for g in globs), relative


def test_no_inline_script_style_or_handler_and_no_key_in_the_ui_files() -> None:
    for path in [*(UI / "templates").iterdir(), *(UI / "static").iterdir()]:
        text = path.read_text(errors="replace")
        assert "gsk_" not in text, path
        if path.suffix != ".html":
            continue
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), f"inline script in {path.name}"
        assert "<style" not in text and not re.search(r"\sstyle=", text), path.name
        assert not re.search(r"\son[a-z]+=", text), f"inline handler in {path.name}"
        assert "hx-on" not in text and "javascript:" not in text, path.name
