"""Batched generation: 16 short chat jobs submitted at once to the queue and run by a worker
(which leases them as one batch and decodes them together), and the same 16 requests handed to
the provider directly as one batch, against the same prompts generated one after another by
llama_cpp.Llama.create_chat_completion on the same weights file, in the same process.

    python bench/generation.py [--requests 16] [--max-tokens 48] [--runs 3] [--threads N]

Output tokens per second (completion tokens / wall time, prefill included) of each, medians of
``--runs`` repetitions. Target: the queued jobs reach at least 1.5x the direct sequential rate
(never below 0.9x).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import llama_cpp
from _common import rss_mb, running

from genspool.config import ModelConfig
from genspool.core.job import Job
from genspool.core.queue import Queue
from genspool.providers.base import CHAT, Request
from genspool.providers.llama import LlamaChatProvider

MODEL = "smollm2-135m-instruct"

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about rain.",
    "Give me three tips for sleeping better.",
    "Explain photosynthesis in two sentences.",
    "What is 17 times 23?",
    "Name a famous painter and one of their works.",
    "Why is the sky blue?",
    "Suggest a name for a grey cat.",
    "How do airplanes stay in the air?",
    "Translate 'good morning' into Spanish.",
    "What does a compiler do?",
    "Write a limerick about a programmer.",
    "List four planets of the solar system.",
    "What is the boiling point of water?",
    "Describe the water cycle briefly.",
    "Give me a quick recipe for pancakes.",
]


def messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


async def run_provider(
    provider: LlamaChatProvider, prompts: list[str], max_tokens: int
) -> tuple[int, float]:
    """All prompts as one batch through the provider: (completion tokens, seconds)."""
    batch = [Request(CHAT, _body(p, max_tokens)) for p in prompts]
    start = time.perf_counter()
    results = await provider.handle(batch)
    seconds = time.perf_counter() - start
    tokens = 0
    for r in results:
        if not isinstance(r, dict):
            raise r
        tokens += r["usage"]["completion_tokens"]
    return tokens, seconds


async def run_queued(queue: Queue, prompts: list[str], max_tokens: int) -> tuple[int, float]:
    """All prompts as separate jobs through the queue: (completion tokens, seconds)."""
    jobs = [
        Job(url=CHAT, model=MODEL, body=_body(p, max_tokens) | {"model": MODEL}) for p in prompts
    ]
    start = time.perf_counter()
    await queue.submit_many(jobs)
    done = [await queue.wait(j.id, timeout=600) for j in jobs]
    seconds = time.perf_counter() - start
    tokens = 0
    for job in done:
        if job.result is None:
            raise RuntimeError(f"job {job.id} ended {job.status}: {job.error}")
        tokens += job.result["body"]["usage"]["completion_tokens"]
    return tokens, seconds


def _body(prompt: str, max_tokens: int) -> dict[str, Any]:
    return {"messages": messages(prompt), "max_tokens": max_tokens, "temperature": 0}


def run_direct(llm: llama_cpp.Llama, prompts: list[str], max_tokens: int) -> tuple[int, float]:
    """The prompts one after another with the high-level API: (completion tokens, seconds)."""
    tokens = 0
    start = time.perf_counter()
    for p in prompts:
        msgs: Any = messages(p)
        out: Any = llm.create_chat_completion(msgs, max_tokens=max_tokens, temperature=0)
        tokens += out["usage"]["completion_tokens"]
    return tokens, time.perf_counter() - start


def _model_params_like_the_provider() -> Any:
    params = _default_model_params()
    params.use_extra_bufts = False  # as genspool.providers.llama._load_model does
    return params


_default_model_params = llama_cpp.llama_cpp.llama_model_default_params


def direct_model(path: Path, threads: int) -> llama_cpp.Llama:
    # Single-sequence defaults, with the provider's thread count, attention kernel and model
    # parameters, so the ratio measures batching and nothing else. Llama() has no argument
    # for use_extra_bufts, hence the substituted default.
    llama_cpp.llama_cpp.llama_model_default_params = _model_params_like_the_provider
    return llama_cpp.Llama(
        str(path),
        n_ctx=2048,
        n_threads=threads,
        n_threads_batch=threads,
        flash_attn=True,
        verbose=False,
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    prompts = (PROMPTS * (args.requests // len(PROMPTS) + 1))[: args.requests]

    cfg = ModelConfig(
        name=MODEL,
        provider="llama_cpp",
        batching={"max_batch_size": args.requests, "max_wait_ms": 50},
        options={"threads": args.threads},
    )
    # The worker serves its own copy of the model; this one is called directly.
    provider = LlamaChatProvider(MODEL, max_batch_size=args.requests, threads=args.threads)
    await provider.load()
    assert provider.weights_path is not None
    async with running([cfg]) as (queue, _):
        print(
            f"provider loaded: {provider.weights_path.name}, "
            f"{provider.threads} threads, RSS {rss_mb():.0f} MB"
        )
        llm = direct_model(provider.weights_path, provider.threads)
        await run_provider(provider, prompts[:2], 4)  # warm-up: first-call allocations
        run_direct(llm, prompts[:1], 4)
        rates: dict[str, list[float]] = {"queued": [], "provider": [], "direct": []}
        for i in range(args.runs):
            runs = {
                "queued": await run_queued(queue, prompts, args.max_tokens),
                "provider": await run_provider(provider, prompts, args.max_tokens),
                "direct": run_direct(llm, prompts, args.max_tokens),
            }
            for name, (tokens, seconds) in runs.items():
                rates[name].append(tokens / seconds)
            print(f"run {i + 1}: " + "; ".join(
                f"{name} {t} tok in {s:.2f} s = {t / s:.1f} tok/s"
                for name, (t, s) in runs.items()
            ))  # fmt: skip

    await provider.aclose()
    q, b, d = (statistics.median(rates[k]) for k in ("queued", "provider", "direct"))
    print(f"\n{args.requests} requests, max_tokens {args.max_tokens}, medians of {args.runs}:")
    print(f"  {args.requests} queued jobs:        {q:7.1f} output tok/s")
    print(f"  provider, one batch:     {b:7.1f} output tok/s")
    print(f"  direct, one at a time:   {d:7.1f} output tok/s")
    print(f"  ratio queued/direct:     {q / d:7.2f}x  (target >= 1.5x, never below 0.9x)")


if __name__ == "__main__":
    asyncio.run(main())
