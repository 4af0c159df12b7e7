"""`python -m mmembed eval`: Recall@k per task type and wrong-modality rates on M-BEIR-format queries.

With `--reranker NAME`, the first stage's top `--rerank-depth` of every query are reranked as well and both
sets of figures are reported side by side; in `--json` the usual keys stay the first stage's and a
`reranked` object with the same keys is added (plus `reranker`: its name and depth)."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmembed.cli._common import add_retrieval_args, build_retriever


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("eval", help="Recall@k per task and wrong-modality rate on evaluation queries",
                                   description="Evaluate retrieval on M-BEIR-format queries.")
    parser.add_argument("--queries", type=Path, default=None,
                        help="M-BEIR query jsonl (default: the sample corpus's queries.jsonl)")
    parser.add_argument("--mode", choices=["natural", "filtered"], default="natural")
    parser.add_argument("-k", "--ks", default="1,5,10", help="comma-separated cut-offs (default 1,5,10)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--reranker", default=None, metavar="NAME",
                        help="also rerank each query's top --rerank-depth with this reranker (e.g. the offline "
                        "mmembed-mini-rerank) and report both stages")
    parser.add_argument("--rerank-depth", type=int, default=20, metavar="N",
                        help="first-stage candidates the reranker sees per query (default 20)")
    add_retrieval_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmembed.config import Settings
    from mmembed.corpus import load_queries
    from mmembed.evaluate import evaluate
    from mmembed.progress import tqdm_progress
    from mmembed.types import ValidationError

    try:
        ks = tuple(int(k) for k in args.ks.split(",") if k.strip())
    except ValueError:
        raise ValidationError(f"--ks must be comma-separated integers, got {args.ks!r}") from None
    if args.rerank_depth < 1:
        raise ValidationError(f"--rerank-depth must be at least 1, got {args.rerank_depth}")
    reranker = _load_reranker(args.reranker, args.device) if args.reranker else None  # refused before indexing
    retriever = build_retriever(args, progress_bar=not args.json)
    queries = load_queries(args.queries or Settings.from_env().queries, retriever.corpus, image_root=args.image_root)
    with tqdm_progress(disable=args.json or reranker is None) as progress:
        report = evaluate(retriever, queries, ks=ks, mode=args.mode, reranker=reranker,
                          rerank_depth=args.rerank_depth, progress=progress if reranker is not None else None)
    if args.json:
        print(report.to_json())
    else:
        stages = f", reranked by {reranker.name} (top {args.rerank_depth})" if reranker is not None else ""
        print(f"{len(queries)} queries, {retriever.embedder.name}{stages}, mode {args.mode}\n")
        print(report.to_markdown())
    return 0


def _load_reranker(name: str, device: str | None):
    """The reranker `name`, refused up front (one line, no model load) when it cannot run here."""
    from mmembed.config import Settings
    from mmembed.registry import BackendUnavailableError
    from mmembed.rerankers import RERANKERS

    settings = Settings.from_env(device=device)
    reason = RERANKERS.unavailable_reason(name, device=settings.device)  # unknown names raise with the known ones
    if reason is not None:
        raise BackendUnavailableError(f"reranker '{name}' can't run here: {reason} "
                                      f"(python -m mmembed prefetch --reranker {name}; offline: mmembed-mini-rerank)")
    return RERANKERS.get(name, device=settings.device)
