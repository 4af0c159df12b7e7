"""Quality of the recipe's three models on the sample corpus: M_rand, M_hard, M_hard+ct.

Natural mode (the whole pool is ranked, no modality filter), the sample corpus's evaluation queries:
Recall@1/5/10 per task type and overall, and the wrong-modality rate in the top-1 and top-5 per target
modality. Prints JSON, then a markdown table for the README.

    .venv/bin/python benchmarks/bench_quality.py                      # models from build/mini (trained if absent)
    .venv/bin/python benchmarks/bench_quality.py --models rand=DIR hard=DIR ct=DIR --json out.json

The table comes from an exact numpy inner-product search over the whole pool; the same models are also run
through mmembed.retriever + mmembed.evaluate (FAISS flat index) and that report is included in the JSON
("core_reports") as a cross-check: for an exact index the recalls agree.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

LABELS = {"rand": "M_rand", "hard": "M_hard", "ct": "M_hard+ct"}
DIRS = {"rand": "m_rand", "hard": "m_hard", "ct": "m_hard_ct"}


def load_eval(corpus_path: Path, queries_path: Path):
    """(items, [(qid, Query, positives, task)]) from M-BEIR jsonl files; paths resolved against each file."""
    from mmembed.types import Item, Modality, Query

    items = []
    for line in corpus_path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            image = str((corpus_path.parent / row["img_path"]).resolve()) if row.get("img_path") else None
            items.append(Item(str(row["did"]), text=row.get("txt") or None, image=image,
                              modality=Modality.parse(row["modality"]) if row.get("modality") else None))
    queries = []
    for line in queries_path.read_text().splitlines():
        if line.strip():
            row = json.loads(line)
            image = str((queries_path.parent / row["query_img_path"]).resolve()) if row.get("query_img_path") else None
            query = Query(text=row.get("query_txt") or None, image=image, target=row["target_modality"])
            task = row.get("task") or f"{query.modality.value}->{query.target.value}"
            queries.append((str(row["qid"]), query, [str(p) for p in row["pos_cand_list"]], task))
    return items, queries


def numpy_metrics(embedder, items, queries, ks=(1, 5, 10)) -> dict:
    import numpy as np

    pool = embedder.embed_items(items)
    ids = [i.id for i in items]
    modality = [i.modality for i in items]
    per_task: dict[str, list[list[bool]]] = {}
    wrong: dict[str, dict[int, list[float]]] = {}
    for _qid, query, positives, task in queries:
        scores = pool @ embedder.embed_query(query)
        top = np.argsort(-scores, kind="stable")[: max(ks)]
        hits = [any(ids[j] in set(positives) for j in top[:k]) for k in ks]
        per_task.setdefault(task, []).append(hits)
        for k in (1, 5):
            rate = float(np.mean([modality[j] is not query.target for j in top[:k]]))
            wrong.setdefault(query.target.label, {}).setdefault(k, []).append(rate)
    every = [h for hits in per_task.values() for h in hits]
    report = {"queries": len(queries), "overall": {f"R@{k}": round(float(np.mean([h[i] for h in every])), 4)
                                                   for i, k in enumerate(ks)}}
    report["tasks"] = {t: {"n": len(h), **{f"R@{k}": round(float(np.mean([x[i] for x in h])), 4)
                                          for i, k in enumerate(ks)}} for t, h in sorted(per_task.items())}
    report["wrong_modality"] = {m: {f"@{k}": round(float(np.mean(v)), 4) for k, v in sorted(d.items())}
                                for m, d in sorted(wrong.items())}
    all_wrong5 = [r for d in wrong.values() for r in d[5]]
    report["wrong_modality"]["all"] = {"@1": round(float(np.mean([r for d in wrong.values() for r in d[1]])), 4),
                                       "@5": round(float(np.mean(all_wrong5)), 4)}
    return report


def core_report(embedder, corpus_path: Path, queries_path: Path):
    """The core library's evaluation of the same model (None where it is not available)."""
    try:
        from mmembed.corpus import load_corpus, load_queries
        from mmembed.evaluate import evaluate
        from mmembed.retriever import Retriever
    except ImportError:
        return None
    corpus = load_corpus(corpus_path)
    retriever = Retriever(corpus, embedder)
    retriever.ensure_index()
    return evaluate(retriever, load_queries(queries_path, corpus), ks=(1, 5, 10), mode="natural").to_dict()


def markdown(results: dict) -> str:
    names = list(results)
    tasks = sorted({t for r in results.values() for t in r["tasks"]})
    lines = ["| metric | " + " | ".join(LABELS.get(n, n) for n in names) + " |",
             "|---|" + "---|" * len(names)]
    for k in ("R@1", "R@5", "R@10"):
        lines.append(f"| overall {k} | " + " | ".join(f"{results[n]['overall'][k]:.3f}" for n in names) + " |")
    for task in tasks:
        for k in ("R@1", "R@5", "R@10"):
            cells = [f"{results[n]['tasks'][task][k]:.3f}" if task in results[n]["tasks"] else "-" for n in names]
            count = next(results[n]["tasks"][task]["n"] for n in names if task in results[n]["tasks"])
            lines.append(f"| {task} {k} (n={count}) | " + " | ".join(cells) + " |")
    modalities = sorted({m for r in results.values() for m in r["wrong_modality"]}, key=lambda m: (m == "all", m))
    for m in modalities:
        for k in ("@1", "@5"):
            cells = [f"{results[n]['wrong_modality'][m][k]:.3f}" if m in results[n]["wrong_modality"] else "-"
                     for n in names]
            lines.append(f"| wrong-modality {k}, target {m} | " + " | ".join(cells) + " |")
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
    parser.add_argument("--no-core", dest="core", action="store_false",
                        help="skip the cross-check through mmembed.retriever + mmembed.evaluate")
    args = parser.parse_args(argv)

    from mmembed.embedders import EMBEDDERS
    from mmembed.embedders.mini import MiniEmbedder

    if args.models:
        models = dict(spec.split("=", 1) for spec in args.models)
    else:
        ensure_models(args.out, args.data)
        models = {name: str(args.out / folder) for name, folder in DIRS.items()}
    items, queries = load_eval(args.corpus, args.queries)
    results, timings, core = {}, {}, {}
    for name, folder in models.items():
        start = time.perf_counter()
        embedder = MiniEmbedder(EMBEDDERS.info("mmembed-mini"), model_dir=folder, device="cpu")
        results[name] = numpy_metrics(embedder, items, queries)
        timings[name] = round(time.perf_counter() - start, 1)
        if args.core:
            core[name] = core_report(embedder, args.corpus, args.queries)
    r, h = results.get("rand"), results.get("hard")
    goals = None
    if r and h:
        goals = {"hard_wrong@5_at_most_half_of_rand": h["wrong_modality"]["all"]["@5"]
                 <= 0.5 * r["wrong_modality"]["all"]["@5"],
                 "hard_R@5_above_rand": h["overall"]["R@5"] > r["overall"]["R@5"]}
    payload = {"corpus": str(args.corpus), "queries": len(queries), "pool": len(items), "mode": "natural",
               "models": models, "results": results, "goals": goals, "seconds": timings,
               **({"core_reports": core} if core else {})}
    text = json.dumps(payload, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    print()
    print(markdown(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
