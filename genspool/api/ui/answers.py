"""What the playground shows of a job: an answer's text, and a fan-out's columns.

Shared by the playground's own pages (:mod:`~genspool.api.ui.playground`) and the live stream
(:mod:`~genspool.api.ui.live`), which redraws a column as its branch lands.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from genspool.core.job import Job
from genspool.fanout.aggregate import text_of

__all__ = ["Column", "answer_text", "columns", "landed_of"]


def answer_text(job: Job) -> str:
    """The answer of an ended job (a chat message's content, a completion's text); "" before."""
    body = job.result.get("body") if isinstance(job.result, dict) else None
    return (text_of(body) or "") if isinstance(body, dict) else ""


@dataclass(frozen=True, slots=True)
class Column:
    """One branch of a fan-out as its column shows it."""

    index: int
    name: str
    model: str
    status: str = "waiting"
    text: str = ""
    error: str = ""

    @property
    def landed(self) -> bool:
        return self.status != "waiting"


def _model(branch: Mapping[str, Any]) -> str:
    body = branch.get("body")
    return str(body.get("model", "")) if isinstance(body, Mapping) else ""


def column(index: int, branch: Mapping[str, Any], outcome: Mapping[str, Any] | None) -> Column:
    """The column of the plan's ``branch`` (its ``index``), filled when its ``outcome`` (a
    branch record: ``name``, ``status``, ``result`` or ``error``) is known."""
    name, model = str(branch.get("name", index)), _model(branch)
    if outcome is None:
        return Column(index, name, model)
    result = outcome.get("result")
    error = outcome.get("error")
    message = str(error.get("message", "")) if isinstance(error, Mapping) else ""
    text = (text_of(result) or "") if isinstance(result, dict) else ""
    return Column(index, name, model, str(outcome.get("status", "")), text, message)


def landed_of(job: Job) -> dict[str, dict[str, Any]]:
    """The branch records a fan-out's stored result (or error) lists, by branch name."""
    body = job.result.get("body") if isinstance(job.result, dict) else None
    listed: Any = body.get("branches") if isinstance(body, dict) else None
    if listed is None and isinstance(job.error, dict):  # a failed fan-out keeps them there
        listed = job.error.get("branches")
    if not isinstance(listed, list):
        return {}
    return {str(b["name"]): b for b in listed if isinstance(b, dict) and "name" in b}


def columns(job: Job, landed: Mapping[str, Mapping[str, Any]]) -> list[Column]:
    """A fan-out's columns in the order of its plan, each filled from ``landed``."""
    planned = job.body.get("branches") if isinstance(job.body, dict) else None
    branches = [b for b in planned if isinstance(b, Mapping)] if isinstance(planned, list) else []
    return [column(i, b, landed.get(str(b.get("name")))) for i, b in enumerate(branches)]
