"""Constrained output and log-probabilities for the llama.cpp chat provider.

``response_format`` (``json_object``, ``json_schema``) and forced tool calls (``tool_choice``
``"required"`` or a named function) become one GBNF grammar, which llama.cpp's grammar sampler
enforces token by token in the request's own sampler chain. ``logprobs`` are read by
:class:`LogprobRecorder`, a sampler that samples nothing: at the head of the chain it sees the
raw logits of every step and the token the chain accepted.

Nothing here touches a llama.cpp context; :mod:`genspool.providers.llama` builds (and frees)
each sequence's chain. :func:`check_body` runs the same conversions in the API process, through
the model card, so a schema llama.cpp cannot follow is refused at the door with a 400.
"""

from __future__ import annotations

import ctypes
import json
import math
from typing import Any

import llama_cpp
from llama_cpp.llama_grammar import json_schema_to_gbnf

from genspool._ids import random_hex
from genspool.exceptions import InvalidRequest

__all__ = [
    "LLAMA_FEATURES",
    "LogprobRecorder",
    "check_body",
    "forces_tool_call",
    "logprobs_of",
    "output_grammar",
    "tool_message",
    "top_logprobs_of",
]

#: What the model card declares beyond the basic parameters (see genspool.api.validation).
LLAMA_FEATURES = frozenset(
    {
        "response_format:text",
        "response_format:json_object",
        "response_format:json_schema",
        "tools",
        "tool_choice:none",
        "tool_choice:required",
        "tool_choice:function",
        "parallel_tool_calls",
        "logprobs",
        "top_logprobs",
    }
)
#: OpenAI's own bound on top_logprobs.
MAX_TOP_LOGPROBS = 20
_ANY_OBJECT: dict[str, Any] = {"type": "object"}


# -- grammars -------------------------------------------------------------------------------------


def check_body(url: str, body: dict[str, Any]) -> None:
    """Raise the :class:`InvalidRequest` the worker would: the door check of the model card."""
    output_grammar(body)
    top_logprobs_of(body)


def output_grammar(body: dict[str, Any]) -> str | None:
    """The GBNF grammar the answer must match; None for free text."""
    call = _forced_call(body)
    if call is not None:
        return _gbnf(call, "tools")
    fmt = body.get("response_format")
    if fmt is None:
        return None
    kind = fmt.get("type") if isinstance(fmt, dict) else None
    if kind == "text":
        return None
    if kind == "json_object":
        return _gbnf(_ANY_OBJECT, "response_format")
    if kind == "json_schema":
        spec = fmt.get("json_schema")
        schema = spec.get("schema", _ANY_OBJECT) if isinstance(spec, dict) else None
        if not isinstance(schema, dict):
            raise InvalidRequest(
                "response_format.json_schema: must be {'name': ..., 'schema': {...}}",
                param="response_format",
            )
        return _gbnf(schema, "response_format")
    raise InvalidRequest(
        f"response_format.type: {kind!r} is not supported; use text, json_object or json_schema",
        param="response_format",
    )


def _gbnf(schema: dict[str, Any], param: str) -> str:
    try:
        grammar: str = json_schema_to_gbnf(json.dumps(schema), ["name", "arguments"])
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise InvalidRequest(
            f"{param}: llama.cpp cannot follow this JSON schema ({exc!r}); simplify it",
            param=param,
        ) from exc
    return grammar


def _tools(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The request's functions: name -> JSON schema of its arguments."""
    tools = body.get("tools") or []
    if not isinstance(tools, list):
        raise InvalidRequest("tools: must be a list of functions", param="tools")
    out = {}
    for i, tool in enumerate(tools):
        fn = tool.get("function") if isinstance(tool, dict) else None
        name = fn.get("name") if isinstance(fn, dict) else None
        params = fn.get("parameters", _ANY_OBJECT) if isinstance(fn, dict) else None
        if not isinstance(name, str) or not name or tool.get("type") != "function":
            raise InvalidRequest(
                f"tools[{i}]: must be {{'type': 'function', 'function': {{'name': ...}}}}",
                param="tools",
            )
        if not isinstance(params, dict):
            raise InvalidRequest(
                f"tools[{i}].function.parameters: not a JSON schema", param="tools"
            )
        out[name] = params
    return out


def _forced_call(body: dict[str, Any]) -> dict[str, Any] | None:
    """The JSON schema of the tool call the answer must be; None when no call is forced."""
    tools, choice = _tools(body), body.get("tool_choice")
    if choice == "none" or (choice is None and not tools):
        return None
    if not tools:
        raise InvalidRequest("tool_choice: given without tools", param="tool_choice")
    if choice == "required":
        return {"anyOf": [_call_schema(name, args) for name, args in tools.items()]}
    fn = choice.get("function") if isinstance(choice, dict) else None
    name = fn.get("name") if isinstance(fn, dict) else None
    if name in tools:
        return _call_schema(name, tools[name])
    if isinstance(name, str):
        raise InvalidRequest(f"tool_choice: no tool is named {name!r}", param="tool_choice")
    raise InvalidRequest(
        "tool_choice: this model calls a tool only when told to: 'required', 'none' or"
        " {'type': 'function', 'function': {'name': ...}} ('auto' is the default with tools)",
        param="tool_choice",
    )


def _call_schema(name: str, arguments: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"name": {"const": name}, "arguments": arguments},
        "required": ["name", "arguments"],
        "additionalProperties": False,
    }


def forces_tool_call(body: dict[str, Any]) -> bool:
    return _forced_call(body) is not None


def tool_message(text: str) -> dict[str, Any] | None:
    """The assistant message of a forced tool call in the OpenAI shape; None when the text is
    not a whole call (cut off by max_tokens)."""
    try:
        call = json.loads(text)
        function = {"name": str(call["name"]), "arguments": json.dumps(call["arguments"])}
    except (ValueError, KeyError, TypeError):
        return None
    return {
        "role": "assistant",
        "content": None,
        "refusal": None,
        "tool_calls": [{"id": f"call_{random_hex(12)}", "type": "function", "function": function}],
    }


# -- log-probabilities ----------------------------------------------------------------------------


def top_logprobs_of(body: dict[str, Any]) -> int | None:
    """None without ``logprobs``; else how many alternatives each token lists."""
    top = body.get("top_logprobs")
    if top is not None and (
        isinstance(top, bool) or not isinstance(top, int) or not 0 <= top <= MAX_TOP_LOGPROBS
    ):
        raise InvalidRequest(
            f"top_logprobs: must be an integer from 0 to {MAX_TOP_LOGPROBS}", param="top_logprobs"
        )
    if not body.get("logprobs"):
        if top:
            raise InvalidRequest("top_logprobs: needs logprobs: true", param="top_logprobs")
        return None
    return top or 0


#: One step: the accepted token, its log-probability, and the likeliest tokens with theirs.
Step = tuple[int, float, list[tuple[int, float]]]


class LogprobRecorder:
    """A sampler that changes nothing and records each accepted token's log-probability under
    the model's raw logits (and the ``top`` likeliest tokens), for one sequence.

    llama.cpp allocates the sampler (``llama_sampler_init``) and frees it with the chain; the
    interface and the callbacks it points at live as long as this object, which the request's
    parameters keep until its answer is built.
    """

    def __init__(self, top: int) -> None:
        self.top, self.steps = top, list[Step]()
        self._ids: Any = None
        self._logprobs: Any = None
        self._name = ctypes.create_string_buffer(b"genspool-logprobs")
        name = ctypes.CFUNCTYPE(ctypes.c_void_p, ctypes.c_void_p)(self._name_of)
        self._callbacks = (
            llama_cpp.llama_sampler_i_apply(self._apply),
            llama_cpp.llama_sampler_i_accept(self._accept),
            name,
        )
        self._iface = llama_cpp.llama_sampler_i()
        self._iface.apply, self._iface.accept = self._callbacks[:2]
        self._iface.name = ctypes.cast(name, llama_cpp.llama_sampler_i_name)

    def sampler(self) -> Any:
        """A new llama.cpp sampler for a chain (which then owns and frees it)."""
        return llama_cpp.llama_sampler_init(ctypes.pointer(self._iface), None)

    def _name_of(self, _: Any) -> int:
        return ctypes.addressof(self._name)

    def _apply(self, _: Any, cur_p: Any) -> None:
        import numpy as np  # only requests that ask for logprobs pay for the import

        token_data = np.dtype([("id", "<i4"), ("logit", "<f4"), ("p", "<f4")])
        arr = cur_p.contents
        address = ctypes.cast(arr.data, ctypes.c_void_p).value
        raw = (ctypes.c_char * (arr.size * token_data.itemsize)).from_address(address or 0)
        data = np.frombuffer(raw, token_data)
        logits = data["logit"].astype(np.float64)
        peak = float(logits.max())
        self._ids = data["id"].copy()
        self._logprobs = logits - (peak + math.log(float(np.exp(logits - peak).sum())))

    def _accept(self, _: Any, token: int) -> None:
        import numpy as np

        ids, logprobs = self._ids, self._logprobs
        if ids is None:
            return
        at = token if token < len(ids) and ids[token] == token else int(np.argmax(ids == token))
        top: list[tuple[int, float]] = []
        if self.top:
            best = np.argpartition(-logprobs, self.top)[: self.top]
            best = best[np.argsort(-logprobs[best])]
            top = [(int(ids[i]), float(logprobs[i])) for i in best]
        self.steps.append((token, float(logprobs[at]), top))
        self._ids = self._logprobs = None


def logprobs_of(steps: list[Step], piece: Any) -> dict[str, Any]:
    """The ``choices[].logprobs`` object of OpenAI; ``piece(token) -> bytes``."""

    def entry(token: int, logprob: float) -> dict[str, Any]:
        data = bytes(piece(token))
        return {
            "token": data.decode(errors="replace"),
            "logprob": logprob,
            "bytes": list(data),
        }

    content = [
        {**entry(token, lp), "top_logprobs": [entry(t, p) for t, p in top]}
        for token, lp, top in steps
    ]
    return {"content": content, "refusal": None}
