"""`python -m mmembed index build|merge`: embed the corpus and build (or refresh) its cached FAISS index; with
`build --reranker`, also encode the corpus images for that reranker ahead of time (cached, resumable).

Under torchrun (`torchrun --nproc-per-node N -m mmembed index build ...`) the corpus is embedded by all
ranks, each its share of the cache's shards (see mmembed.distributed), and rank 0 builds the index.
`index merge` builds the index from shard files that are all on disk already (e.g. copied together
from machines without a shared disk) and refuses, naming them, if any is missing.
"""

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
    build = actions.add_parser("build", help="embed the corpus and build the FAISS index (resumes if interrupted; "
                               "under torchrun every rank embeds its share)")
    build.add_argument("--json", action="store_true", help="machine-readable output")
    build.add_argument("--reranker", nargs="?", const=CONFIGURED, default=None, metavar="NAME",
                       help="also precompute the corpus image features of this reranker (without NAME: the "
                       "configured one, $MMEMBED_RERANKER or smolvlm-256m), so the first reranked query "
                       "does not encode them; resumes if interrupted")
    add_retrieval_args(build)
    build.set_defaults(func=run_build)
    merge = actions.add_parser("merge", help="build the index from embedding shards that are all on disk already")
    merge.add_argument("--json", action="store_true", help="machine-readable output")
    add_retrieval_args(merge)
    merge.set_defaults(func=run_merge)


def run_build(args: argparse.Namespace) -> int:
    from mmembed.distributed import context_from_env, distributed_build, process_group, rank_device

    reranker = _reranker(args) if args.reranker else None  # a bad name fails now, not after the index build
    started = time.perf_counter()
    ctx = context_from_env()
    if ctx is None:
        retriever = build_retriever(args, progress_bar=not args.json)
        elapsed = time.perf_counter() - started
        features = _precompute(args, reranker, retriever) if reranker is not None else None
        _print_summary(args, retriever, elapsed, features=features)
        return 0
    from mmembed.config import Settings

    args.device = rank_device(ctx, args.device or Settings.from_env().device)
    retriever = build_retriever(args, progress_bar=False, build_index=False)
    with process_group(ctx, args.device):
        index = distributed_build(retriever.corpus, retriever.embedder, retriever.cache_dir, ctx,
                                  index_type=retriever.index_type)
    if ctx.is_main and index is not None:
        retriever.ensure_index()  # loads what rank 0 just saved (fingerprint-checked like any cache)
        elapsed = time.perf_counter() - started
        features = _precompute(args, reranker, retriever) if reranker is not None else None  # rank 0 only
        _print_summary(args, retriever, elapsed, world_size=ctx.world_size, features=features)
    return 0


def run_merge(args: argparse.Namespace) -> int:
    from mmembed.index import cache_folder, embedding_fingerprint, shard_bounds
    from mmembed.storage import read_json
    from mmembed.types import MMEmbedError

    started = time.perf_counter()
    retriever = build_retriever(args, progress_bar=False, build_index=False)
    corpus, embedder = retriever.corpus, retriever.embedder
    shard_dir = cache_folder(retriever.cache_dir, corpus.name, embedder.name, embedder.fingerprint) / "embeddings"
    if read_json(shard_dir / "fingerprint.json") != embedding_fingerprint(corpus, embedder):
        raise MMEmbedError(f"no embedding shards of this model and corpus version in {shard_dir}; "
                           "run `index build` (under torchrun for several processes) first")
    missing = [f"shard-{shard:05d}.npy" for shard in range(len(shard_bounds(len(corpus))))
               if not (shard_dir / f"shard-{shard:05d}.npy").exists()]
    if missing:
        shown = ", ".join(missing[:10]) + (f" and {len(missing) - 10} more" if len(missing) > 10 else "")
        raise MMEmbedError(f"{len(missing)} embedding shard(s) missing in {shard_dir}: {shown}; "
                           "rerun `index build` to embed them")
    retriever.ensure_index()
    _print_summary(args, retriever, time.perf_counter() - started)
    return 0


def _print_summary(args: argparse.Namespace, retriever, elapsed: float, world_size: int = 1,
                   features: PrecomputeSummary | None = None) -> None:
    index = retriever.index
    summary = {"corpus": retriever.corpus.name, "items": len(retriever.corpus), "embedder": retriever.embedder.name,
               "dim": index.dim, "index_type": index.index_type, "seconds": round(elapsed, 2),
               "processes": world_size, "cache_dir": str(retriever.cache_dir)}
    if features is not None:
        summary["reranker_features"] = features.to_dict()
    if args.json:
        print_json(summary)
        return
    spread = f" by {world_size} processes" if world_size > 1 else ""
    print(f"indexed {summary['items']} items of {summary['corpus']!r} with {summary['embedder']} "
          f"({summary['dim']}-d, {summary['index_type']}){spread} in {summary['seconds']} s; "
          f"cache: {summary['cache_dir']}")
    if features is not None:
        if not features.supported:
            print(f"reranker {features.reranker}: no image-feature cache for this model; nothing to precompute")
        else:
            print(f"reranker {features.reranker}: of {features.images} corpus images, {features.cached} were "
                  f"cached already; {features.encoded} distinct images encoded in {round(features.seconds, 2)} s")


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
