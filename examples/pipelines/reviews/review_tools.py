"""Transforms of the reviews pipeline: a small model's answers made countable.

A transform is a plain function of the item's context (``item``, ``steps``, ``inputs``, …)
returning JSON. genspool finds this module as ``review_tools.py`` beside the pipeline's YAML,
so no PYTHONPATH is needed. The model is asked for a fixed label and a short list, but a
135M-parameter model (or another model swapped in) may still answer "Positive.", ``{"sentiment":
"negative"}`` or "1. price 2. battery": these functions accept all of them, so the report
counts labels rather than spellings.
"""

from __future__ import annotations

import re
from typing import Any, Final

__all__ = ["label", "sentiment", "theme_list", "themes"]

#: The word a model may use for each label; the first one found in an answer wins.
LABELS: Final = {
    "positive": "positive", "good": "positive", "great": "positive", "happy": "positive",
    "negative": "negative", "bad": "negative", "poor": "negative", "unhappy": "negative",
    "mixed": "mixed", "neutral": "mixed", "ambivalent": "mixed",
}  # fmt: skip
#: What an answer without any of those words is counted as.
UNCLEAR: Final = "unclear"
#: Words that say nothing about a review's topic.
NOT_THEMES: Final = frozenset(
    {"keyword", "keywords", "review", "product", "topic", "topics", "the", "and", "here", "are"}
)
MAX_THEMES: Final = 3


def sentiment(context: dict[str, Any]) -> str:
    """The ``ask_sentiment`` step's answer as positive, negative, mixed or unclear."""
    return label(str(context["steps"]["ask_sentiment"]))


def themes(context: dict[str, Any]) -> list[str]:
    """The ``ask_themes`` step's answer as up to three lowercase keywords."""
    return theme_list(str(context["steps"]["ask_themes"]))


def label(answer: str) -> str:
    for word in re.findall(r"[a-z]+", answer.lower()):
        if word in LABELS:
            return LABELS[word]
    return UNCLEAR


def theme_list(answer: str) -> list[str]:
    out: list[str] = []
    for part in re.split(r",|;|\n|\band\b", answer.lower()):
        theme = " ".join(re.findall(r"[a-z][a-z'-]*", part))  # no numbering, quotes, dots
        if theme and theme not in NOT_THEMES and len(theme.split()) <= 3 and theme not in out:
            out.append(theme)
    return out[:MAX_THEMES]
