"""Demo server figures as JSON: cold start of `python app.py` with a cached index, first and steady query latency.

    python -m benchmarks.bench_ui [--corpus sample_corpus/corpus.jsonl] [--embedder mmembed-mini] [--queries 20]

1. warm-up: start app.py once and run one query, so the corpus index is built and cached on disk;
2. cold start: start app.py again and time until the page answers HTTP 200 (the issue's "< 10 s");
3. first query after that start (loads the model and the cached index), then `--queries` more through
   the named `/search` endpoint with gradio_client: p50/p95;
4. the same handler path in-process with the keyword fake embedder on a synthetic pool of `--fake-items`
   items (what the UI itself costs, without a model);
5. with --full-size-reranker: the handler path with the real embedder and a random-weight full-size
   SmolVLM-256M reranking the top 10;
6. --progressive (alone): through the page's event functions, when the first reranked cards are ready
   after the first column (the reranked column fills batch by batch; issue 13.2's "<= 1 s"), and when the
   final order is. `python -m benchmarks.bench_ui --progressive --queries 10 [--first-batch 2]`.
Timings depend on the machine's load; the JSON records the CPU count.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
QUERIES = ["a cat", "a dog running on the beach", "a red apple", "how does a violin make sound?", "a boat at sea",
           "a bird in a tree", "a city at night", "mountains with snow", "a plate of food", "a person riding a bike"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _start(env: dict[str, str], port: int) -> tuple[subprocess.Popen, float]:
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "app.py"], cwd=ROOT, env={**env, "GRADIO_SERVER_PORT": str(port)},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while time.perf_counter() - started < 120:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as response:
                if response.status == 200:
                    return process, time.perf_counter() - started
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("app.py did not answer within 120 s")


def _query(client, text: str, embedder: str, rerank: bool) -> tuple[float, dict]:
    started = time.perf_counter()
    out = client.predict(text=text, image=None, target="image", mode="natural", top_k=10, rerank_on=rerank,
                         embedder=embedder, reranker=os.environ.get("MMEMBED_RERANKER", "smolvlm-256m"), depth=10,
                         api_name="/search")
    return (time.perf_counter() - started) * 1000, out


def _registry(kind: str, backend, name: str | None = None):
    """A registry holding one built backend (what DemoState takes), under `name` or the backend's own name."""
    from mmembed.registry import Registry

    registry = Registry(kind)
    registry.register_instance(name or backend.name, backend)
    return registry


def _percentiles(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {"p50": round(statistics.median(ordered), 1),
            "p95": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))], 1), "n": len(ordered)}


def bench_server(corpus: Path, embedder: str, n_queries: int, rerank: bool) -> dict:
    from gradio_client import Client

    cache = tempfile.mkdtemp(prefix="mmembed-bench-ui-")
    env = {**os.environ, "MMEMBED_CORPUS": str(corpus), "MMEMBED_CACHE_DIR": cache, "MMEMBED_EMBEDDER": embedder}
    port = _free_port()
    process, _ = _start(env, port)  # warm-up: builds and caches the index
    try:
        _query(Client(f"http://127.0.0.1:{port}/", verbose=False), QUERIES[0], embedder, False)
    finally:
        process.terminate()
        process.wait(30)
    process, cold = _start(env, port)
    try:
        client = Client(f"http://127.0.0.1:{port}/", verbose=False)
        first_ms, first = _query(client, QUERIES[1], embedder, rerank)
        steady = [_query(client, f"{QUERIES[i % len(QUERIES)]} {i}", embedder, rerank)[0] for i in range(n_queries)]
    finally:
        process.terminate()
        process.wait(30)
    return {"cold_start_s": round(cold, 2), "first_query_ms": round(first_ms, 1), "query_ms": _percentiles(steady),
            "embedder_used": first["embedder"], "rerank": first["reranked"]["status"],
            "rerank_message": first["reranked"]["message"], "corpus_size": first["pool"]["size"]}


def bench_fakes(n_items: int, n_queries: int) -> dict:
    from mmembed.config import Settings
    from mmembed.corpus import Corpus
    from mmembed.testing import FakeReranker, KeywordEmbedder
    from mmembed.types import Item
    from mmembed.ui import handlers as h
    from mmembed.ui.state import DemoState

    words = ["cat", "dog", "apple", "violin", "boat", "bird", "city", "snow", "food", "bike"]
    items = tuple(Item(f"t{i}", text=f"{words[i % 10]} {words[(i * 7) % 10]} number {i}") for i in range(n_items))
    state = DemoState(Settings(cache_dir=Path(tempfile.mkdtemp()), embedder="kw", rerank_top_k=10),
                      corpus=Corpus(items, name="synthetic"),
                      embedders=_registry("embedder", KeywordEmbedder(words, 0.5, "kw")),
                      rerankers=_registry("reranker", FakeReranker(), "fake"))
    h.search(state, "cat", None, "text", "natural", 10, True, "kw", "fake")  # builds the index
    times = []
    for i in range(n_queries):
        started = time.perf_counter()
        h.search(state, f"{words[i % 10]} {i}", None, "text", "natural", 10, True, "kw", "fake")
        times.append((time.perf_counter() - started) * 1000)
    return {"items": n_items, "search_and_rerank_ms": _percentiles(times)}


def bench_full_size_reranker(corpus: Path, embedder: str, n_queries: int) -> dict:
    """In-process handler path with the real `embedder` and a full-size SmolVLM-256M architecture with random
    weights (built by bench_rerank.py; compute cost does not depend on weight values): top-10 rerank cost."""
    import torch

    from benchmarks.bench_rerank import _random_smolvlm
    from mmembed.config import Settings
    from mmembed.corpus import load_corpus
    from mmembed.embedders import EMBEDDERS
    from mmembed.ui import handlers as h
    from mmembed.ui.state import DemoState

    torch.set_num_threads(os.cpu_count() or 1)  # as the app runs: torch's default, all cores
    reranker = _random_smolvlm()
    state = DemoState(Settings(corpus=corpus, cache_dir=Path(tempfile.mkdtemp()), embedder=embedder),
                      corpus=load_corpus(corpus),
                      embedders=_registry("embedder", EMBEDDERS.get(embedder, device="cpu")),
                      rerankers=_registry("reranker", reranker))
    h.search(state, "warm up", None, "image", "natural", 10, True, embedder, reranker.name)  # index + first forward
    first, rerank = [], []
    for i in range(n_queries):
        out = h.search(state, f"{QUERIES[i % len(QUERIES)]} {i}", None, "image", "natural", 10, True, embedder,
                       reranker.name)
        first.append(out["timings_ms"]["first_stage"])
        rerank.append(out["timings_ms"]["rerank"])
    return {"embedder": embedder, "reranker": reranker.name, "candidates": 10, "first_stage_ms": _percentiles(first),
            "rerank_ms": _percentiles(rerank)}


def bench_progressive(corpus: Path, embedder: str, n_queries: int, first_batch: int) -> dict:
    """Time from the first column on the page to the first reranked cards, through the page's own event
    functions (handlers + HTML rendering), with the real `embedder` and a random-weight full-size
    SmolVLM-256M reranker (batch size 8, the app's default).

    The reranker features of the candidates' images are computed first, as the app's background precompute
    does for the whole corpus (issue 13.1): what is timed is a visitor's query, not a cold feature cache.
    """
    import torch

    from benchmarks.bench_rerank import _random_smolvlm
    from mmembed.config import Settings
    from mmembed.corpus import load_corpus
    from mmembed.embedders import EMBEDDERS
    from mmembed.pipeline import Pipeline
    from mmembed.ui.events import DemoEvents
    from mmembed.ui.scratch import Scratch
    from mmembed.ui.state import DemoState

    torch.set_num_threads(os.cpu_count() or 1)  # as the app runs: torch's default, all cores
    reranker = _random_smolvlm()
    reranker.batch_size = 8  # the app's default (bench_rerank scores its 10 candidates in one batch)
    pool = load_corpus(corpus)
    state = DemoState(Settings(corpus=corpus, cache_dir=Path(tempfile.mkdtemp()), embedder=embedder,
                               rerank_top_k=10),
                      corpus=pool, embedders=_registry("embedder", EMBEDDERS.get(embedder, device="cpu")),
                      rerankers=_registry("reranker", reranker))
    events = DemoEvents(state, Scratch(Path(tempfile.mkdtemp()), 2**24))
    Pipeline.first_batch = first_batch
    texts = [f"{QUERIES[i % len(QUERIES)]} {i}" for i in range(n_queries)]
    reports = [events.first(text, None, "image", "natural", 10, embedder, 10, progress=None)[0]
               for text in ["warm up", *texts]]
    candidates = {hit.item.id: hit.item for report in reports for hit in report.candidates}
    started = time.perf_counter()
    reranker.precompute_image_features(list(candidates.values()))
    precompute_s = time.perf_counter() - started
    list(events.rerank(events.first("warm up", None, "image", "natural", 10, embedder, 10, progress=None)[0], True,
                       reranker.name, progress=None))  # the first forward pass (allocations, kernels)
    state.results = type(state.results)()  # timed queries must not come from the result cache
    first_ms, cards_ms, final_ms, steps = [], [], [], []
    load_before = os.getloadavg()
    for text in texts:
        started = time.perf_counter()
        report = events.first(text, None, "image", "natural", 10, embedder, 10, progress=None)[0]
        shown = time.perf_counter()  # the first column's HTML is ready: what the page shows now
        yielded = []
        for _ in events.rerank(report, True, reranker.name, progress=None):
            yielded.append(time.perf_counter())  # each yield is a re-rendered reranked column
        first_ms.append((shown - started) * 1000)
        cards_ms.append((yielded[0] - shown) * 1000)
        final_ms.append((yielded[-1] - shown) * 1000)
        steps.append(len(yielded))
    return {"embedder": embedder, "reranker": reranker.name, "candidates": 10, "batch_size": reranker.batch_size,
            "first_batch": first_batch, "feature_precompute_s": round(precompute_s, 1),
            "images_precomputed": len(candidates),
            "first_column_ms": _percentiles(first_ms),
            "first_reranked_cards_after_first_column_ms": _percentiles(cards_ms),
            "final_reranked_order_after_first_column_ms": _percentiles(final_ms),
            "column_updates_per_query": sorted(set(steps)),
            "load_average_before_and_after": [[round(x, 2) for x in load] for load in (load_before, os.getloadavg())]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true",
                        help="the in-process fake path only, 200 items, 5 queries: checks the script, measures nothing")
    parser.add_argument("--corpus", type=Path, default=ROOT / "sample_corpus" / "corpus.jsonl")
    parser.add_argument("--embedder", default="mmembed-mini")
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--fake-items", type=int, default=2000)
    parser.add_argument("--rerank", action="store_true", help="rerank in the server queries (needs reranker weights)")
    parser.add_argument("--full-size-reranker", action="store_true",
                        help="also time the handler path with a random-weight full-size SmolVLM-256M reranker")
    parser.add_argument("--progressive", action="store_true",
                        help="time the first reranked cards after the first column (page events, random-weight "
                        "full-size SmolVLM-256M), and nothing else")
    parser.add_argument("--first-batch", type=int, default=2, help="candidates in the first scored batch")
    args = parser.parse_args()
    if args.smoke:  # starting the server twice alone takes longer than CI's budget for every smoke run
        print(json.dumps({"smoke": True, "cpus": os.cpu_count(), "fakes": bench_fakes(200, 5)}, indent=2))
        return 0
    if args.progressive:
        print(json.dumps({"cpus": os.cpu_count(), "progressive": bench_progressive(
            args.corpus.resolve(), args.embedder, args.queries, args.first_batch)}, indent=2))
        return 0
    report = {"cpus": os.cpu_count(), "fakes": bench_fakes(args.fake_items, args.queries)}
    if args.corpus.is_file():
        report["server"] = bench_server(args.corpus.resolve(), args.embedder, args.queries, args.rerank)
    else:
        report["server"] = f"skipped: no corpus at {args.corpus}"
    if args.full_size_reranker and args.corpus.is_file():
        report["full_size_reranker"] = bench_full_size_reranker(args.corpus.resolve(), args.embedder, args.queries)
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
