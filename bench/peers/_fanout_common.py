"""The line protocol between ``bench/fanout.py`` and a peer's fan-out client, stdlib only so
that it loads in every peer's venv.

A peer client is a long-lived process (a user's application would be, so imports and
connection set-up stay out of the timings). It reads one JSON command a line on stdin,
``{"strategy": "all" | "first", "tag": "r3-all"}``, makes one fan-out of one chat call per model
in ``--models`` to the fault server (each request's ``user`` is ``{tag}-{model}``, so the fault
server's stats tell the calls apart), and answers one JSON line: the seconds it took as its
user waits, whether it succeeded, and what came back (a short description). ``ready`` is
printed once it is connected.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

#: One fan-out: (strategy, tag) -> what came back, in a few words.
Runner = Callable[[str, str], str]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fault", required=True, help="the fault server's root URL")
    parser.add_argument("--models", required=True, help="comma-separated model names")
    return parser.parse_args(argv)


def chat_body(model: str, user: str) -> dict[str, Any]:
    """The request every system sends for one branch: the same as genspool's children."""
    return {"model": model, "messages": [{"role": "user", "content": user}], "user": user}


def serve_commands(run: Runner) -> None:
    """Answer the harness's commands until stdin closes."""
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        started = time.perf_counter()
        try:
            detail, ok = run(command["strategy"], command["tag"]), True
        except Exception as exc:  # reported to the harness, which counts it as an error
            detail, ok = f"{type(exc).__name__}: {exc}", False
            traceback.print_exc(file=sys.stderr)
        seconds = time.perf_counter() - started
        print(json.dumps({"seconds": seconds, "ok": ok, "detail": detail[:300]}), flush=True)
