"""Arguments and set-up shared by the search, index and eval subcommands."""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmembed.retriever import Retriever


def add_retrieval_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--corpus", type=Path, default=None,
                        help="M-BEIR jsonl, a folder holding corpus.jsonl, or a datasets folder/name "
                        "(default: the sample corpus, or $MMEMBED_CORPUS)")
    parser.add_argument("--embedder", default=None, help="embedder name (default clip-b32, or $MMEMBED_EMBEDDER); "
                        "falls back to the offline mmembed-mini when its weights cannot be had")
    parser.add_argument("--index-type", choices=["flat", "hnsw", "ivfpq", "ivfpq-disk"], default=None,
                        help="FAISS index: exact (flat, default), approximate for large pools (hnsw, ivfpq), "
                        "or ivfpq-disk for pools larger than RAM")
    parser.add_argument("--cache-dir", type=Path, default=None, help="where indexes are cached ($MMEMBED_CACHE_DIR)")
    parser.add_argument("--device", default=None, help="auto (default), cpu, cuda or mps")
    parser.add_argument("--image-root", type=Path, default=None,
                        help="folder that M-BEIR image paths are relative to (default: the jsonl file's folder; "
                        "for the released M-BEIR, its top folder)")


def build_retriever(args: argparse.Namespace, *, progress_bar: bool = True, build_index: bool = True) -> Retriever:
    """Settings from env + flags, embedder (with offline fallback, announced on stderr), corpus, and the index
    (unless build_index is False: a distributed build embeds its own shards first)."""
    from mmembed.config import Settings
    from mmembed.corpus import load_corpus
    from mmembed.progress import tqdm_progress
    from mmembed.retriever import Retriever, load_embedder_with_fallback

    settings = Settings.from_env(corpus=args.corpus, embedder=args.embedder, index_type=args.index_type,
                                 cache_dir=args.cache_dir, device=args.device)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the same news is printed as the note below
        embedder, note = load_embedder_with_fallback(settings)
    if note:
        print(f"note: {note}", file=sys.stderr)
    with warnings.catch_warnings():
        # Cache rebuilds and similar warnings: one readable line each, not Python's file:line format.
        warnings.showwarning = _one_line_warning
        options = {"image_root": args.image_root} if args.image_root is not None else {}
        retriever = Retriever(load_corpus(settings.corpus, **options), embedder, cache_dir=settings.cache_dir,
                              index_type=settings.index_type)
        if build_index:
            with tqdm_progress(disable=not progress_bar) as progress:
                retriever.ensure_index(progress)
    return retriever


def _one_line_warning(message: Warning | str, category: type[Warning], filename: str, lineno: int,
                      file: Any = None, line: str | None = None) -> None:
    print(f"warning: {message}", file=sys.stderr)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, ensure_ascii=False))


def snippet(text: str | None, width: int = 90) -> str:
    if not text:
        return ""
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"
