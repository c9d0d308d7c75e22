"""Agents: a model that may call allowlisted tools, served under a model name of its own.

``config`` declares tools and agents (the ``tools:`` and ``agents:`` sections), ``tools`` runs
one tool call with its checks (allowlist, scope, schema, rate limit, timeout) and ``loop`` runs
the OpenAI tool-calling loop over them. The queue and the API plug this in; it imports neither.
"""

from genspool.agents.config import AgentConfig, HttpToolConfig, ToolConfig, check_agents
from genspool.agents.loop import AgentDeadline, AgentStepLimit, run_agent
from genspool.agents.tools import Step, ToolBox

__all__ = [
    "AgentConfig",
    "AgentDeadline",
    "AgentStepLimit",
    "HttpToolConfig",
    "Step",
    "ToolBox",
    "ToolConfig",
    "check_agents",
    "run_agent",
]
