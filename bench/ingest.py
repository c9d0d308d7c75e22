"""RAG ingest: genspool's throughput against the raw MiniLM rate and two peers, and the cost of
ingesting an unchanged corpus again.

    python bench/ingest.py [--docs 200] [--repeats 3] [--seed 7] [--skip-peers]

    peers: pip install llama-index-core langchain-core langchain-text-splitters

A corpus of ``--docs`` Markdown and text files (2-4 KB of generated English-like sentences,
headings in the Markdown) is written to a temporary directory. ``--repeats`` rounds each
measure everything below one after the other; every figure is a median over the rounds, and
every ratio the median of the ratios taken within each round, so the load of this shared
2-core machine weighs on both sides of a ratio alike. CPU seconds are shown beside wall
seconds: they move far less with the load of other processes.

* **raw MiniLM**: the bundled embedder (``OnnxEmbeddingProvider.embed``: all texts sorted by
  length, sub-batches of 32, onnxruntime in this process) on exactly the chunk texts genspool
  makes: its extractor, chunker and tokenizer, at the sizes its ``auto`` strategy gives MiniLM
  (252/63 tokens: the 256-token window less a margin for special tokens; the count is checked
  against the server's). Steady state: the model is loaded and warmed up before the clock.
* **genspool ingest**: ``genspool serve`` on a fresh SQLite file serving only MiniLM, then
  ``genspool ingest DIR --store bench`` as a subprocess, timed from its start to its exit (all
  files completed). The CLI's start-up is inside the figure (the user waits for it); the
  server's start-up and model load are not (one embedding call warms it first, as a running
  server would be). CPU: the server's and the CLI's. Target: >= 0.85 of the raw chunks/s.
* **re-ingest**: the same command again into the same store: its time against the first
  ingest's (target <= 0.05) and the embedding jobs it made (``GET /v1/jobs?model=...``,
  expected 0). The CLI's start-up alone (``genspool stores list``) is printed beside it.
* **peers**, each with an adapter around the same embedder function, chunks of the same size in
  the same tokenizer's tokens, and embedding calls of 256 texts (the embedder sorts each call by
  length; LlamaIndex's default of 10 and LangChain's 100 pad more): LlamaIndex
  ``IngestionPipeline([SentenceSplitter, adapter], SimpleDocumentStore, SimpleVectorStore)``,
  re-run on the same pipeline; LangChain ``RecursiveCharacterTextSplitter`` then ``index(...,
  InMemoryRecordManager, InMemoryVectorStore, cleanup="incremental")``, the split inside both
  runs (``index()`` needs the chunks). Both read the files themselves (``source`` metadata,
  kept out of the embedded text) and keep everything in memory, where genspool writes chunks,
  vectors and its embedding cache to SQLite. Each splitter makes its own number of chunks, so
  genspool is judged against a peer by the time each takes for the same corpus (target: 1.5x
  as fast); the ratio of chunks/s is printed too.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import resource
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
from _common import serving

from genspool.config import ModelConfig
from genspool.providers.onnx_embed import OnnxEmbeddingProvider
from genspool.rag import chunking
from genspool.rag.documents import extract
from genspool.rag.tokenizers import tokenizer_of
from genspool.runtime.catalog import ModelCatalog

MODEL = "all-minilm-l6-v2"
#: What the server's ``auto`` chunking gives MiniLM: its window less 4, a quarter shared.
CHUNK, OVERLAP = 252, 63
#: Texts per embedding call of the peers (their defaults: LlamaIndex 10, LangChain 100).
PEER_BATCH = 256
MODELS_YAML = f"""bundled: false
models:
  - name: {MODEL}
    provider: onnx_embedding
    context_window: 256
    batching: {{max_batch_size: 256, max_wait_ms: 5, max_concurrency: 1}}
    limits: {{timeout_s: 120}}
"""

Embed = Callable[[Sequence[str]], list[list[float]]]

# -- the corpus --------------------------------------------------------------------------------

SUBJECTS = [
    "The river", "A quiet engineer", "Every library", "The old lighthouse", "Our garden",
    "The committee", "A migrating flock", "The night train", "This recipe", "The glacier",
    "A careful reader", "The harbour master", "Most volcanoes", "The orchestra", "A new bridge",
    "The village baker", "Each satellite", "The desert wind", "A patient teacher", "The market",
]  # fmt: skip
VERBS = [
    "carries", "measures", "remembers", "shelters", "reveals", "follows", "changes", "protects",
    "describes", "collects", "shapes", "records", "warms", "divides", "repairs", "explains",
]  # fmt: skip
OBJECTS = [
    "the stories of the valley", "a surprising amount of water", "the shape of the coastline",
    "several kinds of seeds", "the rhythm of the seasons", "an unusual pattern of light",
    "the weight of heavy cargo", "the names of forgotten streets", "a map of the stars",
    "the temperature of the soil", "every visitor's questions", "the sound of distant bells",
    "the cost of the repairs", "a careful list of tools", "the path of the morning tide",
]  # fmt: skip
ENDINGS = [
    "before the first frost arrives", "during the long summer evenings", "without much fuss",
    "when nobody is watching", "as the records of the town show", "for reasons still debated",
    "in spite of the steady rain", "after the market closes", "while the engines cool down",
    "because the old methods still work", "with remarkable precision", "every other week",
]  # fmt: skip
TOPICS = ["history", "weather", "transport", "cooking", "geology", "music", "farming", "trade"]


def sentence(rng: random.Random) -> str:
    words = [rng.choice(SUBJECTS), rng.choice(VERBS), rng.choice(OBJECTS)]
    if rng.random() < 0.7:
        words.append(rng.choice(ENDINGS))
    text = " ".join(words)
    if rng.random() < 0.3:
        text += f", and {rng.choice(SUBJECTS).lower()} {rng.choice(VERBS)} {rng.choice(OBJECTS)}"
    return text + rng.choice([".", ".", ".", "!", "?"])


def paragraph(rng: random.Random) -> str:
    return " ".join(sentence(rng) for _ in range(rng.randint(3, 7)))


def document(rng: random.Random, n: int, markdown: bool) -> str:
    """One document of 2-4 KB: a title and sections (Markdown), or plain paragraphs."""
    size = rng.randint(2048, 4096)
    topic = rng.choice(TOPICS)
    parts = [f"# Notes on {topic}, part {n}" if markdown else f"Notes on {topic}, part {n}"]
    while sum(len(p) + 2 for p in parts) < size:
        if markdown and rng.random() < 0.25:
            parts.append(f"## {rng.choice(SUBJECTS)} and {topic}")
        parts.append(paragraph(rng))
    return "\n\n".join(parts) + "\n"


def write_corpus(root: Path, docs: int, seed: int) -> Path:
    """Two Markdown files in three, the rest text, spread over a folder per topic."""
    rng = random.Random(seed)
    for n in range(docs):
        markdown = n % 3 != 2
        folder = root / TOPICS[n % len(TOPICS)]
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"doc{n:04d}.{'md' if markdown else 'txt'}").write_text(
            document(rng, n, markdown)
        )
    return root


def corpus_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


def read_sources(root: Path) -> list[tuple[str, str]]:
    return [(p.relative_to(root).as_posix(), p.read_text()) for p in corpus_files(root)]


def minilm_tokenizer() -> Any:
    """The ``tokenizers.Tokenizer`` the server cuts MiniLM stores' chunks by."""
    config = ModelConfig(name=MODEL, provider="onnx_embedding", context_window=256)
    return tokenizer_of(ModelCatalog([config]), MODEL)


def token_counter() -> Callable[[str], int]:
    tok = minilm_tokenizer()
    return lambda text: len(tok.encode(text, add_special_tokens=False).ids)


def genspool_chunks(root: Path) -> list[str]:
    """The chunk texts genspool makes of the corpus: its extractor, its chunker, its tokenizer."""
    tok = minilm_tokenizer()
    texts: list[str] = []
    for path in corpus_files(root):
        doc = extract(path.read_bytes(), path.name)
        texts.extend(c.text for c in chunking.chunk(doc, tok, CHUNK, OVERLAP))
    return texts


# -- measurements ------------------------------------------------------------------------------


@dataclass
class Run:
    """One ingest: wall and CPU seconds, chunks and their tokens, and the re-run of it."""

    seconds: float
    cpu: float
    chunks: int
    tokens: int
    again_s: float = float("nan")
    again_cpu: float = float("nan")
    extra: dict[str, Any] = field(default_factory=dict)


def own_cpu() -> float:
    """CPU seconds of this process (onnxruntime's threads included) and its ended children."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def proc_cpu(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def child_pid() -> int:
    """The one running child of this process: ``genspool serve`` (the CLI runs have ended)."""
    mine = str(os.getpid())
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if stat.read().rpartition(")")[2].split()[1] == mine:
                        return int(entry)
            except OSError:
                continue
    raise SystemExit("genspool serve: its process was not found")


def raw_rate(provider: OnnxEmbeddingProvider, texts: list[str], tokens: int) -> Run:
    start, cpu = time.perf_counter(), own_cpu()
    provider.embed(texts)
    return Run(time.perf_counter() - start, own_cpu() - cpu, len(texts), tokens)


def embedding_jobs(url: str) -> tuple[int, int]:
    """The server's embedding jobs so far and the texts they carried."""
    jobs = texts = 0
    after: str | None = None
    with httpx.Client(base_url=url, timeout=60) as client:
        while True:
            params: dict[str, Any] = {"model": MODEL, "include": "request", "limit": 1000}
            page = client.get("/v1/jobs", params=params | ({"after": after} if after else {}))
            page.raise_for_status()
            body = page.json()
            for job in body["data"]:
                given = job["request"]["body"]["input"]
                jobs, texts = jobs + 1, texts + (1 if isinstance(given, str) else len(given))
            after = body.get("next_cursor") or (body["data"][-1]["id"] if body["data"] else None)
            if not body.get("has_more") or after is None:
                return jobs, texts


def cli(url: str, *args: str) -> tuple[float, float, str, list[str]]:
    """``genspool ARGS`` against ``url``: its wall time, CPU time, stdout and failed sources;
    a run with failed sources is measured still (its files did end)."""
    env = {**os.environ, "GENSPOOL_API_URL": url}
    start, cpu = time.perf_counter(), own_cpu()
    done = subprocess.run(
        [sys.executable, "-m", "genspool", *args], env=env, capture_output=True, text=True
    )
    took, used = time.perf_counter() - start, own_cpu() - cpu
    failed = [line for line in done.stderr.splitlines() if line.startswith("failed: ")]
    if done.returncode != 0 and not done.stdout.strip():
        raise SystemExit(f"genspool {' '.join(args)} failed:\n{done.stderr[-2000:]}")
    return took, used, done.stdout, failed


def genspool_run(root: Path, _embed: Embed) -> Run:
    """A fresh server; the directory ingested, then ingested again unchanged."""
    with serving(MODELS_YAML) as (url, db):
        server = child_pid()
        httpx.post(f"{url}/v1/embeddings", json={"model": MODEL, "input": "warm"}, timeout=120)
        jobs0, texts0 = embedding_jobs(url)
        cpu0 = proc_cpu(server)
        first_s, first_cpu, out, failed = cli(url, "ingest", str(root), "--store", "bench")
        cpu1 = proc_cpu(server)
        first = json.loads(out.strip().splitlines()[-1])
        jobs1, texts1 = embedding_jobs(url)
        again_s, again_cpu, out, _failed = cli(url, "ingest", str(root), "--store", "bench")
        cpu2 = proc_cpu(server)
        again = json.loads(out.strip().splitlines()[-1])
        jobs2, texts2 = embedding_jobs(url)
        startup_s = cli(url, "stores", "list")[0]
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
            chunks, tokens = con.execute("SELECT count(*), sum(tokens) FROM chunks").fetchone()
    return Run(first_s, first_cpu + cpu1 - cpu0, chunks, tokens, again_s,
               again_cpu + cpu2 - cpu1, {
        "jobs": jobs1 - jobs0, "texts": texts1 - texts0, "again_jobs": jobs2 - jobs1,
        "again_texts": texts2 - texts1, "added": first["num_added"],
        "skipped": again["num_skipped"], "cli_s": startup_s, "failed": failed,
    })  # fmt: skip


def llamaindex_run(root: Path, embed: Embed) -> Run:
    from llama_index.core import Document
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.core.ingestion import IngestionPipeline
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.core.schema import MetadataMode
    from llama_index.core.storage.docstore import SimpleDocumentStore
    from llama_index.core.vector_stores import SimpleVectorStore

    class MiniLM(BaseEmbedding):
        """The bundled MiniLM: the same function the other figures embed with."""

        def _get_query_embedding(self, query: str) -> list[float]:
            return embed([query])[0]

        async def _aget_query_embedding(self, query: str) -> list[float]:
            return embed([query])[0]

        def _get_text_embedding(self, text: str) -> list[float]:
            return embed([text])[0]

        def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
            return embed(texts)

    tok = minilm_tokenizer()
    splitter = SentenceSplitter(
        chunk_size=CHUNK, chunk_overlap=OVERLAP,
        tokenizer=lambda text: tok.encode(text, add_special_tokens=False).ids,
    )  # fmt: skip
    pipeline = IngestionPipeline(
        transformations=[splitter, MiniLM(model_name=MODEL, embed_batch_size=PEER_BATCH)],
        docstore=SimpleDocumentStore(),
        vector_store=SimpleVectorStore(),
    )

    def documents() -> list[Any]:
        return [
            Document(text=text, id_=source, metadata={"source": source},
                     excluded_embed_metadata_keys=["source"])
            for source, text in read_sources(root)
        ]  # fmt: skip

    start, cpu = time.perf_counter(), own_cpu()
    nodes = pipeline.run(documents=documents())
    first_s, first_cpu = time.perf_counter() - start, own_cpu() - cpu
    start, cpu = time.perf_counter(), own_cpu()
    again = pipeline.run(documents=documents())
    again_s, again_cpu = time.perf_counter() - start, own_cpu() - cpu
    count = token_counter()
    tokens = sum(count(n.get_content(metadata_mode=MetadataMode.EMBED)) for n in nodes)
    return Run(first_s, first_cpu, len(nodes), tokens, again_s, again_cpu,
               {"nodes made again": len(again)})  # fmt: skip


def langchain_run(root: Path, embed: Embed) -> Run:
    from langchain_core.documents import Document
    from langchain_core.embeddings import Embeddings
    from langchain_core.indexing import InMemoryRecordManager, index
    from langchain_core.vectorstores import InMemoryVectorStore
    from langchain_text_splitters import RecursiveCharacterTextSplitter

    class MiniLM(Embeddings):
        """The bundled MiniLM: the same function the other figures embed with."""

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return embed(texts)

        def embed_query(self, text: str) -> list[float]:
            return embed([text])[0]

    count = token_counter()
    splitter = RecursiveCharacterTextSplitter(
        chunk_size=CHUNK, chunk_overlap=OVERLAP, length_function=count
    )
    records = InMemoryRecordManager(namespace="bench")
    records.create_schema()
    store = InMemoryVectorStore(embedding=MiniLM())

    def ingest() -> tuple[list[Any], dict[str, int]]:
        docs = [Document(page_content=text, metadata={"source": source})
                for source, text in read_sources(root)]  # fmt: skip
        chunks = splitter.split_documents(docs)
        return chunks, cast(dict[str, int], index(
            chunks, records, store, batch_size=PEER_BATCH, cleanup="incremental",
            source_id_key="source", key_encoder="sha256",
        ))  # fmt: skip

    start, cpu = time.perf_counter(), own_cpu()
    chunks, _ = ingest()
    first_s, first_cpu = time.perf_counter() - start, own_cpu() - cpu
    start, cpu = time.perf_counter(), own_cpu()
    _, again = ingest()
    again_s, again_cpu = time.perf_counter() - start, own_cpu() - cpu
    tokens = sum(count(c.page_content) for c in chunks)
    return Run(first_s, first_cpu, len(chunks), tokens, again_s, again_cpu, again)


# -- the run -----------------------------------------------------------------------------------


def installed(module: str, pip: str) -> bool:
    if importlib.util.find_spec(module) is not None:
        return True
    print(f"skipped: {module} is not installed (pip install {pip})")
    return False


def median_run(runs: list[Run]) -> Run:
    """Each figure's median over the rounds (counts from the median round by wall time)."""

    def mid(name: str) -> float:
        return float(statistics.median(getattr(r, name) for r in runs))

    middle = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
    return Run(mid("seconds"), mid("cpu"), middle.chunks, middle.tokens, mid("again_s"),
               mid("again_cpu"), middle.extra)  # fmt: skip


def ratios(runs: dict[str, Run]) -> dict[str, tuple[float, float]]:
    """One round's ratios, wall and CPU: genspool's chunks/s over raw's, its re-ingest's
    seconds over its first ingest's, and each peer's seconds for the corpus over genspool's."""
    raw, ours = runs["raw"], runs["genspool"]
    found = {
        "genspool ingest": (
            ours.chunks / ours.seconds / (raw.chunks / raw.seconds),
            ours.chunks / ours.cpu / (raw.chunks / raw.cpu),
        ),
        "genspool re-ingest": (ours.again_s / ours.seconds, ours.again_cpu / ours.cpu),
    }
    for name, run in runs.items():
        if name not in ("raw", "genspool"):
            found[name] = (run.seconds / ours.seconds, run.cpu / ours.cpu)
            found[f"{name} chunks/s"] = (
                ours.chunks / ours.seconds / (run.chunks / run.seconds),
                ours.chunks / ours.cpu / (run.chunks / run.cpu),
            )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--skip-peers", action="store_true")
    args = parser.parse_args()
    runners: dict[str, Callable[[Path, Embed], Run]] = {"genspool": genspool_run}
    if not args.skip_peers:
        if installed("llama_index.core", "llama-index-core"):
            runners["LlamaIndex"] = llamaindex_run
        if installed("langchain_core", "langchain-core langchain-text-splitters"):
            runners["LangChain"] = langchain_run

    with tempfile.TemporaryDirectory(prefix="genspool-ingest-") as tmp:
        rounds = measure(write_corpus(Path(tmp), args.docs, args.seed), runners, args.repeats)
    report(rounds)


def measure(
    root: Path, runners: dict[str, Callable[[Path, Embed], Run]], repeats: int
) -> list[dict[str, Run]]:
    """``repeats`` rounds of the raw rate and each runner on the corpus at ``root``."""
    texts = genspool_chunks(root)
    tokens = sum(map(token_counter(), texts))
    files = corpus_files(root)
    size = sum(p.stat().st_size for p in files)
    print(f"{len(files)} documents, {size / 1024:.0f} KB, {len(texts)} genspool chunks of"
          f" {tokens / len(texts):.0f} tokens on average; load average"
          f" {os.getloadavg()[0]:.1f}", flush=True)  # fmt: skip
    provider = OnnxEmbeddingProvider(MODEL)
    provider.embed(texts[:64])  # load and warm the session: the raw rate is steady state

    def embed(batch: Sequence[str]) -> list[list[float]]:
        vectors, _ = provider.embed(list(batch))
        return cast(list[list[float]], vectors.tolist())

    rounds: list[dict[str, Run]] = []
    for round_no in range(repeats):
        runs = {"raw": raw_rate(provider, texts, tokens)}
        for name, run in runners.items():
            runs[name] = run(root, embed)
        rounds.append(runs)
        print_round(round_no + 1, runs)
    return rounds


def print_round(number: int, runs: dict[str, Run]) -> None:
    """A round's wall and CPU seconds, and what failed in genspool's ingest."""
    done = ", ".join(f"{k} {v.seconds:.1f} s ({v.cpu:.1f} CPU)" for k, v in runs.items())
    print(f"round {number}: {done}; load average {os.getloadavg()[0]:.1f}", flush=True)
    x = runs["genspool"].extra
    print(f"  genspool: {x['added']} files added in {x['jobs']} embedding jobs of {x['texts']}"
          f" texts, {runs['genspool'].chunks} chunks stored; re-ingest: {x['skipped']} skipped,"
          f" {x['again_jobs']} embedding jobs of {x['again_texts']} texts; CLI start-up alone"
          f" (stores list) {x['cli_s']:.2f} s", flush=True)  # fmt: skip
    for line in x["failed"]:
        print(f"  genspool first ingest {line}", flush=True)
    for name, run in runs.items():
        if name not in ("raw", "genspool"):
            print(f"  {name} re-ingest: {run.extra}", flush=True)


@dataclass(frozen=True)
class Row:
    """A line of the table: ``wall`` is the ratio judged against ``target``."""

    name: str
    seconds: float | None
    cpu: float | None
    run: Run | None = None  # its counts, for a first ingest
    ratio: tuple[float, float] | None = None
    target: str = ""

    def verdict(self) -> str:
        if self.ratio is None or not self.target:
            return ""
        sign, bound = self.target.split()[:2]
        wall = self.ratio[0]
        return (
            "met"
            if (wall <= float(bound) if sign == "<=" else wall >= float(bound))
            else ("missed")
        )

    def line(self) -> str:
        r = self.run
        counts = " " * 26 if r is None else (
            f"{r.chunks:7d}{r.tokens / r.chunks:9.0f}{r.chunks / r.seconds:10.1f}"
        )  # fmt: skip
        times = "".join(f"{x:8.2f}" if x is not None else " " * 8 for x in (self.seconds, self.cpu))
        ratio = " " * 18 if self.ratio is None else "".join(f"{x:8.2f}x" for x in self.ratio)
        return f"{self.name:<26}{times}{counts}{ratio}  {self.target:<24}{self.verdict()}"


def report(rounds: list[dict[str, Run]]) -> None:
    """Medians of each figure, and of each ratio taken within its round."""
    runs = {name: median_run([r[name] for r in rounds]) for name in rounds[0]}
    per_round = [ratios(r) for r in rounds]
    ratio = {
        k: (statistics.median(p[k][0] for p in per_round),
            statistics.median(p[k][1] for p in per_round))
        for k in per_round[0]
    }  # fmt: skip
    raw, ours = runs["raw"], runs["genspool"]
    if ours.chunks != raw.chunks:
        print(f"note: the server made {ours.chunks} chunks, this script's chunker {raw.chunks}")
    rows = [
        Row("raw MiniLM", raw.seconds, raw.cpu, raw),
        Row("genspool ingest", ours.seconds, ours.cpu, ours, ratio["genspool ingest"],
            ">= 0.85 x raw chunks/s"),
        Row("genspool re-ingest", ours.again_s, ours.again_cpu, None,
            ratio["genspool re-ingest"], "<= 0.05 x first ingest"),
    ]  # fmt: skip
    for name, run in runs.items():
        if name not in ("raw", "genspool"):
            rows += [
                Row(name, run.seconds, run.cpu, run, ratio[name], ">= 1.5 x its time"),
                Row("  by chunks/s instead", None, None, None, ratio[f"{name} chunks/s"]),
                Row(f"{name} re-ingest", run.again_s, run.again_cpu),
            ]
    print(f"\nmedians of {len(rounds)} rounds: of each figure, and of each round's ratio. x wall,"
          " x CPU: genspool's throughput over the baseline's (peer: its seconds for the corpus"
          " over genspool's; re-ingest: seconds over the first ingest's)")  # fmt: skip
    print(f"{'':<26}{'wall s':>8}{'CPU s':>8}{'chunks':>7}{'tok/chk':>9}{'chunks/s':>10}"
          f"{'x wall':>9}{'x CPU':>9}  target")  # fmt: skip
    for row in rows:
        print(row.line())
    failed = sum(len(r["genspool"].extra["failed"]) for r in rounds)
    if failed:
        print(f"genspool: {failed} files failed over the {len(rounds)} rounds (listed above)")


if __name__ == "__main__":
    main()
