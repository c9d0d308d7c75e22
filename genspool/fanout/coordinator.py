"""The coordinator: runs a fan-out's parent job in a worker, its branches as child jobs.

:class:`FanoutProvider` serves :data:`~genspool.fanout.spec.FANOUT_MODEL`; the worker gives it
the queue (``bind``) and runs each parent as its own call, so cancelling the parent cancels the
coordinator's task alone. For one parent, :class:`Fanout`:

1. submits the branches as child jobs of the parent's tenant and priority, each under the
   idempotency key ``fanout:{parent}:{branch}``: a coordinator that runs the same parent again (its
   worker died, or the parent was replayed) finds the children it made, keeps those that
   succeeded and replays only those that did not;
2. follows the children's events (from any process, as any subscriber does), publishes one
   :class:`~genspool.core.events.JobProgress` on the parent per branch as it ends, and gives up
   on a branch past its ``timeout_s`` or on all of them at the ``deadline_s`` (cancelling them);
3. stops as soon as the strategy is decided (:mod:`genspool.fanout.aggregate`) and cancels the
   branches still running, at once: their workers abort the calls in flight;
4. makes the reduce call, or the levels of a map-reduce's reduce, as further child jobs.

If the parent itself is cancelled, its running branches are cancelled too. If the coordinator
stops for any other reason (its worker drains), the branches go on: the parent is handed back,
and the coordinator that runs it next finds them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from genspool.core.events import Event, JobChanged, JobProgress
from genspool.core.job import Job, JobStatus
from genspool.core.models import BRANCH, PARENT, PROMPT_TOKENS, SCOPES, Models
from genspool.core.queue import Queue
from genspool.exceptions import Conflict, GenspoolError, ModelError
from genspool.fanout.aggregate import NOT_NEEDED, Aggregator, FanoutFailed, Outcome, text_of
from genspool.fanout.mapping import MapReduce
from genspool.fanout.spec import FANOUT_ENDPOINT, Aggregate, Plan, PlannedBranch
from genspool.fanout.template import render
from genspool.providers.base import JobRef, Provider, Request, Result
from genspool.providers.plugins import ModelSpec, ProviderOptions, ProviderPlugin

__all__ = ["Fanout", "FanoutFailed", "FanoutProvider", "plugin"]

log = logging.getLogger("genspool.fanout")


class FanoutProvider(Provider):
    endpoints = frozenset({FANOUT_ENDPOINT})
    #: Each parent its own task: cancelling one stops that fan-out alone.
    per_request = True

    def __init__(self, model: str) -> None:
        super().__init__(model)
        self.queue: Queue | None = None
        self.models: Models | None = None

    def bind(self, queue: Queue, models: Models) -> None:
        self.queue, self.models = queue, models

    async def handle(self, batch: Sequence[Request]) -> list[Result]:
        return list(await asyncio.gather(*(self._one(r) for r in batch)))

    async def _one(self, request: Request) -> Result:
        if self.queue is None or self.models is None or request.job is None:
            raise ModelError("a fan-out runs as a job in a worker", retryable=False)
        plan = Plan.model_validate(request.body)
        return await Fanout(self.queue, self.models, request.job, plan).run()


class Fanout:
    def __init__(self, queue: Queue, models: Models, parent: JobRef, plan: Plan) -> None:
        self.queue, self.models, self.parent, self.plan = queue, models, parent, plan
        loop = asyncio.get_running_loop()
        self.deadline = loop.time() + plan.deadline_s

    async def run(self) -> dict[str, Any]:
        try:
            return await self._run()
        except (ModelError, asyncio.CancelledError):
            raise
        except GenspoolError as exc:  # a request that cannot be made: retrying will not help
            raise FanoutFailed(exc.message, {"branches": []}, code=exc.code) from exc

    async def _run(self) -> dict[str, Any]:
        plan = self.plan
        if plan.map is not None:
            result = await MapReduce(self, plan.map, plan.reduce).run()
        else:
            embed = self._embed if plan.aggregate.match == "embedding" else None
            agg = Aggregator(plan.aggregate, [b.name for b in plan.branches], embed)
            await self.follow(plan.branches, agg)
            result = agg.result()
            if plan.routes:
                result["routes"] = plan.routes
            if plan.aggregate.strategy == "reduce" and plan.reduce is not None:
                await self._reduce(result, agg)
        if not any(b["status"] == "succeeded" for b in result["branches"]):
            raise FanoutFailed(
                f"no branch of the fan-out succeeded ({len(result['branches'])} ran)", result
            )
        return result

    # -- children ----------------------------------------------------------------------------

    def child(self, branch: PlannedBranch) -> Job:
        model = str(branch.body.get("model", ""))
        cfg = self.models.config(model)
        parent = self.parent
        metadata: dict[str, Any] = {PARENT: parent.id, BRANCH: branch.name}
        if SCOPES in parent.metadata:
            metadata[SCOPES] = parent.metadata[SCOPES]
        if branch.prompt_tokens is not None:
            metadata[PROMPT_TOKENS] = branch.prompt_tokens
        if branch.route is not None:
            metadata["route"] = branch.route
        return Job(
            url=branch.url,
            body=branch.body,
            model=cfg.name,
            tenant=parent.tenant,
            priority=parent.priority,
            max_attempts=cfg.max_attempts,
            idempotency_key=f"fanout:{parent.id}:{branch.name}",
            metadata=metadata,
        )

    async def follow(self, branches: Sequence[PlannedBranch], agg: Aggregator) -> None:
        """Submit ``branches`` and feed their outcomes to ``agg`` until it is decided, their
        time is up, or this task is cancelled; the ones left running are then cancelled."""
        loop = asyncio.get_running_loop()
        stored = await self._submit(branches)
        names = {job.id: b for b, job in zip(branches, stored, strict=True)}
        limits = {
            job.id: min(loop.time() + b.timeout_s, self.deadline) if b.timeout_s else self.deadline
            for b, job in zip(branches, stored, strict=True)
        }
        # No ``since``: each child's state is read once at the start, so a child that ended
        # between its submission and this subscription is not missed.
        events = self.queue.subscribe(list(names), tenant=self.parent.tenant, deltas=False)
        # Without a branch timeout only the deadline bounds the wait: nothing to scan per event,
        # which keeps a map of thousands of pieces linear.
        timed = any(b.timeout_s for b in branches)
        waiting: asyncio.Task[Event] | None = None
        finished = False
        try:
            while not agg.decided():
                if waiting is None:
                    waiting = asyncio.ensure_future(anext(events))
                left = (
                    self._next_limit(limits, names, agg) if timed else self.deadline
                ) - loop.time()
                done, _ = await asyncio.wait({waiting}, timeout=max(left, 0.0))
                if not done:
                    await self._give_up(names, limits, agg)
                    continue
                event, waiting = waiting.result(), None
                if isinstance(event, JobChanged) and event.ends and event.id in names:
                    branch = names[event.id]
                    if branch.name not in agg.outcomes:
                        await self._ended(agg, _outcome(branch, event))
            finished = True
        except StopAsyncIteration:
            finished = True
        finally:
            if waiting is not None:
                waiting.cancel()
                with contextlib.suppress(BaseException):
                    await waiting
            await events.aclose()
            left_ids = [i for i, b in names.items() if b.name not in agg.outcomes]
            if left_ids:
                await asyncio.shield(self._stop_branches(left_ids, names, agg, finished))

    def _next_limit(
        self, limits: dict[str, float], names: dict[str, PlannedBranch], agg: Aggregator
    ) -> float:
        """The earliest time a branch still running runs out."""
        return min(
            (t for i, t in limits.items() if names[i].name not in agg.outcomes),
            default=self.deadline,
        )

    async def _submit(self, branches: Sequence[PlannedBranch]) -> list[Job]:
        stored = await self.queue.submit_many([self.child(b) for b in branches])
        again = []
        for job in stored:
            if job.terminal and job.status is not JobStatus.SUCCEEDED:
                with contextlib.suppress(Conflict):  # replayed meanwhile by someone else
                    again.append(await self.queue.replay(job.id, self.parent.tenant))
                    continue
            again.append(job)
        return again

    async def _ended(self, agg: Aggregator, outcome: Outcome) -> None:
        await agg.add(outcome)
        self.queue.publish(JobProgress(self.parent.id, "branch", outcome.public()))

    async def _give_up(
        self, names: dict[str, PlannedBranch], limits: dict[str, float], agg: Aggregator
    ) -> None:
        """Cancel the branches past their time; each ends as ``timeout`` (or as it ended, if
        it did just before)."""
        now = asyncio.get_running_loop().time()
        for job_id, branch in names.items():
            if branch.name in agg.outcomes or limits[job_id] > now:
                continue
            why = (
                f"branch {branch.name} gave no answer within timeout_s={branch.timeout_s:g}"
                if branch.timeout_s and limits[job_id] < self.deadline
                else f"the fan-out's deadline_s={self.plan.deadline_s:g} passed"
            )
            ended = await self._cancel(job_id)
            if ended is not None and ended.status is not JobStatus.CANCELLED:
                await self._ended(agg, _outcome(branch, JobChanged.of(ended)))
            else:
                error = {"code": "branch_timeout", "message": why}
                await self._ended(agg, Outcome(branch.name, job_id, "timeout", None, error))

    async def _stop_branches(
        self,
        job_ids: list[str],
        names: dict[str, PlannedBranch],
        agg: Aggregator,
        finished: bool,
    ) -> None:
        """The strategy is decided (``finished``): cancel what still runs. Otherwise this task
        was cancelled: cancel the branches only if the parent itself was."""
        if not finished:
            try:
                parent = await self.queue.get(self.parent.id)
            except Exception as exc:
                log.warning("fan-out %s: cannot read the parent (%s)", self.parent.id, exc)
                return
            if parent.status is not JobStatus.CANCELLED:
                return
        cancelled = await asyncio.gather(*(self._cancel(i) for i in job_ids))
        for job_id, ended in zip(job_ids, cancelled, strict=True):
            if finished and ended is not None:
                status = "cancelled" if ended.status is JobStatus.CANCELLED else None
                outcome = (
                    Outcome(names[job_id].name, job_id, status, None, _NOT_NEEDED)
                    if status
                    else _outcome(names[job_id], JobChanged.of(ended))
                )
                await self._ended(agg, outcome)

    async def _cancel(self, job_id: str) -> Job | None:
        """Cancel a child; the job as it is now (None if it cannot be read)."""
        try:
            return await self.queue.cancel(job_id, self.parent.tenant)
        except Conflict:  # it ended just now
            with contextlib.suppress(Exception):
                return await self.queue.get(job_id, self.parent.tenant)
        except Exception as exc:
            log.warning("fan-out %s: could not cancel %s: %s", self.parent.id, job_id, exc)
        return None

    # -- further calls -----------------------------------------------------------------------

    async def call(
        self, name: str, url: str, body: dict[str, Any], timeout_s: float | None
    ) -> Outcome:
        """One further child job (a reduce call, an embedding), followed to its end."""
        branch = PlannedBranch(name=name, url=url, body=body, timeout_s=timeout_s)
        agg = Aggregator(Aggregate(strategy="all"), [name])
        await self.follow([branch], agg)
        return agg.outcomes[name]

    async def _embed(self, text: str) -> list[float]:
        model = self.plan.aggregate.model or ""
        name = f"embed-{len(text)}-{abs(hash(text)) % 10**8}"
        outcome = await self.call(name, "/v1/embeddings", {"model": model, "input": text}, None)
        if not outcome.ok or outcome.result is None:
            raise ModelError(f"quorum: embedding with {model} failed: {outcome.error}")
        return [float(x) for x in outcome.result["data"][0]["embedding"]]

    async def _reduce(self, result: dict[str, Any], agg: Aggregator) -> None:
        reduce = self.plan.reduce
        assert reduce is not None
        ok = [agg.outcomes[n] for n in agg.names if n in agg.outcomes and agg.outcomes[n].ok]
        outputs = "\n\n".join(f"### {o.name}\n{text_of(o.result)}" for o in ok)
        body = render_reduce(reduce.body, outputs, result["branches"])
        outcome = await self.call("reduce", reduce.url, body, reduce.timeout_s)
        result["reduce"] = outcome.public()
        if outcome.ok:
            result["output"] = text_of(outcome.result)
            for key, value in (outcome.result or {}).get("usage", {}).items():
                if key in result["usage"] and isinstance(value, int):
                    result["usage"][key] += value
        else:
            result["partial"] = True


def render_reduce(template: dict[str, Any], outputs: str, branches: list[Any]) -> dict[str, Any]:
    rendered = render(template, {"outputs": outputs, "branches": branches})
    assert isinstance(rendered, dict)
    return rendered


#: The error of a branch cancelled because the strategy no longer needed it.
_NOT_NEEDED = {"code": NOT_NEEDED, "message": "cancelled: the fan-out was decided without it"}


def _outcome(branch: PlannedBranch, event: JobChanged) -> Outcome:
    body = event.result.get("body") if isinstance(event.result, dict) else None
    return Outcome(
        branch.name,
        event.id,
        event.status,
        body if isinstance(body, dict) else None,
        event.error,
        branch.route,
    )


def _create(config: ModelSpec, env: Any) -> Provider:
    return FanoutProvider(config.name)


plugin = ProviderPlugin(
    name="fanout",
    options=ProviderOptions,
    endpoints=frozenset({FANOUT_ENDPOINT}),
    create=_create,
)
