"""What a fan-out asks for (``POST /v1/fanouts``) and the plan a coordinator runs.

A client sends a :class:`FanoutCreate`: ``branches`` (explicit requests), an ``event`` (matched
against the routes, whose targets become the branches), or a ``map`` (a long text or a list of
items, each piece one request); an ``aggregate`` strategy; a ``reduce`` call where the strategy or
the map needs one; a ``deadline_s``. The API checks it and turns it into a :class:`Plan`, the body
of the parent job: explicit branches only (routes already matched and their templates rendered),
each with its prompt counted once, so that the coordinator in whatever worker runs the parent
needs neither the routes nor the API's checks.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "FANOUT_ENDPOINT",
    "FANOUT_MODEL",
    "Aggregate",
    "Branch",
    "FanoutCreate",
    "MapSpec",
    "Plan",
    "PlannedBranch",
    "ReduceSpec",
]

#: The model name and endpoint of parent jobs: served by every worker, never by a client's job.
FANOUT_MODEL = "genspool-fanout"
FANOUT_ENDPOINT = "/v1/fanouts"
#: Longest a fan-out may take (its parent job's attempt is bounded by it).
MAX_DEADLINE_S = 86_400.0
#: Most branches one fan-out may have, mapped pieces included.
MAX_BRANCHES = 10_000

_NAME = r"^[A-Za-z0-9_.:-]{1,96}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Branch(_Strict):
    """One request of a fan-out, to any endpoint a served model (or agent) serves."""

    name: str = Field(pattern=_NAME, description="Unique within the fan-out.")
    url: str = Field("/v1/chat/completions", description="The endpoint, e.g. /v1/embeddings.")
    body: dict[str, Any] = Field(description="The request body for that endpoint.")
    timeout_s: float | None = Field(
        None, gt=0, le=MAX_DEADLINE_S, description="Give up on this branch after this long."
    )


class PlannedBranch(Branch):
    """A branch as the coordinator runs it: its prompt counted, its route named."""

    prompt_tokens: int | None = None
    route: str | None = None


class ReduceSpec(_Strict):
    """A further model call that receives the outputs: ``{{outputs}}`` in its body is their
    texts joined (each headed by its branch name), ``{{branches}}`` the list of branch
    records. Map-reduce runs it in levels when the outputs do not fit the model's window."""

    url: str = "/v1/chat/completions"
    body: dict[str, Any] = Field(description="Must name a model and use {{outputs}}.")
    timeout_s: float | None = Field(None, gt=0, le=MAX_DEADLINE_S)


class MapSpec(_Strict):
    """Split work: a long ``text`` cut by the model's own tokenizer so that every request fits
    its window (``{{chunk}}`` in ``body``), or a list of ``items`` (``{{item}}``)."""

    url: str = "/v1/chat/completions"
    body: dict[str, Any] = Field(description="Must name a model; {{chunk}} or {{item}} in it.")
    text: str | None = None
    items: list[Any] | None = Field(None, max_length=MAX_BRANCHES)
    overlap_tokens: int = Field(0, ge=0, description="Tokens each chunk repeats of the last.")
    timeout_s: float | None = Field(None, gt=0, le=MAX_DEADLINE_S)

    @model_validator(mode="after")
    def _one_source(self) -> MapSpec:
        if (self.text is None) == (self.items is None):
            raise ValueError("map: give exactly one of text or items")
        return self


class Aggregate(_Strict):
    """How the branches' answers become the parent's result."""

    strategy: Literal["all", "first", "quorum", "reduce"] = "all"
    #: quorum: how many branches must agree.
    k: int | None = Field(None, ge=1)
    #: quorum: ``exact`` (same text, ignoring surrounding whitespace) or ``embedding`` (cosine
    #: similarity of the texts' embeddings at least ``threshold``, by ``model``).
    match: Literal["exact", "embedding"] = "exact"
    model: str | None = Field(None, description="quorum by embedding: a served embedding model.")
    threshold: float = Field(0.9, gt=-1, le=1)

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, data: Any) -> Any:
        return {"strategy": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _complete(self) -> Aggregate:
        if self.strategy == "quorum":
            if self.k is None:
                raise ValueError("quorum needs k, the number of branches that must agree")
            if self.match == "embedding" and not self.model:
                raise ValueError("quorum by embedding needs model, a served embedding model")
        return self


class _Common(_Strict):
    aggregate: Aggregate = Field(default_factory=Aggregate)
    reduce: ReduceSpec | None = None
    deadline_s: float = Field(600.0, gt=0, le=MAX_DEADLINE_S)


class FanoutCreate(_Common):
    """The body of ``POST /v1/fanouts``."""

    branches: list[Branch] | None = Field(None, min_length=1, max_length=MAX_BRANCHES)
    event: dict[str, Any] | None = None
    map: MapSpec | None = None
    priority: int = Field(0, ge=-100, le=100)
    idempotency_key: str | None = Field(None, max_length=255)
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _one_source(self) -> FanoutCreate:
        given = [k for k in ("branches", "event", "map") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "give exactly one of branches (explicit requests), event (matched against the"
                f" routes) or map (split work); got {', '.join(given) or 'none'}"
            )
        _check_reduce(self.aggregate, self.reduce, mapped=self.map is not None)
        if self.branches is not None:
            names = [b.name for b in self.branches]
            if dupes := sorted({n for n in names if names.count(n) > 1}):
                raise ValueError(f"branch names must be unique; given twice: {', '.join(dupes)}")
        return self


class Plan(_Common):
    """The parent job's body: what the coordinator runs."""

    branches: list[PlannedBranch] = Field(default_factory=list)
    map: MapSpec | None = None
    #: The routes whose targets made the branches (for the record), when an event was given.
    routes: list[str] = Field(default_factory=list)


def _check_reduce(aggregate: Aggregate, reduce: ReduceSpec | None, *, mapped: bool) -> None:
    if (aggregate.strategy == "reduce" or mapped) and reduce is None:
        what = "a map" if mapped else "aggregate strategy reduce"
        raise ValueError(f"{what} needs reduce: {{url, body}}, the call that merges the outputs")
    if mapped and aggregate.strategy not in ("all", "reduce"):
        raise ValueError("a map is reduced: leave aggregate out (or all / reduce)")
    if reduce is not None and aggregate.strategy in ("first", "quorum"):
        raise ValueError(f"aggregate strategy {aggregate.strategy} takes no reduce call")
