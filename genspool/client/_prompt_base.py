"""The prompt registry as the clients see it, without doing any I/O.

The typed views (:class:`Prompt`, one version of a prompt; :class:`PromptLabelMove`, what a
label move did; :class:`PromptChange`, one entry of a prompt's audit) and the :class:`Call` of
each operation of ``/v1/prompts``. Listings page as batches do
(:class:`~genspool.client._batch_base.ListPager`, ``after`` the last id seen). Like ``_base``,
it lets the sync and the async clients differ only in ``await``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from genspool.client._base import Call, _segment
from genspool.client._batch_base import ListPager

__all__ = ["Prompt", "PromptChange", "PromptLabelMove"]

Json = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Prompt:
    """One version of a stored prompt (never edited: a change is a new version)."""

    id: str
    version: int
    #: ``chat`` (``template`` is a list of ``{"role", "content"}``) or ``text`` (a string).
    kind: str
    template: Any
    #: The ``{{variable}}`` names its template needs.
    variables: tuple[str, ...] = ()
    #: The labels pointing at this version (``latest`` included when it is the newest).
    labels: tuple[str, ...] = ()
    description: str | None = None
    created_at: float = 0.0
    #: The id of the API key that created it (None while auth is off).
    created_by: str | None = None
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: Json) -> Prompt:
        return cls(
            id=str(data["id"]),
            version=int(data["version"]),
            kind=str(data["kind"]),
            template=data.get("template"),
            variables=tuple(str(v) for v in data.get("variables") or ()),
            labels=tuple(str(v) for v in data.get("labels") or ()),
            description=data.get("description"),
            created_at=float(data.get("created_at") or 0.0),
            created_by=data.get("created_by"),
            raw=data,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON the server sent."""
        return dict(self.raw)


@dataclass(frozen=True, slots=True)
class PromptLabelMove:
    """A label pointed at a version: from where (None: it was not set), and whether it moved
    at all (a label already there is left as it is)."""

    id: str
    label: str
    version: int
    revision: int
    from_version: int | None
    moved: bool

    @classmethod
    def from_wire(cls, data: Json) -> PromptLabelMove:
        return cls(
            id=str(data["id"]),
            label=str(data["label"]),
            version=int(data["version"]),
            revision=int(data["revision"]),
            from_version=data.get("from_version"),
            moved=bool(data.get("moved")),
        )


@dataclass(frozen=True, slots=True)
class PromptChange:
    """One change of a prompt, as its audit keeps it: a version created (``label`` is
    ``latest``) or a label moved, who (``actor``, an API key's id), when, from -> to."""

    id: str
    prompt_id: str
    action: str
    label: str
    from_version: int | None
    to_version: int
    at: float
    actor: str | None = None
    raw: Json = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_wire(cls, data: Json) -> PromptChange:
        return cls(
            id=str(data["id"]),
            prompt_id=str(data["prompt_id"]),
            action=str(data["action"]),
            label=str(data["label"]),
            from_version=data.get("from_version"),
            to_version=int(data["to_version"]),
            at=float(data["at"]),
            actor=data.get("actor"),
            raw=data,
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON the server sent."""
        return dict(self.raw)


# -- operations --------------------------------------------------------------------------------


def _path(prompt_id: str, tail: str = "") -> str:
    return f"/v1/prompts/{_segment(prompt_id)}{tail}"


def create(
    prompt_id: str,
    template: str | Sequence[Mapping[str, str]],
    kind: str | None,
    description: str | None,
    labels: Sequence[str],
) -> Call[Prompt]:
    if kind is None:
        kind = "text" if isinstance(template, str) else "chat"
    tpl = template if isinstance(template, str) else [dict(m) for m in template]
    body: dict[str, Any] = {"id": prompt_id, "kind": kind, "template": tpl, "labels": list(labels)}
    if description is not None:
        body["description"] = description
    return Call("POST", "/v1/prompts", Prompt.from_wire, body=body)


def get(prompt_id: str, version: int | None, label: str | None) -> Call[Prompt]:
    params = {"version": version, "label": label}
    return Call("GET", _path(prompt_id), Prompt.from_wire, params=params)


def set_label(
    prompt_id: str, label: str, version: int, expected_version: int | None
) -> Call[PromptLabelMove]:
    body: dict[str, Any] = {"version": version}
    if expected_version is not None:
        body["expected_version"] = expected_version
    path = _path(prompt_id, f"/labels/{_segment(label)}")
    return Call("POST", path, PromptLabelMove.from_wire, body=body)


def labels(prompt_id: str) -> Call[dict[str, int]]:
    return Call("GET", _path(prompt_id, "/labels"), _labels)


def _labels(body: Json) -> dict[str, int]:
    return {str(k): int(v) for k, v in (body.get("labels") or {}).items()}


def prompt_pager(limit: int) -> ListPager[Prompt]:
    return ListPager("/v1/prompts", Prompt.from_wire, {"limit": limit})


def history_pager(prompt_id: str, limit: int) -> ListPager[PromptChange]:
    return ListPager(_path(prompt_id, "/audit"), PromptChange.from_wire, {"limit": limit})
