"""`python -m mmembed index build`: embed the corpus and build (or refresh) its cached FAISS index."""

from __future__ import annotations

import argparse
import time

from mmembed.cli._common import add_retrieval_args, build_retriever, print_json


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("index", help="build the corpus index ahead of time",
                                   description="Manage the cached corpus index.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="embed the corpus and build the FAISS index (resumes if interrupted)")
    build.add_argument("--json", action="store_true", help="machine-readable output")
    add_retrieval_args(build)
    build.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    retriever = build_retriever(args, progress_bar=not args.json)
    elapsed = time.perf_counter() - started
    index = retriever.index
    summary = {"corpus": retriever.corpus.name, "items": len(retriever.corpus), "embedder": retriever.embedder.name,
               "dim": index.dim, "index_type": index.index_type, "seconds": round(elapsed, 2),
               "cache_dir": str(retriever.cache_dir)}
    if args.json:
        print_json(summary)
    else:
        print(f"indexed {summary['items']} items of {summary['corpus']!r} with {summary['embedder']} "
              f"({summary['dim']}-d, {summary['index_type']}) in {summary['seconds']} s; cache: {summary['cache_dir']}")
    return 0
