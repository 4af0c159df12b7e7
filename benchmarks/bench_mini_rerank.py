"""Top-20 reranking latency of the offline cross-encoder mmembed-mini-rerank on the CPU. Prints one JSON object.

The real setting of the offline demo: the shipped mmembed-mini retrieves the sample corpus's top 20 for each
query of sample_corpus/queries.jsonl (untimed), and mmembed-mini-rerank scores those 20 (timed). Two figures:
- cold: the reranker's candidate cache is emptied before each query, so the 20 candidates' bottom text states
  and image tokens are computed inside the timing (a corpus item seen for the first time);
- warm (the headline p50): corpus items already encoded, as after `precompute(corpus)` or earlier queries;
  what remains per query is the query's own bottom pass and image, and the joint layers over 20 pairs.
The machine is shared: the load average is recorded before and after.

    .venv/bin/python -m benchmarks.bench_rerank --mini               # all sample queries
    .venv/bin/python -m benchmarks.bench_mini_rerank --smoke         # 6 queries: checks the script
"""

from __future__ import annotations

import json
import os
import platform
import time

DEPTH = 20


def run(*, smoke: bool = False, threads: int = 2, max_queries: int | None = None) -> dict:
    import numpy as np
    import torch

    from mmembed.config import Settings
    from mmembed.corpus import load_corpus, load_queries
    from mmembed.embedders import EMBEDDERS
    from mmembed.rerankers import RERANKERS
    from mmembed.retriever import Retriever

    torch.set_num_threads(threads)
    load_before = [round(x, 2) for x in os.getloadavg()]
    settings = Settings.from_env()
    corpus = load_corpus(settings.corpus)
    retriever = Retriever(corpus, EMBEDDERS.get("mmembed-mini", device="cpu"), cache_dir=settings.cache_dir)
    retriever.ensure_index()
    queries = load_queries(settings.queries, corpus)
    limit = 6 if smoke else max_queries
    if limit:  # an even spread over the task types, not the first few of one
        queries = [queries[i] for i in np.linspace(0, len(queries) - 1, min(limit, len(queries))).astype(int)]
    started = time.perf_counter()
    reranker = RERANKERS.get("mmembed-mini-rerank", device="cpu")
    reranker._load()
    load_s = time.perf_counter() - started
    pools = [retriever.search(q.query, k=DEPTH).hits for q in queries]

    cold, warm = [], []
    for q, hits in zip(queries, pools, strict=True):
        items = [hit.item for hit in hits]
        reranker._cache.clear()
        t0 = time.perf_counter()
        reranker.score(q.query, items)
        cold.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        reranker.score(q.query, items)
        warm.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    reranker._cache.clear()
    reranker.precompute(corpus.items)
    precompute_s = time.perf_counter() - t0

    def ms(values: list[float], q: float) -> float:
        return round(float(np.percentile(values, q)) * 1000, 1)

    p50 = ms(warm, 50)
    return {
        "benchmark": f"top-{DEPTH} reranking with mmembed-mini-rerank (MiniLM cross-encoder), mmembed-mini first "
                     "stage, sample corpus, CPU",
        "smoke": smoke,
        "queries": len(queries),
        "candidates_per_query": DEPTH,
        "warm_p50_ms": p50,
        "warm_p95_ms": ms(warm, 95),
        "cold_p50_ms": ms(cold, 50),
        "cold_p95_ms": ms(cold, 95),
        "precompute_corpus_s": round(precompute_s, 2),
        "corpus_items": len(corpus.items),
        "target_warm_p50_le_150ms": p50 <= 150.0,
        "model_load_s": round(load_s, 2),
        "architecture": {k: v for k, v in reranker.config.to_json().items() if k != "extra"},
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "machine": f"{platform.processor() or platform.machine()}, shared with other jobs",
        "torch": torch.__version__,
    }


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="6 queries: checks the script end to end")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-queries", type=int, default=None)
    args = parser.parse_args()
    print(json.dumps(run(smoke=args.smoke, threads=args.threads, max_queries=args.max_queries), indent=2))
