"""Batched generation: 16 short chat requests decoded together by LlamaChatProvider, against
the same prompts generated one after another by llama_cpp.Llama.create_chat_completion on the
same weights file, in the same process.

    python bench/generation.py [--requests 16] [--max-tokens 48] [--runs 3] [--threads N]

Output tokens per second (completion tokens / wall time, prefill included) of each, medians of
``--runs`` repetitions. Target: the provider is at least 1.5x the direct rate (never below 0.9x).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from pathlib import Path
from typing import Any

import llama_cpp

from genspool.providers.base import CHAT, Request
from genspool.providers.llama import LlamaChatProvider

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
    batch = [
        Request(CHAT, {"messages": messages(p), "max_tokens": max_tokens, "temperature": 0})
        for p in prompts
    ]
    start = time.perf_counter()
    results = await provider.handle(batch)
    seconds = time.perf_counter() - start
    tokens = 0
    for r in results:
        if not isinstance(r, dict):
            raise r
        tokens += r["usage"]["completion_tokens"]
    return tokens, seconds


def run_direct(llm: llama_cpp.Llama, prompts: list[str], max_tokens: int) -> tuple[int, float]:
    """The prompts one after another with the high-level API: (completion tokens, seconds)."""
    tokens = 0
    start = time.perf_counter()
    for p in prompts:
        msgs: Any = messages(p)
        out: Any = llm.create_chat_completion(msgs, max_tokens=max_tokens, temperature=0)
        tokens += out["usage"]["completion_tokens"]
    return tokens, time.perf_counter() - start


def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def direct_model(path: Path, threads: int) -> llama_cpp.Llama:
    # Single-sequence defaults, with the provider's thread count and attention kernel so the
    # ratio measures batching and nothing else.
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

    provider = LlamaChatProvider(
        "smollm2-135m-instruct", max_batch_size=args.requests, threads=args.threads
    )
    await provider.load()
    print(
        f"provider loaded: {provider.weights_path.name if provider.weights_path else '?'}, "
        f"{provider.threads} threads, RSS {rss_mb():.0f} MB"
    )
    assert provider.weights_path is not None
    llm = direct_model(provider.weights_path, provider.threads)
    await run_provider(provider, prompts[:2], 4)  # warm-up: first-call allocations
    run_direct(llm, prompts[:1], 4)

    batched, direct = [], []
    for i in range(args.runs):
        tokens, seconds = await run_provider(provider, prompts, args.max_tokens)
        batched.append(tokens / seconds)
        d_tokens, d_seconds = run_direct(llm, prompts, args.max_tokens)
        direct.append(d_tokens / d_seconds)
        print(
            f"run {i + 1}: provider {tokens} tok in {seconds:.2f} s = {batched[-1]:.1f} tok/s; "
            f"direct {d_tokens} tok in {d_seconds:.2f} s = {direct[-1]:.1f} tok/s"
        )
    await provider.aclose()

    b, d = statistics.median(batched), statistics.median(direct)
    print(f"\n{args.requests} requests, max_tokens {args.max_tokens}, medians of {args.runs}:")
    print(f"  provider (one batch):     {b:7.1f} output tok/s")
    print(f"  direct (one at a time):   {d:7.1f} output tok/s")
    print(f"  ratio:                    {b / d:7.2f}x  (target >= 1.5x)")


if __name__ == "__main__":
    asyncio.run(main())
