"""`python -m mmembed eval`: Recall@k per task type and wrong-modality rates on M-BEIR-format queries."""

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
    add_retrieval_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmembed.config import Settings
    from mmembed.corpus import load_queries
    from mmembed.evaluate import evaluate
    from mmembed.types import ValidationError

    try:
        ks = tuple(int(k) for k in args.ks.split(",") if k.strip())
    except ValueError:
        raise ValidationError(f"--ks must be comma-separated integers, got {args.ks!r}") from None
    retriever = build_retriever(args, progress_bar=not args.json)
    queries = load_queries(args.queries or Settings.from_env().queries, retriever.corpus, image_root=args.image_root)
    report = evaluate(retriever, queries, ks=ks, mode=args.mode)
    if args.json:
        print(report.to_json())
    else:
        print(f"{len(queries)} queries, {retriever.embedder.name}, mode {args.mode}\n")
        print(report.to_markdown())
    return 0
