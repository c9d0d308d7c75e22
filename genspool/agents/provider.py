"""An agent served as a model: the ``agent`` provider runs the tool-calling loop as a job.

A models file's ``agents:`` become models of this provider (``agent_models``),
each carrying its tools. The worker binds the provider to the queue; each request then runs
:func:`genspool.agents.loop.run_agent`, whose model calls are child jobs of the agent's model on
the same queue (its limits, batching, retries and breaker apply to them, and they run wherever
that model is served), and whose tools run here through a :class:`~genspool.agents.tools.ToolBox`
rate-limited across processes by the backend. Each step (a model call, a tool call) is published
as a :class:`~genspool.core.events.JobProgress` of the agent's job as it ends, and all of them are
in its result, or in its error when the step limit or the deadline ends the run.

An agent job is not retried (``max_attempts: 1``): a second attempt would run its tools again.
The caller's scopes come with the job (the API records them); a job submitted from code without
them runs with every scope, as the code that submits it is trusted.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from genspool.agents.config import AgentConfig, ToolConfig
from genspool.agents.loop import run_agent
from genspool.agents.tools import Step, ToolBox
from genspool.core.events import JobProgress
from genspool.core.job import Job, JobStatus
from genspool.core.models import BRANCH, PARENT, SCOPES, Models
from genspool.core.queue import Queue
from genspool.exceptions import ModelError
from genspool.providers.base import CHAT, JobRef, Provider, Request, Result
from genspool.providers.plugins import (
    ModelCard,
    ModelSpec,
    ProviderOptions,
    ProviderPlugin,
    options_of,
)
from genspool.tracing import invoke_agent

__all__ = ["AgentOptions", "AgentProvider", "plugin"]

ALL_SCOPES = ("submit", "read", "admin")


class AgentOptions(ProviderOptions):
    agent: AgentConfig
    tools: list[ToolConfig] = []


class AgentProvider(Provider):
    endpoints = frozenset({CHAT})
    #: Each run its own task: cancelling the job stops its run alone.
    per_request = True

    def __init__(self, model: str, options: AgentOptions) -> None:
        super().__init__(model)
        self.agent, self.tools = options.agent, options.tools
        self.queue: Queue | None = None
        self.toolbox: ToolBox | None = None

    def bind(self, queue: Queue, models: Models) -> None:
        self.queue = queue
        self.toolbox = ToolBox(
            self.tools, reserve=queue.storage.coordination.reserve, clock=queue.clock
        )

    async def aclose(self) -> None:
        if self.toolbox is not None:
            await self.toolbox.aclose()

    async def handle(self, batch: Sequence[Request]) -> list[Result]:
        return list(await asyncio.gather(*(self._one(r) for r in batch)))

    async def _one(self, request: Request) -> Result:
        queue, toolbox, job = self.queue, self.toolbox, request.job
        if queue is None or toolbox is None or job is None:
            raise ModelError("an agent runs as a job in a worker", retryable=False)
        scopes = job.metadata.get(SCOPES)
        calls = _ModelCalls(queue, self.agent, job)

        def on_step(step: Step) -> None:
            queue.publish(JobProgress(job.id, "step", step.public()))

        # An invoke_agent span when tracing is on (genspool.tracing), a shared no-op otherwise.
        with invoke_agent(queue, job, self.agent.name, self.agent.model) as span:
            answer = await run_agent(
                self.agent,
                request.body,
                call_model=calls,
                toolbox=toolbox,
                scopes=scopes if isinstance(scopes, list) else ALL_SCOPES,
                on_step=on_step,
            )
            span.answered(answer)
        return answer


class _ModelCalls:
    """The agent's model calls, each a child job of the agent's job, awaited to its end."""

    def __init__(self, queue: Queue, agent: AgentConfig, parent: JobRef) -> None:
        self.queue, self.agent, self.parent = queue, agent, parent
        self.n = 0

    async def __call__(self, body: dict[str, Any]) -> dict[str, Any]:
        self.n += 1
        parent = self.parent
        name = f"step-{self.n}"
        metadata: dict[str, Any] = {PARENT: parent.id, BRANCH: name}
        if SCOPES in parent.metadata:
            metadata[SCOPES] = parent.metadata[SCOPES]
        child = Job(
            url=CHAT,
            body=body,
            model=self.agent.model,
            tenant=parent.tenant,
            priority=parent.priority,
            idempotency_key=f"agent:{parent.id}:{parent.attempts}:{name}",
            metadata=metadata,
        )
        stored = await self.queue.submit(child)
        try:
            done = await self.queue.outcome(stored)
        except asyncio.CancelledError:
            await asyncio.shield(self._cancel(stored.id))
            raise
        if done.status == JobStatus.SUCCEEDED.value and isinstance(done.result, dict):
            answer = done.result.get("body")
            if isinstance(answer, dict):
                return answer
        message = (done.error or {}).get("message", done.status)
        raise ModelError(f"model {self.agent.model} ({name}): {message}", retryable=False)

    async def _cancel(self, job_id: str) -> None:
        try:
            await self.queue.cancel(job_id, self.parent.tenant)
        except Exception:  # it ended meanwhile, or the backend is down: nothing more to do
            return


def _create(config: ModelSpec, env: Any) -> Provider:
    return AgentProvider(config.name, options_of(config, AgentOptions))


def _card(config: ModelSpec) -> ModelCard:
    # features None: every chat parameter goes on to the agent's model, which decides.
    return ModelCard(config.name, frozenset({CHAT}), config.context_window, features=None)


plugin = ProviderPlugin(
    name="agent",
    options=AgentOptions,
    endpoints=frozenset({CHAT}),
    create=_create,
    card=_card,
)
