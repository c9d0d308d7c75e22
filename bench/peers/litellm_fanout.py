"""LiteLLM peer of the fan-out bench: its SDK's own fan-out helpers, pointed at the fault server.

* ``all``: ``litellm.batch_completion_models_all_responses(models=[...])`` — a thread per model,
  every response collected.
* ``first``: ``litellm.batch_completion_models(models=[...])``, documented as returning "as soon
  as one of the models responds". Its code (1.x) walks the futures in the order of ``models``
  and leaves a ``with ThreadPoolExecutor`` block, whose exit waits for every call; nothing is
  cancelled. The models are listed fastest first, its best case: the answer it returns is then
  the fastest one's.

Run with the LiteLLM venv's python: ``python litellm_fanout.py --fault URL --models a,b``
(the line protocol of ``_fanout_common``). ``LITELLM_LOCAL_MODEL_COST_MAP`` keeps it from
fetching its price list at import.
"""

from __future__ import annotations

import os

os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_LOG", "ERROR")

import litellm  # after the environment it reads at import
from _fanout_common import parse_args, serve_commands

litellm.telemetry = False
litellm.suppress_debug_info = True


def main() -> None:
    args = parse_args()
    models = args.models.split(",")
    base = args.fault + "/v1"

    def run(strategy: str, tag: str) -> str:
        names = [f"openai/{m}" for m in models]
        # One ``user`` for all: the SDK sends the same kwargs to every model. The harness
        # tells the calls apart by their arrival order, as each model has its own latency.
        kwargs = {"api_base": base, "api_key": "none", "user": tag, "timeout": 30}
        messages = [{"role": "user", "content": tag}]
        if strategy == "all":
            answers = litellm.batch_completion_models_all_responses(
                models=names, messages=messages, **kwargs
            )
            return f"{len(answers)} answers"
        if strategy == "first":
            answer = litellm.batch_completion_models(models=names, messages=messages, **kwargs)
            return f"winner {answer.model if answer is not None else None}"
        raise ValueError(f"unknown strategy {strategy!r}")

    run("all", "warm-up")  # the SDK's lazy imports and client caches, once
    serve_commands(run)


if __name__ == "__main__":
    main()
