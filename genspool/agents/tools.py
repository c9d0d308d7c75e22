"""Running one tool call for an agent: checks first, then the call, always a :class:`Step`.

A tool call comes from a model, so every way it can go wrong is an outcome to report back to
the model (which may correct itself) and to record in the job — never an exception. The checks
run in a fixed order, cheapest and most important first: the agent's allowlist, the caller's
scope, the arguments against the tool's schema, the tool's rate limit; then the call itself,
HTTP or a Python entry point. ``timeout_s`` bounds the rate-limit wait and the call together,
as ``limits.timeout_s`` does for a model.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import time
from collections.abc import Awaitable, Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import httpx
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match

from genspool.agents.config import HttpToolConfig, ToolConfig, resolve_entry_point

__all__ = ["Outcome", "Reserve", "Step", "ToolBox"]

Outcome = Literal["ok", "refused", "error", "timeout"]
#: ``Coordination.reserve``: ``(key, cost, rate_per_s, burst, now) -> seconds to wait``.
Reserve = Callable[[str, float, float, float, float], Awaitable[float]]
#: An HTTP tool's answer body kept for an error message, at most.
_ERROR_BODY = 200


@dataclass(slots=True)
class Step:
    """One recorded step of an agent's run: a tool call (``type`` "tool") or a model call
    (``type`` "model"; ``name`` is the model, ``usage`` its token counts)."""

    type: Literal["tool", "model"]
    name: str
    outcome: Outcome
    started_at: float
    duration_s: float = 0.0
    call_id: str | None = None
    arguments: Any = None
    result: Any = None
    error: str | None = None
    usage: dict[str, Any] | None = None
    #: Seconds a tool call waited for its rate limit (part of ``duration_s``).
    waited_s: float = 0.0

    def public(self) -> dict[str, Any]:
        """The step as the job and its events show it (JSON values only)."""
        out: dict[str, Any] = {"type": self.type, "name": self.name}
        if self.type == "tool":
            out |= {"call_id": self.call_id, "arguments": self.arguments}
        out |= {"outcome": self.outcome, "started_at": self.started_at}
        out["duration_s"] = round(self.duration_s, 6)
        if self.outcome == "ok" and self.type == "tool":
            out["result"] = self.result
        if self.error is not None:
            out["error"] = self.error
        if self.usage is not None:
            out["usage"] = self.usage
        if self.waited_s:
            out["waited_s"] = round(self.waited_s, 6)
        return out


class _Failed(Exception):
    """Ends a tool call early with an outcome other than "ok" (internal to this module)."""

    def __init__(self, outcome: Outcome, message: str) -> None:
        super().__init__(message)
        self.outcome, self.message = outcome, message


class ToolBox:
    """The declared tools, ready to be called. ``reserve`` (the backend's
    ``Coordination.reserve``) enforces each tool's ``rpm`` across processes; without it,
    ``rpm`` is not enforced. ``http`` is the client for HTTP tools (one of its own is made and
    closed by :meth:`aclose` otherwise). ``clock`` gives ``now`` for ``reserve`` and each
    step's ``started_at``: pass the server clock when processes share a backend."""

    def __init__(
        self,
        tools: Sequence[ToolConfig],
        *,
        reserve: Reserve | None = None,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.tools = {t.name: t for t in tools}
        self._validators = {t.name: Draft202012Validator(t.parameters) for t in tools}
        self.reserve, self.clock, self.sleep = reserve, clock, sleep
        self._http, self._own_http = http, http is None

    def specs(self, names: Collection[str]) -> list[dict[str, Any]]:
        """The OpenAI function specs of the named tools, in their declared order."""
        return [t.openai_spec() for n, t in self.tools.items() if n in names]

    async def aclose(self) -> None:
        if self._own_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    async def call(
        self,
        name: str,
        arguments: str,
        *,
        allowed: Collection[str],
        scopes: Collection[str],
        call_id: str | None = None,
        time_left: float | None = None,
    ) -> Step:
        """Run the tool ``name`` with ``arguments`` (the model's JSON text). ``allowed``: the
        agent's tools; ``scopes``: the caller's API-key scopes; ``time_left``: what the run
        has left, which shortens the tool's own timeout. Never raises for a failed call."""
        started, t0 = self.clock(), time.monotonic()
        step = Step("tool", name, "ok", started, call_id=call_id, arguments=arguments)
        try:
            tool = self._admit(name, allowed, scopes)
            step.arguments = args = self._parse(tool, arguments)
            budget = tool.timeout_s if time_left is None else min(tool.timeout_s, time_left)
            step.waited_s = await self._wait_for_budget(tool, t0 + budget)
            step.result = await self._run(tool, args, t0 + budget, budget)
        except _Failed as exc:
            step.outcome, step.error = exc.outcome, exc.message
        step.duration_s = time.monotonic() - t0
        return step

    # -- the checks, in order ------------------------------------------------------------------

    def _admit(self, name: str, allowed: Collection[str], scopes: Collection[str]) -> ToolConfig:
        tool = self.tools.get(name)
        if tool is None or name not in allowed:
            may = ", ".join(n for n in self.tools if n in allowed) or "no tools"
            raise _Failed(
                "refused", f"tool {name!r} is not allowed for this agent; it may call: {may}"
            )
        if tool.scope not in scopes and "admin" not in scopes:  # admin includes every scope
            held = ", ".join(sorted(str(s) for s in scopes)) or "none"
            raise _Failed(
                "refused",
                f"tool {name!r} needs the {tool.scope!r} scope, which the caller's API key "
                f"lacks (it has: {held})",
            )
        return tool

    def _parse(self, tool: ToolConfig, arguments: str) -> Any:
        try:
            # Models often send "" for a tool without parameters: that is no arguments.
            args = json.loads(arguments) if arguments.strip() else {}
        except (TypeError, ValueError) as exc:
            raise _Failed("error", f"arguments of tool {tool.name!r} are not JSON: {exc}") from exc
        if (err := best_match(self._validators[tool.name].iter_errors(args))) is not None:
            where = "/".join(str(p) for p in err.absolute_path)
            at = f" at '{where}'" if where else ""
            raise _Failed(
                "error",
                f"arguments of tool {tool.name!r} do not match its schema{at}: {err.message}",
            )
        return args

    async def _wait_for_budget(self, tool: ToolConfig, deadline: float) -> float:
        """Take one call from the tool's ``rpm`` bucket, sleeping until it allows one; the
        seconds waited. A wait that would end past ``deadline`` is not started."""
        if tool.rpm is None or self.reserve is None:
            return 0.0
        waited = 0.0
        while wait := await self.reserve(
            f"tool:{tool.name}", 1.0, tool.rpm / 60, tool.rpm, self.clock()
        ):
            if time.monotonic() + wait > deadline:
                raise _Failed(
                    "timeout",
                    f"tool {tool.name!r} is over its rate limit ({tool.rpm}/min): the next call "
                    f"is allowed in {wait:.2f} s, past its timeout; not called",
                )
            await self.sleep(wait)
            waited += wait
        return waited

    # -- the call --------------------------------------------------------------------------------

    async def _run(
        self, tool: ToolConfig, args: dict[str, Any], deadline: float, budget: float
    ) -> Any:
        """The tool's result; ``deadline`` (monotonic) ends it, ``budget`` is for the message."""
        if tool.http is not None:
            call = self._http_call(tool.name, tool.http, args)
        else:
            call = self._entry_call(tool, args)
        try:
            result = await asyncio.wait_for(call, max(deadline - time.monotonic(), 0.0))
        except TimeoutError:
            raise _Failed(
                "timeout", f"tool {tool.name!r} did not answer within {budget:g} s"
            ) from None
        except _Failed:
            raise
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            raise _Failed("error", f"tool {tool.name!r} could not be called: {reason}") from exc
        except Exception as exc:  # a tool's own failure is an outcome for the model to see
            raise _Failed(
                "error", f"tool {tool.name!r} raised {type(exc).__name__}: {exc}"
            ) from exc
        return _json_value(tool.name, result)

    async def _http_call(self, name: str, http: HttpToolConfig, args: dict[str, Any]) -> Any:
        if self._http is None:
            self._http = httpx.AsyncClient()
        get = http.method == "GET"
        query = {k: v if isinstance(v, str) else json.dumps(v) for k, v in args.items()}
        # The step's own timeout bounds the call: httpx's default (5 s) must not cut it first.
        response = await self._http.request(
            http.method,
            http.url,
            params=query if get else None,
            json=None if get else args,
            headers=http.headers,
            timeout=None,
        )
        if not response.is_success:
            body = response.text[:_ERROR_BODY]
            raise _Failed("error", f"tool {name!r} answered HTTP {response.status_code}: {body}")
        if "json" in response.headers.get("content-type", ""):
            try:
                return response.json()
            except ValueError as exc:
                raise _Failed("error", f"tool {name!r} answered invalid JSON: {exc}") from exc
        return response.text

    async def _entry_call(self, tool: ToolConfig, args: dict[str, Any]) -> Any:
        try:
            func = resolve_entry_point(tool.entry_point or "")
        except ValueError as exc:
            raise _Failed("error", str(exc)) from exc
        if inspect.iscoroutinefunction(func):
            return await func(**args)
        # A plain function runs on a thread so it does not stall the loop; on a timeout the
        # thread cannot be stopped and finishes on its own, its result dropped.
        return await asyncio.to_thread(func, **args)


def _json_value(name: str, value: Any) -> Any:
    """``value`` when it is plain JSON (it goes to the model and into the job record)."""
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise _Failed("error", f"tool {name!r} returned a value that is not JSON: {exc}") from exc
    return value
