"""One item through a pipeline's steps: :class:`ItemWork`.

Model and fan-out steps are jobs, each under an id any process can compute from the run, the
item's position and the step (``job_{run}_{seq}_{step}``) and the idempotency key
``pipeline:{run}:{seq}:{step}``: a runner that resumes an item after a crash submits the same
jobs again and gets the ones that exist, finished or not, so no model is called twice for an
item. Filters, transforms and image steps run here, in the runner's process (a transform runs
in a thread unless it is a coroutine function; image work always does).
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import mimetypes
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import orjson

from genspool.config import FANOUT_MODEL
from genspool.core.job import Job
from genspool.core.models import PROMPT, PROMPT_TOKENS, SCOPES
from genspool.core.patterns import compile_pattern
from genspool.core.pipeline import ItemStatus, PipelineRun, RunItem
from genspool.core.prompts import PromptVersion
from genspool.core.prompts import render as render_prompt
from genspool.core.queue import Queue
from genspool.exceptions import GenspoolError
from genspool.fanout.spec import FANOUT_ENDPOINT, Plan, PlannedBranch
from genspool.fanout.template import TemplateError, render
from genspool.files import Files
from genspool.pipelines import images, transforms
from genspool.pipelines.prompts import StoredPrompt
from genspool.pipelines.sinks import write_atomic
from genspool.pipelines.spec import ModelCall, Pipeline, Step, fanout_template, render_fanout

__all__ = ["ItemWork", "StepFailed", "step_job_id"]

RequestCheck = Callable[[str, dict[str, Any]], tuple[Any, int | None]]


class StepFailed(Exception):
    def __init__(self, step: str, code: str, message: str) -> None:
        super().__init__(message)
        self.error = {"step": step, "code": code, "message": message}


def step_job_id(run_id: str, seq: int, step: str) -> str:
    return f"job_{run_id.removeprefix('run_')}_{seq}_{step}"


@dataclasses.dataclass(slots=True)
class ItemOutcome:
    item: RunItem
    usage: dict[str, int]


class ItemWork:
    """Runs items of one run: built once per run by the runner."""

    def __init__(
        self,
        pipeline: Pipeline,
        run: PipelineRun,
        queue: Queue,
        files: Files | None,
        check: RequestCheck,
        prompts: Mapping[str, PromptVersion] | None = None,
    ) -> None:
        """``prompts``: the version of each stored prompt step's prompt, pinned on the run
        (:func:`genspool.pipelines.prompts.pin_prompts`)."""
        self.pipeline, self.run, self.queue, self.files, self.check = (
            pipeline, run, queue, files, check,
        )  # fmt: skip
        self.prompts = dict(prompts or {})
        self._filters = {
            s.id: compile_pattern(s.pattern) for s in pipeline.steps if s.pattern is not None
        }
        self._transforms = {
            s.id: transforms.load(s.transform, pipeline.base)
            for s in pipeline.steps
            if s.transform is not None
        }

    def context(self, item: RunItem) -> dict[str, Any]:
        return {
            "item": item.data, "key": item.key, "seq": item.seq, "inputs": self.run.inputs,
            "run": {"id": self.run.id, "pipeline": self.run.pipeline}, "steps": dict(item.steps),
        }  # fmt: skip

    def job_ids(self, item: RunItem) -> list[str]:
        """The jobs an item's steps may have made (to cancel those in flight)."""
        return [
            step_job_id(self.run.id, item.seq, s.id)
            for s in self.pipeline.steps
            if s.kind in ("model", "fanout") and s.id not in item.steps
        ]

    async def process(self, item: RunItem) -> ItemOutcome:
        """Every step the item has not done, in order; the item as it ends."""
        ctx = self.context(item)
        usage: dict[str, int] = {}
        for step in self.pipeline.steps:
            if step.id in ctx["steps"]:
                continue
            try:
                if step.kind == "filter":
                    if not self._filters[step.id](ctx):
                        ctx["steps"][step.id] = False
                        skipped = dataclasses.replace(
                            item, status=ItemStatus.SKIPPED, steps=ctx["steps"]
                        )
                        return ItemOutcome(skipped, usage)
                    ctx["steps"][step.id] = True
                    continue
                ctx["steps"][step.id] = await self._step(step, item, ctx, usage)
            except StepFailed as exc:
                failed = dataclasses.replace(
                    item, status=ItemStatus.FAILED, steps=ctx["steps"], error=exc.error
                )
                return ItemOutcome(failed, usage)
        return ItemOutcome(
            dataclasses.replace(item, status=ItemStatus.DONE, steps=ctx["steps"]), usage
        )

    async def _step(
        self, step: Step, item: RunItem, ctx: dict[str, Any], usage: dict[str, int]
    ) -> Any:
        if step.call is not None:
            body = self._render(step, step.call.template(), ctx)
            prompt = None
            if isinstance(step.call.prompt, StoredPrompt):
                body, prompt = self._stored(step, body)
            result = await self._job(step, item, step.call.endpoint, body, step.call, usage, prompt)
            return _output(step, step.call, result)
        if step.fanout is not None:
            spec = render_fanout(step.fanout, self._render(step, fanout_template(step.fanout), ctx))
            plan = Plan(
                branches=[PlannedBranch(**b.model_dump()) for b in spec.branches or ()],
                map=spec.map, aggregate=spec.aggregate, reduce=spec.reduce,
                deadline_s=spec.deadline_s,
            )  # fmt: skip
            body = plan.model_dump(mode="json", exclude_none=True)
            return await self._job(step, item, FANOUT_ENDPOINT, body, None, usage)
        if step.transform is not None:
            try:
                return await transforms.call(self._transforms[step.id], ctx)
            except Exception as exc:
                raise StepFailed(
                    step.id, "transform_failed", f"{type(exc).__name__}: {exc}"
                ) from exc
        if step.image is not None:
            return await self._image(step, item, ctx)
        raise AssertionError(step.kind)  # pragma: no cover

    def _stored(self, step: Step, body: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """The body with the messages of the step's stored prompt, its variables (templated
        from the item) written in; and the ``{id, version}`` to record on the job."""
        version = self.prompts.get(step.id)
        if version is None:  # the runner pins every stored prompt before an item runs
            raise StepFailed(step.id, "invalid_prompt", "its stored prompt was not resolved")
        variables = body.pop("prompt")
        try:
            messages = render_prompt(version, variables)
        except GenspoolError as exc:
            raise StepFailed(step.id, "invalid_prompt", exc.message) from exc
        record = {"id": version.prompt_id, "version": version.version}
        return {**body, "messages": messages}, record

    def _render(self, step: Step, template: Any, ctx: dict[str, Any]) -> Any:
        try:
            return render(template, ctx)
        except TemplateError as exc:
            raise StepFailed(step.id, "template", str(exc)) from exc

    async def _job(
        self,
        step: Step,
        item: RunItem,
        url: str,
        body: dict[str, Any],
        call: ModelCall | None,
        usage: dict[str, int],
        prompt: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        metadata: dict[str, Any] = {"pipeline_run": self.run.id, "item": item.key}
        if prompt is not None:
            metadata[PROMPT] = prompt
        if call is not None:
            try:
                _, tokens = self.check(url, body)
            except GenspoolError as exc:
                raise StepFailed(step.id, "invalid_request", str(exc)) from exc
            if tokens is not None:
                metadata[PROMPT_TOKENS] = tokens
        if self.run.scopes is not None:
            metadata[SCOPES] = sorted(self.run.scopes)
        model = call.model if call is not None else str(FANOUT_MODEL["name"])
        attempts = (call.max_attempts if call is not None else None) or (
            3 if call is not None else int(FANOUT_MODEL["max_attempts"])
        )
        job = Job(
            url=url, body=body, model=model, id=step_job_id(self.run.id, item.seq, step.id),
            tenant=self.run.tenant, priority=self.pipeline.priority, max_attempts=attempts,
            idempotency_key=f"pipeline:{self.run.id}:{item.seq}:{step.id}", metadata=metadata,
        )  # fmt: skip
        stored = await self.queue.submit(job)
        ended = await self.queue.outcome(stored)
        if ended.status != "succeeded" or ended.result is None:
            error = ended.error or {}
            raise StepFailed(
                step.id, str(error.get("code") or ended.status),
                str(error.get("message") or f"the job {job.id} ended {ended.status}"),
            )  # fmt: skip
        reply = ended.result.get("body")  # a job's result: {"status_code", "body"}
        answer: dict[str, Any] = reply if isinstance(reply, dict) else ended.result
        for k, v in (answer.get("usage") or {}).items():
            if isinstance(v, int):
                usage[k] = usage.get(k, 0) + v
        return answer

    async def _image(self, step: Step, item: RunItem, ctx: dict[str, Any]) -> dict[str, Any]:
        assert step.image is not None
        spec = step.image.model_validate(
            self._render(step, step.image.model_dump(mode="json"), ctx)
        )
        source = str(spec.input)
        try:
            data = await self._read_input(source)
            out = await asyncio.to_thread(images.apply_ops, data, spec.ops)
        except (OSError, ValueError, GenspoolError) as exc:
            raise StepFailed(step.id, "image_failed", str(exc)) from exc
        ext = mimetypes.guess_extension(out.media_type) or f".{out.format.lower()}"
        name = f"{Path(source).stem if not source.startswith('file-') else item.key}{ext}"
        result: dict[str, Any] = {
            "media_type": out.media_type, "width": out.width, "height": out.height,
            "bytes": len(out.data),
        }  # fmt: skip
        if spec.to is not None:
            target = (self.pipeline.base / spec.to).resolve()
            await asyncio.to_thread(_write_atomic, target / name, out.data)
            result["path"] = str(target / name)
        if self.files is not None:
            async with await self.files.open(tenant=self.run.tenant) as writer:
                await writer.write(out.data)
                record = await writer.commit(filename=name, purpose="pipeline_output")
            result["file_id"] = record.id
        return result

    async def _read_input(self, source: str) -> bytes:
        if source.startswith("file-"):
            if self.files is None:
                raise ValueError(f"{source}: this deployment keeps no files")
            _, chunks = await self.files.content(source, self.run.tenant)
            return b"".join([c async for c in chunks])
        path = (self.pipeline.base / source).resolve()
        return await asyncio.to_thread(path.read_bytes)


def _write_atomic(path: Path, data: bytes) -> None:
    # A temporary file of its own (not one fixed ``.name.part``): two runs that write the same
    # image at once (files landing together each start a run over the directory) must not
    # truncate or rename each other's.
    write_atomic(path, io.BytesIO(data))


def _output(step: Step, call: ModelCall, result: dict[str, Any]) -> Any:
    """What later steps and the sinks see of a model step."""
    if call.output == "raw":
        return result
    text = _text(result)
    if text is None:
        return result  # embeddings, moderation, …: the body is the output
    if call.output == "text":
        return text
    try:
        return orjson.loads(_json_part(text))
    except orjson.JSONDecodeError as exc:
        raise StepFailed(
            step.id, "invalid_json", f"the answer is not JSON: {text[:200]!r}"
        ) from exc


def _text(result: dict[str, Any]) -> str | None:
    choices = result.get("choices")
    if isinstance(choices, list) and choices:
        first = choices[0]
        message = first.get("message") if isinstance(first, dict) else None
        if isinstance(message, dict) and isinstance(message.get("content"), str):
            return str(message["content"])
        if isinstance(first, dict) and isinstance(first.get("text"), str):
            return str(first["text"])
    if isinstance(result.get("output_text"), str):
        return str(result["output_text"])
    return None


def _json_part(text: str) -> str:
    """The JSON in an answer: models wrap it in prose or a fenced block."""
    start = min((i for i in (text.find("{"), text.find("[")) if i >= 0), default=-1)
    if start < 0:
        return text
    end = max(text.rfind("}"), text.rfind("]"))
    return text[start : end + 1] if end > start else text[start:]
