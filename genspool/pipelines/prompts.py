"""A model step's stored prompt: a prompt of the registry (:mod:`genspool.core.prompts`) named
instead of an inline one::

    - id: analyse
      model: smollm2-135m-instruct
      prompt: {id: sentiment, label: production, variables: {text: "{{item.text}}"}}

The reference's shape (its ``id``, a ``version`` or a ``label``, never both, and the
placeholders of its ``variables``) is checked when the file is loaded. The registry is
tenant-scoped and its prompts change while the server runs, so the prompt itself is resolved
when a run starts, in the run's tenant: it must exist, and the step must give exactly the
variables its template declares (one it does not declare is an error, as is one it needs and
does not get), else the run fails at once naming the pipeline and the step. The version found
is pinned on the run (``PipelineRun.prompts``) and recorded on every job of the step
(``genspool.prompt``): all the items of a run use one version, even if the label moves during
the run, and a runner that takes the run over uses the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from genspool.core.prompts import PromptRef, Prompts, PromptVersion, check_name, parse_ref
from genspool.exceptions import GenspoolError, InvalidRequest

if TYPE_CHECKING:
    from genspool.core.pipeline import PipelineRun

__all__ = ["PromptProblem", "StoredPrompt", "pin_prompts"]


class StoredPrompt(BaseModel):
    """A prompt of the registry, by ``version`` or ``label`` (neither: ``production`` if
    set, else ``latest``), with its variables templated from the item."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="The prompt's id ('id@label' or 'id@3' also name one).")
    version: int | None = Field(None, ge=1, description="A version of it.")
    label: str | None = Field(None, description="A label of it, e.g. production.")
    variables: dict[str, Any] = Field(
        default_factory=dict,
        description="Its template's variables, each templated from the item like a prompt"
        ' string: {text: "{{item.text}}"}.',
    )

    @model_validator(mode="after")
    def _reference(self) -> StoredPrompt:
        self.ref()
        return self

    def ref(self) -> PromptRef:
        try:
            found = parse_ref({"id": self.id, "version": self.version})
            if self.label is None:
                return found
            check_name(self.label, "label")
            if found.version is not None or found.label is not None:
                raise InvalidRequest("give a version or a label, not both")
            return PromptRef(found.prompt_id, label=self.label)
        except InvalidRequest as exc:
            raise ValueError(exc.message) from None


class PromptProblem(ValueError):
    """A step's stored prompt cannot be used: the run fails, saying why."""


async def pin_prompts(
    registry: Prompts | None, steps: Mapping[str, StoredPrompt], run: PipelineRun
) -> tuple[dict[str, PromptVersion], dict[str, dict[str, Any]]]:
    """The version of the stored prompt of each of ``steps`` (by step id): the one pinned on
    ``run``, else the one its reference resolves to now; and the pins to keep on the run. A
    :class:`PromptProblem` names the pipeline and the step of what is wrong."""
    if not steps:
        return {}, dict(run.prompts)
    versions: dict[str, PromptVersion] = {}
    for step_id, stored in steps.items():
        where = f"pipeline {run.pipeline!r}, step {step_id!r}"
        if registry is None:
            raise PromptProblem(f"{where}: this deployment keeps no prompts")
        try:
            versions[step_id] = found = await _version(registry, run, step_id, stored)
        except GenspoolError as exc:
            raise PromptProblem(f"{where}: {exc.message}") from exc
        _check_variables(where, stored, found)
    pins = {k: {"id": v.prompt_id, "version": v.version} for k, v in versions.items()}
    return versions, pins


async def _version(
    registry: Prompts, run: PipelineRun, step_id: str, stored: StoredPrompt
) -> PromptVersion:
    ref = stored.ref()
    pinned: Mapping[str, Any] = run.prompts.get(step_id) or {}
    if pinned.get("id") == ref.prompt_id and isinstance(pinned.get("version"), int):
        return await registry.version(run.tenant, ref.prompt_id, pinned["version"])
    return await registry.resolve(run.tenant, ref)


def _check_variables(where: str, stored: StoredPrompt, found: PromptVersion) -> None:
    given, declared = set(stored.variables), set(found.variables)
    named = f"prompt {found.prompt_id!r} version {found.version}"
    takes = ", ".join(found.variables) or "none"
    if extra := sorted(given - declared):
        raise PromptProblem(
            f"{where}: variables.{extra[0]}: {named} does not declare"
            f" {', '.join(repr(e) for e in extra)} (it takes {takes})"
        )
    if missing := sorted(declared - given):
        raise PromptProblem(
            f"{where}: variables: {named} needs {', '.join(repr(m) for m in missing)}"
            f" (it takes {takes})"
        )
