"""Quality of the recipe's three models on the sample corpus: M_rand, M_hard, M_hard+ct.

Natural mode (the whole pool is ranked, no modality filter), the sample corpus's evaluation queries:
Recall@1/5/10 per task type and overall, and the wrong-modality rate in the top-1 and top-5 per target
modality. Prints JSON, then a markdown table for the README.

    .venv/bin/python -m benchmarks.bench_quality                      # models from build/mini (trained if absent)
    .venv/bin/python -m benchmarks.bench_quality --models rand=DIR hard=DIR ct=DIR --json out.json
    .venv/bin/python -m benchmarks.bench_quality --smoke              # shipped model, small slice: checks the script

The corpus and queries are read by mmembed.corpus and scored by mmembed.metrics (the code `mmembed eval` and
training validation use); the ranking is an exact inner-product search over the whole pool, which is what
the flat FAISS index of `mmembed eval` returns too.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

LABELS = {"rand": "M_rand", "hard": "M_hard", "ct": "M_hard+ct"}
DIRS = {"rand": "m_rand", "hard": "m_hard", "ct": "m_hard_ct"}
KS = (1, 5, 10)
SMOKE_POOL = 40  # smoke mode: one query per task, ranked among its positives and the first 40 corpus items


def smoke_subset(corpus, queries):
    """A small, still meaningful slice: the first query of each task and a pool that holds its positives."""
    picked = list({q.task: q for q in reversed(queries)}.values())[::-1]
    wanted = {p for q in picked for p in q.positives}
    return [item for i, item in enumerate(corpus) if i < SMOKE_POOL or item.id in wanted], picked


def exact_report(embedder, items, queries) -> dict:
    """Every query ranks the whole pool by inner product; scored by mmembed.metrics."""
    import numpy as np

    from mmembed.metrics import MetricsAccumulator

    pool = embedder.embed_items(items)
    metrics = MetricsAccumulator(KS)
    for eval_query in queries:
        top = np.argsort(-(pool @ embedder.embed_query(eval_query.query)), kind="stable")[: metrics.depth]
        metrics.add(eval_query.task, [items[j].id for j in top], set(eval_query.positives),
                    eval_query.query.target, [items[j].modality for j in top])
    return metrics.report("natural").to_dict()


def markdown(results: dict) -> str:
    names = list(results)
    tasks = [t for t in next(iter(results.values()))["recall"] if t != "overall"]
    tasks += sorted({t for r in results.values() for t in r["recall"] if t != "overall"} - set(tasks))
    lines = ["| metric | " + " | ".join(LABELS.get(n, n) for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for k in KS:
        lines.append(f"| overall R@{k} | " + " | ".join(f"{results[n]['recall']['overall'][f'R@{k}']:.3f}"
                                                       for n in names) + " |")
    for task in tasks:
        count = next(results[n]["queries"][task] for n in names if task in results[n]["queries"])
        for k in KS:
            cells = [f"{results[n]['recall'][task][f'R@{k}']:.3f}" if task in results[n]["recall"] else "-"
                     for n in names]
            lines.append(f"| {task} R@{k} (n={count}) | " + " | ".join(cells) + " |")
    targets = sorted({t for r in results.values() for t in r["wrong_modality_rate"]}, key=lambda t: (t == "overall", t))
    for target in targets:
        for k in ("@1", "@5"):
            rates = [results[n]["wrong_modality_rate"].get(target) for n in names]
            cells = [f"{rate[k]:.3f}" if rate else "-" for rate in rates]
            lines.append(f"| wrong-modality {k}, target {target} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ensure_models(out: Path, data: Path) -> None:
    if all((out / d / "model.safetensors").is_file() for d in DIRS.values()):
        return
    if not (data / "pool.jsonl").is_file():
        subprocess.run([sys.executable, str(ROOT / "scripts" / "build_training_set.py"), "--out", str(data)],
                       check=True)
    subprocess.run([sys.executable, "-m", "mmembed", "train", "--stage", "all", "--data", str(data), "--out", str(out)],
                   check=True, cwd=ROOT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--corpus", type=Path, default=ROOT / "sample_corpus" / "corpus.jsonl")
    parser.add_argument("--queries", type=Path, default=ROOT / "sample_corpus" / "queries.jsonl")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "mini", help="training output folder")
    parser.add_argument("--data", type=Path, default=ROOT / "build" / "training_set")
    parser.add_argument("--models", nargs="*", default=None, metavar="NAME=DIR",
                        help="model directories to compare (default: rand/hard/ct from --out, trained if absent)")
    parser.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    parser.add_argument("--smoke", action="store_true",
                        help="the shipped model, one query per task, a small pool: checks the script, measures nothing")
    args = parser.parse_args(argv)

    from mmembed.corpus import load_corpus, load_queries
    from mmembed.embedders import EMBEDDERS
    from mmembed.embedders.mini import DEFAULT_MODEL_DIR, MiniEmbedder

    if args.models:
        models = dict(spec.split("=", 1) for spec in args.models)
    elif args.smoke:
        models = {"shipped": str(DEFAULT_MODEL_DIR)}
    else:
        ensure_models(args.out, args.data)
        models = {name: str(args.out / folder) for name, folder in DIRS.items()}
    corpus = load_corpus(args.corpus)
    queries = load_queries(args.queries, corpus)
    items = list(corpus)
    if args.smoke:
        items, queries = smoke_subset(corpus, queries)
    results, timings = {}, {}
    for name, folder in models.items():
        start = time.perf_counter()
        embedder = MiniEmbedder(EMBEDDERS.info("mmembed-mini"), model_dir=folder, device="cpu")
        results[name] = exact_report(embedder, items, queries)
        timings[name] = round(time.perf_counter() - start, 1)
    r, h = results.get("rand"), results.get("hard")
    goals = None
    if r and h:
        goals = {"hard_wrong@5_at_most_half_of_rand": h["wrong_modality_rate"]["overall"]["@5"]
                 <= 0.5 * r["wrong_modality_rate"]["overall"]["@5"],
                 "hard_R@5_above_rand": h["recall"]["overall"]["R@5"] > r["recall"]["overall"]["R@5"]}
    payload = {"corpus": str(args.corpus), "queries": len(queries), "pool": len(items), "mode": "natural",
               "smoke": args.smoke, "models": models, "results": results, "goals": goals, "seconds": timings,
               "load_average": list(os.getloadavg())}
    text = json.dumps(payload, indent=2)
    print(text)
    if args.json:
        from mmembed.storage import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    print()
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
