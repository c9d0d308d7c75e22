"""Pipelines as the clients see them, without doing any I/O.

The typed views (:class:`Pipeline`, :class:`PipelineRun` with its :class:`RunCounts`,
:class:`RunItem`, :class:`Tick`), the :class:`Call` of each operation of ``/v1/pipelines``, and
:class:`ItemPager`, the cursor of a run's items (``after`` the last ``seq`` seen). Runs page
like batches (:class:`~genspool.client._batch_base.ListPager`). Like ``_base``, it lets the
sync and the async clients differ only in ``await``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from genspool.client._base import Call, _segment
from genspool.client._batch_base import ListPager

__all__ = [
    "TERMINAL_RUN",
    "ItemPager",
    "OnRun",
    "Pipeline",
    "PipelineRun",
    "RunCounts",
    "RunItem",
    "Tick",
]

Json = Mapping[str, Any]

#: A run in one of these states changes no more.
TERMINAL_RUN = frozenset({"completed", "failed", "cancelled"})


@dataclass(frozen=True, slots=True)
class Pipeline:
    """A configured pipeline: what starts it (``on``), its inputs, steps and sinks."""

    name: str
    description: str | None = None
    #: ``{"http": true, "schedule": [{"cron", "timezone", …}], "files": {…}, "events": {…}}``.
    on: Json = field(default_factory=dict)
    #: By name: ``{"default", "required", "description"}``.
    inputs: Json = field(default_factory=dict)
    #: ``{"id", "kind", "needs"}`` each, in an order where a step follows those it needs.
    steps: tuple[Json, ...] = ()
    #: The kinds of its sinks: ``jsonl``, ``csv``, ``report``, ``table``.
    sinks: tuple[str, ...] = ()
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: Json) -> Pipeline:
        return cls(
            name=str(data["name"]),
            description=data.get("description"),
            on=data.get("on") or {},
            inputs=data.get("inputs") or {},
            steps=tuple(data.get("steps") or ()),
            sinks=tuple(str(s) for s in data.get("sinks") or ()),
            raw=data,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON the server sent."""
        return dict(self.raw)


@dataclass(frozen=True, slots=True)
class RunCounts:
    """A run's items: ``read`` from the source so far (``total`` once the source is read
    through, else 0), and how many ended each way."""

    total: int = 0
    read: int = 0
    succeeded: int = 0
    failed: int = 0
    skipped: int = 0
    pending: int = 0

    @property
    def done(self) -> int:
        """Items that ended, whichever way."""
        return self.succeeded + self.failed + self.skipped


_COUNTS = ("total", "read", "succeeded", "failed", "skipped", "pending")


@dataclass(frozen=True, slots=True)
class PipelineRun:
    """One run of a pipeline: its status, counts, rate and files."""

    id: str
    pipeline: str
    status: str
    trigger: str
    created_at: int
    counts: RunCounts
    inputs: Json = field(default_factory=dict)
    metadata: Json | None = None
    started_at: int | None = None
    ended_at: int | None = None
    #: Items ended per second since the run started.
    rate: float = 0.0
    usage: Json = field(default_factory=dict)
    #: One Files API file per sink that makes a file, in the order of the sinks.
    output_file_ids: tuple[str, ...] = ()
    #: The failed items, one JSON line each (``key``, ``item``, ``error``).
    error_file_id: str | None = None
    #: Why a ``failed`` run failed: ``{"code", "message"}``.
    error: Json | None = None
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL_RUN

    @classmethod
    def from_wire(cls, data: Json) -> PipelineRun:
        counts = data.get("counts") or {}
        return cls(
            id=str(data["id"]),
            pipeline=str(data.get("pipeline") or ""),
            status=str(data["status"]),
            trigger=str(data.get("trigger") or ""),
            created_at=int(data.get("created_at") or 0),
            counts=RunCounts(**{k: int(counts.get(k) or 0) for k in _COUNTS}),
            inputs=data.get("inputs") or {},
            metadata=data.get("metadata"),
            started_at=data.get("started_at"),
            ended_at=data.get("ended_at"),
            rate=float(data.get("rate") or 0.0),
            usage=data.get("usage") or {},
            output_file_ids=tuple(data.get("output_file_ids") or ()),
            error_file_id=data.get("error_file_id"),
            error=data.get("error"),
            raw=data,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON the server sent."""
        return dict(self.raw)


@dataclass(frozen=True, slots=True)
class RunItem:
    """One item of a run, in source order: the source's record and its steps' outputs."""

    key: str
    seq: int
    #: ``pending``, ``done``, ``failed`` or ``skipped``.
    status: str
    item: Any = None
    steps: Json = field(default_factory=dict)
    error: Json | None = None
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: Json) -> RunItem:
        return cls(
            key=str(data["key"]),
            seq=int(data["seq"]),
            status=str(data["status"]),
            item=data.get("item"),
            steps=data.get("steps") or {},
            error=data.get("error"),
            raw=data,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON the server sent."""
        return dict(self.raw)


@dataclass(frozen=True, slots=True)
class Tick:
    """One instant of a schedule: ``fired`` (with its run), ``skipped`` or ``missed``."""

    at: float
    outcome: str
    run_id: str | None = None
    recorded_at: float | None = None

    @classmethod
    def from_wire(cls, data: Json) -> Tick:
        return cls(
            at=float(data["at"]),
            outcome=str(data["outcome"]),
            run_id=data.get("run_id"),
            recorded_at=data.get("recorded_at"),
        )


#: What ``wait_run`` calls with each state of the run it follows.
OnRun = Callable[[PipelineRun], None]


# -- operations --------------------------------------------------------------------------------


def _path(name: str, run_id: str | None = None, tail: str = "") -> str:
    base = f"/v1/pipelines/{_segment(name)}"
    return base if run_id is None else f"{base}/runs/{_segment(run_id)}{tail}"


def pipelines() -> Call[list[Pipeline]]:
    return Call("GET", "/v1/pipelines", lambda r: [Pipeline.from_wire(p) for p in r["data"]])


def pipeline(name: str) -> Call[Pipeline]:
    return Call("GET", _path(name), Pipeline.from_wire)


def start_run(
    name: str,
    inputs: Mapping[str, Any] | None,
    metadata: Mapping[str, str] | None,
    idempotency_key: str | None,
    force: bool,
) -> Call[PipelineRun]:
    body: dict[str, Any] = {"inputs": dict(inputs or {}), "force": force}
    if metadata is not None:
        body["metadata"] = dict(metadata)
    if idempotency_key is not None:
        body["idempotency_key"] = idempotency_key
    return Call("POST", f"{_path(name)}/runs", PipelineRun.from_wire, body=body)


def run_call(method: str, name: str, run_id: str, tail: str = "") -> Call[PipelineRun]:
    return Call(method, _path(name, run_id, tail), PipelineRun.from_wire)


def run_events(name: str, run_id: str) -> Call[None]:
    return Call("GET", _path(name, run_id, "/events"), lambda _: None)


def ticks(name: str, before: float | None, limit: int) -> Call[list[Tick]]:
    params = {"before": before, "limit": limit}
    return Call("GET", f"{_path(name)}/ticks", _ticks, params=params)


def _ticks(body: Json) -> list[Tick]:
    return [Tick.from_wire(t) for t in body["data"]]


def run_pager(name: str, limit: int, after: str | None) -> ListPager[PipelineRun]:
    return ListPager(f"{_path(name)}/runs", PipelineRun.from_wire, {"limit": limit}, after)


@dataclass(frozen=True, slots=True)
class ItemPage:
    data: list[RunItem]
    has_more: bool
    last_seq: int | None


@dataclass(slots=True)
class ItemPager:
    """The cursor of a run's items: each page asks for those after the last ``seq`` seen."""

    path: str
    query: dict[str, Any]
    after: int = 0
    done: bool = False

    @classmethod
    def of(cls, name: str, run_id: str, status: str | None, limit: int) -> ItemPager:
        return cls(_path(name, run_id, "/items"), {"status": status, "limit": limit})

    def call(self) -> Call[ItemPage]:
        return Call("GET", self.path, _item_page, params={**self.query, "after": self.after})

    def advance(self, page: ItemPage) -> list[RunItem]:
        """The page's items; moves the cursor past them, or ends the listing."""
        last = page.last_seq
        self.done = not page.has_more or last is None or last <= self.after
        self.after = self.after if last is None else last
        return page.data


def _item_page(body: Json) -> ItemPage:
    data = [RunItem.from_wire(item) for item in body.get("data") or ()]
    last = body.get("last_seq")
    return ItemPage(data, bool(body.get("has_more")), None if last is None else int(last))
