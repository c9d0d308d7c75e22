"""Transforms the pipeline tests name by entry point (``tests.helpers.pipeline_fns:shout``)."""

from __future__ import annotations

from typing import Any


def shout(ctx: dict[str, Any]) -> str:
    """The echo step's answer in capitals."""
    return str(ctx["steps"]["echo"]).upper()


async def broken(ctx: dict[str, Any]) -> str:
    """Fails on the item whose text is ``bad``, as a user's transform might."""
    if ctx["item"].get("text") == "bad":
        raise ValueError("cannot shout at this")
    return "ok"
