"""`python -m mmembed index build`: embed the corpus and build (or refresh) its cached FAISS index; with
`--reranker`, also encode the corpus images for that reranker ahead of time (cached, resumable)."""

from __future__ import annotations

import argparse
import time
from typing import TYPE_CHECKING

from mmembed.cli._common import add_retrieval_args, build_retriever, print_json

if TYPE_CHECKING:
    from mmembed.rerankers import Reranker
    from mmembed.rerankers.precompute import PrecomputeSummary
    from mmembed.retriever import Retriever

CONFIGURED = "configured"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("index", help="build the corpus index ahead of time",
                                   description="Manage the cached corpus index.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    build = actions.add_parser("build", help="embed the corpus and build the FAISS index (resumes if interrupted)")
    build.add_argument("--json", action="store_true", help="machine-readable output")
    build.add_argument("--reranker", nargs="?", const=CONFIGURED, default=None, metavar="NAME",
                       help="also precompute the corpus image features of this reranker (without NAME: the "
                       "configured one, $MMEMBED_RERANKER or smolvlm-256m), so the first reranked query "
                       "does not encode them; resumes if interrupted")
    add_retrieval_args(build)
    build.set_defaults(func=run_build)


def run_build(args: argparse.Namespace) -> int:
    reranker = _reranker(args) if args.reranker else None  # a bad name fails now, not after the index build
    started = time.perf_counter()
    retriever = build_retriever(args, progress_bar=not args.json)
    elapsed = time.perf_counter() - started
    index = retriever.index
    summary = {"corpus": retriever.corpus.name, "items": len(retriever.corpus), "embedder": retriever.embedder.name,
               "dim": index.dim, "index_type": index.index_type, "seconds": round(elapsed, 2),
               "cache_dir": str(retriever.cache_dir)}
    features = _precompute(args, reranker, retriever) if reranker is not None else None
    if features is not None:
        summary["reranker_features"] = features.to_dict()
    if args.json:
        print_json(summary)
        return 0
    print(f"indexed {summary['items']} items of {summary['corpus']!r} with {summary['embedder']} "
          f"({summary['dim']}-d, {summary['index_type']}) in {summary['seconds']} s; cache: {summary['cache_dir']}")
    if features is not None:
        if not features.supported:
            print(f"reranker {features.reranker}: no image-feature cache for this model; nothing to precompute")
        else:
            print(f"reranker {features.reranker}: of {features.images} corpus images, {features.cached} were "
                  f"cached already; {features.encoded} distinct images encoded in {round(features.seconds, 2)} s")
    return 0


def _reranker(args: argparse.Namespace) -> Reranker:
    from mmembed.config import Settings
    from mmembed.hub import prefetch_hint
    from mmembed.rerankers import RERANKERS, load_reranker
    from mmembed.types import MMEmbedError

    settings = Settings.from_env(cache_dir=args.cache_dir, device=args.device)
    name = settings.reranker if args.reranker == CONFIGURED else args.reranker
    reason = RERANKERS.unavailable_reason(name, device=settings.device)  # unknown names raise, listing the known
    if reason is not None:
        raise MMEmbedError(f"reranker {name!r} can't be used here: {reason}; {prefetch_hint(name, 'reranker')}")
    return load_reranker(name, settings)


def _precompute(args: argparse.Namespace, reranker: Reranker, retriever: Retriever) -> PrecomputeSummary:
    from mmembed.progress import tqdm_progress
    from mmembed.rerankers.precompute import precompute_corpus_features

    with tqdm_progress(unit="image", disable=args.json) as progress:
        return precompute_corpus_features(reranker, retriever.corpus.items, progress=progress)
