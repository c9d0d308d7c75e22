"""Transforms of the weekly-report pipeline: a CSV row's figures as numbers, and the model's
commentary cut to one sentence.

A CSV source gives every field as text; the report sums and sorts revenue, so ``figures``
turns a row into numbers once, per item, and the report template only adds them up.
genspool finds this module as ``sales_tools.py`` beside the pipeline's YAML.
"""

from __future__ import annotations

import re
from typing import Any, Final

__all__ = ["figures", "first_sentence", "sentence", "trend"]

#: A change smaller than this, in percent, is "held steady".
STEADY_PCT: Final = 2.0
#: Longer commentary is cut (a small model may run on past its first sentence).
MAX_CHARS: Final = 200


def figures(context: dict[str, Any]) -> dict[str, Any]:
    """Units, revenue and last week's revenue as numbers; the change in percent (null when
    last week sold nothing: there is no percentage of zero), signed for the report and as a
    verb and a size for the prompt — a small model copies "fell 12.5%" faithfully, but does
    not reliably work out from two amounts whether sales rose or fell."""
    row = context["item"]
    revenue, last = float(row["revenue"] or 0), float(row["revenue_last_week"] or 0)
    pct = None if last == 0 else round(100 * (revenue - last) / last, 1)
    return {
        "units": int(row["units"] or 0),
        "revenue": revenue,
        "last_week": last,
        "change_pct": pct,
        "change": "new" if pct is None else f"{pct:+.1f}%",
        "trend": trend(pct),
    }


def trend(pct: float | None) -> str:
    """The change as words before the amount: "rose 20.0% to", "held steady (+0.7%) at"."""
    if pct is None:
        return "started at"
    if abs(pct) < STEADY_PCT:
        return f"held steady ({pct:+.1f}%) at"
    return f"{'rose' if pct > 0 else 'fell'} {abs(pct):.1f}% to"


def sentence(context: dict[str, Any]) -> str:
    """The ``ask_comment`` step's answer, its first sentence only."""
    return first_sentence(str(context["steps"]["ask_comment"]))


def first_sentence(text: str) -> str:
    flat = " ".join(text.replace('"', "").split())
    match = re.match(r"(.+?[.!?])(\s|$)", flat)
    found = match.group(1) if match else flat
    return found if len(found) <= MAX_CHARS else found[: MAX_CHARS - 1].rstrip() + "…"
