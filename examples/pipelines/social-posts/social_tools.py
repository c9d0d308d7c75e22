"""The transform of the social-posts pipeline: a model's draft made into a post that fits.

``max_tokens`` bounds a draft in tokens, not characters, and a small model may wrap its post
in quotes, open with "Sure! Here's a post:", refuse, or answer with a row of emoji.
:func:`tidy` strips all that, cuts the text at a word so that it and the link fit in 280
characters, and gives "" when nothing usable is left, for the pipeline's filter to drop.
genspool finds this module as ``social_tools.py`` beside the pipeline's YAML.
"""

from __future__ import annotations

import re
from typing import Any, Final

__all__ = ["fit", "post_text", "tidy"]

LIMIT: Final = 280
#: A first line that introduces the post rather than being part of it.
_PREAMBLE: Final = re.compile(r"^(sure|here|okay|ok|certainly)\b[^\n]*?:\s*", re.IGNORECASE)
_REFUSAL: Final = re.compile(r"^(i'm sorry|i am sorry|i cannot|i can't|as an ai)", re.IGNORECASE)


def tidy(context: dict[str, Any]) -> str:
    """The ``draft`` step's answer as a post of at most 280 characters, link included; ""
    when the draft is empty, a refusal or has no word in it."""
    text = post_text(str(context["steps"]["draft"]))
    link = str(context["item"].get("link") or "").strip()
    return fit(text, link) if text else ""


def post_text(draft: str) -> str:
    text = _PREAMBLE.sub("", draft.strip()).strip().strip("\"'“”").strip()
    if _REFUSAL.match(text) or not re.search(r"\w", text):
        return ""
    return " ".join(text.split())


def fit(text: str, link: str) -> str:
    """``text`` and ``link`` in ``LIMIT`` characters, the text cut at a word if need be."""
    room = LIMIT - (len(link) + 1 if link else 0)
    if len(text) > room:
        cut = text[: room - 1].rsplit(" ", 1)[0] if " " in text[: room - 1] else text[: room - 1]
        text = cut.rstrip(" ,;:-") + "…"
    return f"{text} {link}" if link else text
