"""The prompt registry's records and rules: named prompts, their immutable versions, movable
labels, the audit of every change, and how a request's reference to a prompt is resolved and
rendered into its messages.

A prompt is named by its tenant and an id of the tenant's choosing (``greeting``); each create
of that id stores the next version (1, 2, ...), never edited afterwards. Labels name versions:
``production`` (or any name) moves by compare-and-set on its revision, so two movers never
both win against the same revision and the audit's ``from -> to`` is exactly what happened;
``latest`` is not stored at all, it is the highest version, so it can never lag behind one.

A request refers to a prompt by OpenAI's shape, ``"prompt": {"id": ..., "version"?: ...,
"variables": {...}}``, or by ``"prompt": "id@label"`` (``id@3``: version 3). With neither a
version nor a label, the ``production`` label is used when it exists, else ``latest``. The
resolved ``{id, version}`` is recorded in the job's metadata under :data:`PROMPT`, so a job
pinned to a version keeps it whatever the labels do later.

Templates are Jinja2, in a sandbox (a tenant's template must not reach Python's internals),
with ``{{variable}}`` placeholders; the variables a template needs are found when it is stored,
so a request missing one is refused with its name before anything runs.

Label reads are cached in each process for ``label_ttl_s`` (2 s by default): a move made by
any process reaches every other within that time, and a busy door does not read the store
for every request. Versions, being immutable, are cached without expiry (bounded).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta
from jinja2.sandbox import SandboxedEnvironment

from genspool.core.models import PROMPT  # the job metadata key, reserved
from genspool.core.prompt_records import (
    AuditEntry,
    PromptLabel,
    PromptVersion,
    new_audit_id,
)
from genspool.core.roles import PromptStore
from genspool.exceptions import Conflict, InvalidRequest, NotFound

__all__ = [
    "DEFAULT_LABEL",
    "LATEST",
    "PROMPT",
    "AuditEntry",
    "PromptLabel",
    "PromptRef",
    "PromptVersion",
    "Prompts",
    "check_template",
    "parse_ref",
    "render",
]

#: The label that is always the highest version; computed, never stored or moved.
LATEST = "latest"
#: The label a reference with neither a version nor a label resolves by, when it is set.
DEFAULT_LABEL = "production"
KINDS = ("chat", "text")
ROLES = ("system", "developer", "user", "assistant")

#: A prompt id or a label: a letter or digit, then letters, digits, ``.``, ``_``, ``-``.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
#: The longest template (all of a chat's messages).
MAX_TEMPLATE_CHARS = 100_000
MAX_MESSAGES = 100

_ENV = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True)


# -- templates ------------------------------------------------------------------------------------


def check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not NAME.fullmatch(value):
        raise InvalidRequest(
            f"{what}: {value!r} must be 1 to 128 letters, digits, '.', '_' or '-', starting"
            " with a letter or digit",
            param=what,
        )
    return value


def _needs(source: str, param: str) -> set[str]:
    try:
        return set(meta.find_undeclared_variables(_ENV.parse(source)))
    except TemplateSyntaxError as exc:
        raise InvalidRequest(f"{param}: not a valid template: {exc.message}", param=param) from exc


def check_template(
    kind: str, template: Any
) -> tuple[str | tuple[tuple[str, str], ...], tuple[str, ...]]:
    """The template as stored and the variables it needs, or a 400 naming what is wrong: a
    ``text`` prompt is a string; a ``chat`` prompt a list of ``{"role", "content"}``."""
    if kind not in KINDS:
        raise InvalidRequest(f"kind: must be one of {', '.join(KINDS)}, not {kind!r}", param="kind")
    if kind == "text":
        if not isinstance(template, str) or not template:
            raise InvalidRequest("template: a text prompt is a non-empty string", param="template")
        if len(template) > MAX_TEMPLATE_CHARS:
            raise InvalidRequest(
                f"template: longer than {MAX_TEMPLATE_CHARS} characters", param="template"
            )
        return template, tuple(sorted(_needs(template, "template")))
    if not isinstance(template, list) or not 1 <= len(template) <= MAX_MESSAGES:
        raise InvalidRequest(
            f'template: a chat prompt is a list of 1 to {MAX_MESSAGES} {{"role", "content"}}',
            param="template",
        )
    pairs: list[tuple[str, str]] = []
    needs: set[str] = set()
    for i, message in enumerate(template):
        where = f"template[{i}]"
        if not isinstance(message, dict) or set(message) != {"role", "content"}:
            raise InvalidRequest(f'{where}: must be {{"role": ..., "content": ...}}', param=where)
        role, content = message["role"], message["content"]
        if role not in ROLES:
            raise InvalidRequest(
                f"{where}.role: must be one of {', '.join(ROLES)}", param=f"{where}.role"
            )
        if not isinstance(content, str):
            raise InvalidRequest(f"{where}.content: must be a string", param=f"{where}.content")
        needs |= _needs(content, f"{where}.content")
        pairs.append((role, content))
    if sum(len(c) for _, c in pairs) > MAX_TEMPLATE_CHARS:
        raise InvalidRequest(
            f"template: longer than {MAX_TEMPLATE_CHARS} characters", param="template"
        )
    return tuple(pairs), tuple(sorted(needs))


def render(version: PromptVersion, variables: Mapping[str, Any]) -> list[dict[str, str]]:
    """The messages of ``version`` with ``variables`` written in (a text prompt is one user
    message); a missing variable is a 400 naming it."""
    missing = [v for v in version.variables if v not in variables]
    if missing:
        raise InvalidRequest(
            f"prompt.variables: missing {', '.join(repr(m) for m in missing)}, which prompt"
            f" {version.prompt_id!r} version {version.version} needs",
            param=f"prompt.variables.{missing[0]}",
        )
    pairs = [("user", version.template)] if isinstance(version.template, str) else version.template
    try:
        return [{"role": r, "content": _ENV.from_string(c).render(**variables)} for r, c in pairs]
    except TemplateError as exc:  # a sandbox refusal, a filter's error
        raise InvalidRequest(f"prompt: rendering failed: {exc}", param="prompt") from exc


# -- references -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PromptRef:
    """What a request asks for: a version, or a label (None: :data:`DEFAULT_LABEL` if set, else
    :data:`LATEST`), and the variables to write in."""

    prompt_id: str
    version: int | None = None
    label: str | None = None
    variables: Mapping[str, Any] | None = None


def _scalar(name: str, value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    raise InvalidRequest(
        f"prompt.variables.{name}: must be a string, number or boolean",
        param=f"prompt.variables.{name}",
    )


def parse_ref(raw: Any) -> PromptRef:
    """A request's ``prompt``: ``"id@label"``, ``"id@3"``, or ``{"id", "version"?,
    "variables"?}`` (an ``id`` of that object may carry ``@label`` too)."""
    if isinstance(raw, str):
        return _at(raw, None)
    if not isinstance(raw, dict):
        raise InvalidRequest(
            'prompt: must be "id@label" or {"id": ..., "variables": {...}}', param="prompt"
        )
    unknown = set(raw) - {"id", "version", "variables"}
    if unknown:
        raise InvalidRequest(
            f"prompt.{sorted(unknown)[0]}: unknown field", param=f"prompt.{sorted(unknown)[0]}"
        )
    variables = raw.get("variables") or {}
    if not isinstance(variables, dict):
        raise InvalidRequest("prompt.variables: must be an object", param="prompt.variables")
    checked = {str(k): _scalar(str(k), v) for k, v in variables.items()}
    ref = _at(raw.get("id"), raw.get("version"))
    return PromptRef(ref.prompt_id, ref.version, ref.label, checked)


def _version(value: Any) -> int:
    if isinstance(value, str) and value.isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidRequest(
            f"prompt.version: {value!r} is not a version (1, 2, ...)", param="prompt.version"
        )
    return value


def _at(text: Any, version: Any) -> PromptRef:
    if not isinstance(text, str):
        raise InvalidRequest("prompt.id: must be a string", param="prompt.id")
    prompt_id, at, label = text.partition("@")
    check_name(prompt_id, "prompt.id")
    if at and version is not None:
        raise InvalidRequest(
            "prompt.version: give a version or an '@label', not both", param="prompt.version"
        )
    if version is not None:
        return PromptRef(prompt_id, _version(version))
    if not at:
        return PromptRef(prompt_id)
    if label.isdigit():
        return PromptRef(prompt_id, _version(label))
    return PromptRef(prompt_id, label=check_name(label, "prompt.label"))


# -- the registry ---------------------------------------------------------------------------------


class Prompts:
    """The registry of one process: the store's records, the rules of numbering and of label
    moves, and the caches of resolution."""

    #: Versions kept in memory (they never change, so only their number is bounded).
    VERSIONS_CACHED = 4096
    #: How many times a create retries the next number after another process took it.
    CREATE_TRIES = 20

    def __init__(
        self,
        store: PromptStore,
        *,
        label_ttl_s: float = 2.0,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store, self.label_ttl_s, self.clock, self.monotonic = (
            store,
            label_ttl_s,
            clock,
            monotonic,
        )
        self._labels: dict[tuple[str, str, str], tuple[int | None, float]] = {}
        self._versions: OrderedDict[tuple[str, str, int], PromptVersion] = OrderedDict()

    # -- writes ----------------------------------------------------------------------------------

    async def create(
        self,
        tenant: str,
        prompt_id: str,
        kind: str,
        template: Any,
        *,
        actor: str | None = None,
        description: str | None = None,
    ) -> PromptVersion:
        """Store the next version of ``prompt_id`` (version 1 of a new prompt): the highest
        stored plus one, retried when another writer took that number first."""
        check_name(prompt_id, "id")
        stored, needs = check_template(kind, template)
        for _ in range(self.CREATE_TRIES):
            last = await self.store.prompt_get(tenant, prompt_id, None)
            number = 1 if last is None else last.version + 1
            now = self.clock()
            version = PromptVersion(
                tenant, prompt_id, number, kind, stored, needs, now, actor, description
            )
            entry = AuditEntry(
                new_audit_id(), tenant, prompt_id, "version.created", LATEST,
                None if last is None else last.version, number, now, actor,
            )  # fmt: skip
            if await self.store.prompt_put(version, entry):
                self._labels.pop((tenant, prompt_id, LATEST), None)
                return version
            await asyncio.sleep(0)
        raise Conflict(f"prompt {prompt_id!r}: too many versions created at once; try again")

    async def move_label(
        self,
        tenant: str,
        prompt_id: str,
        label: str,
        version: int,
        *,
        actor: str | None = None,
        expected_version: int | None = None,
    ) -> tuple[PromptLabel, AuditEntry | None]:
        """Point ``label`` at ``version``, compare-and-set on the label's revision. With
        ``expected_version`` the move happens only over that version (0: the label must not
        exist yet), else a 409; without it a lost race is read again and retried, so the
        audit's ``from`` is always the version actually replaced. Moving a label to where it
        already points writes nothing (and no audit entry)."""
        check_name(label, "label")
        if label == LATEST:
            raise InvalidRequest(
                "label: 'latest' is always the newest version; it cannot be moved", param="label"
            )
        await self.version(tenant, prompt_id, version)  # 404 when there is no such version
        while True:
            current = await self.store.label_get(tenant, prompt_id, label)
            from_version = None if current is None else current.version
            if expected_version is not None and (from_version or 0) != expected_version:
                raise Conflict(
                    f"label {label!r} of prompt {prompt_id!r} points at version"
                    f" {from_version}, not {expected_version}; read it again"
                )
            if current is not None and current.version == version:
                return current, None
            revision = 0 if current is None else current.revision
            now = self.clock()
            moved = PromptLabel(tenant, prompt_id, label, version, revision + 1, now, actor)
            entry = AuditEntry(new_audit_id(), tenant, prompt_id, "label.moved", label,
                               from_version, version, now, actor)  # fmt: skip
            if await self.store.label_put(moved, revision, entry):
                self._labels[(tenant, prompt_id, label)] = (version, self.monotonic())
                return moved, entry

    # -- reads -----------------------------------------------------------------------------------

    async def version(self, tenant: str, prompt_id: str, number: int | None) -> PromptVersion:
        """A stored version (None: the latest), or a 404."""
        if number is not None and (found := self._versions.get((tenant, prompt_id, number))):
            return found
        found = await self.store.prompt_get(tenant, prompt_id, number)
        if found is None:
            what = (
                f"no prompt {prompt_id!r}"
                if number is None
                else f"prompt {prompt_id!r} has no version {number}"
            )
            raise NotFound(what, param="prompt.id" if number is None else "version")
        self._keep(found)
        return found

    async def by_label(
        self, tenant: str, prompt_id: str, label: str, *, fresh: bool = False
    ) -> PromptVersion:
        """The version ``label`` points at (read from the store at most every
        ``label_ttl_s`` unless ``fresh``), or a 404."""
        number = await self._label(tenant, prompt_id, label, fresh=fresh)
        if number is None:
            await self.version(tenant, prompt_id, None)  # 404 for the prompt before the label
            raise NotFound(f"prompt {prompt_id!r} has no label {label!r}", param="label")
        return await self.version(tenant, prompt_id, number)

    async def labels(self, tenant: str, prompt_id: str) -> dict[str, int]:
        """Each label's version, ``latest`` included."""
        latest = await self.version(tenant, prompt_id, None)
        found = {lab.label: lab.version for lab in await self.store.label_list(tenant, prompt_id)}
        return {**found, LATEST: latest.version}

    async def resolve(self, tenant: str, ref: PromptRef) -> PromptVersion:
        """The version a request's reference names."""
        if ref.version is not None:
            return await self.version(tenant, ref.prompt_id, ref.version)
        if ref.label is not None:
            return await self.by_label(tenant, ref.prompt_id, ref.label)
        number = await self._label(tenant, ref.prompt_id, DEFAULT_LABEL)
        if number is not None:
            return await self.version(tenant, ref.prompt_id, number)
        return await self.by_label(tenant, ref.prompt_id, LATEST)

    async def render_body(
        self, tenant: str, url: str, body: dict[str, Any]
    ) -> tuple[dict[str, Any], dict[str, Any] | None]:
        """``body`` with its ``prompt`` reference rendered into its messages (chat
        completions) or input (responses), and the ``{id, version}`` to record; a body
        without one comes back as it is, with None. The rendered messages come first, the
        request's own after them."""
        raw = body.get("prompt")
        if raw is None or url not in (CHAT_URL, RESPONSES_URL):
            return body, None  # /v1/completions' own "prompt" is its text
        ref = parse_ref(raw)
        found = await self.resolve(tenant, ref)
        messages: list[Any] = render(found, ref.variables or {})
        out = {k: v for k, v in body.items() if k != "prompt"}
        if url == CHAT_URL:
            own = out.get("messages") or []
            if not isinstance(own, list):
                raise InvalidRequest("messages: must be a list", param="messages")
            out["messages"] = messages + own
        else:
            own = out.get("input")
            if isinstance(own, str):
                own = [{"role": "user", "content": own}]
            out["input"] = messages + (own if isinstance(own, list) else [])
        return out, {"id": found.prompt_id, "version": found.version}

    # -- caches ----------------------------------------------------------------------------------

    async def _label(
        self, tenant: str, prompt_id: str, label: str, *, fresh: bool = False
    ) -> int | None:
        key = (tenant, prompt_id, label)
        held = self._labels.get(key)
        now = self.monotonic()
        if held is not None and not fresh and now - held[1] < self.label_ttl_s:
            return held[0]
        if label == LATEST:
            last = await self.store.prompt_get(tenant, prompt_id, None)
            if last is not None:
                self._keep(last)
            number = None if last is None else last.version
        else:
            stored = await self.store.label_get(tenant, prompt_id, label)
            number = None if stored is None else stored.version
        self._labels[key] = (number, now)
        if len(self._labels) > self.VERSIONS_CACHED:
            self._labels.pop(next(iter(self._labels)))
        return number

    def _keep(self, version: PromptVersion) -> None:
        self._versions[(version.tenant, version.prompt_id, version.version)] = version
        if len(self._versions) > self.VERSIONS_CACHED:
            self._versions.popitem(last=False)


#: The routes whose bodies may carry a stored prompt (as in genspool.providers.base, which the
#: core does not import).
CHAT_URL = "/v1/chat/completions"
RESPONSES_URL = "/v1/responses"
