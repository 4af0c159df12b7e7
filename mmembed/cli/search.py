"""`python -m mmembed search "a red apple" --target image -k 10 [--rerank]`: one query, ranked results.

Goes through `mmembed.pipeline.Pipeline`, like the demo: `--json` prints the same object as the demo's
`/search` API (`SearchReport.to_dict()`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mmembed.cli._common import add_retrieval_args, build_retriever, print_json, snippet
from mmembed.retriever import MODES

if TYPE_CHECKING:
    from mmembed.config import Settings
    from mmembed.pipeline import SearchReport
    from mmembed.rerankers.base import Reranker
    from mmembed.types import Hit


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("search", help="search the corpus with text and/or an image",
                                   description="Rank corpus items for a text and/or image query, optionally "
                                   "reranked by a multimodal LLM.")
    parser.add_argument("text", nargs="?", default=None, help="query text (optional if --image is given)")
    parser.add_argument("--image", type=Path, default=None, help="query image file")
    parser.add_argument("--target", default=None, help="wanted modality: image, text or image+text")
    parser.add_argument("-k", "--top-k", type=int, default=None,
                        help="number of results (default: $MMEMBED_TOP_K or 10)")
    parser.add_argument("--mode", choices=list(MODES), default="natural",
                        help="natural: the model ranks the whole pool (bias shows); filtered: only the target")
    parser.add_argument("--instruction", default=None, help="task instruction overriding the built-in table")
    parser.add_argument("--rerank", nargs="?", const="", default=None, metavar="RERANKER",
                        help="rerank the candidates with an MLLM (default: $MMEMBED_RERANKER or smolvlm-256m)")
    parser.add_argument("--depth", type=int, default=None,
                        help="candidates the reranker sees (default: $MMEMBED_RERANK_TOP_K or 10; at least -k)")
    parser.add_argument("--json", action="store_true", help="machine-readable output (the demo API's object)")
    add_retrieval_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmembed.config import Settings
    from mmembed.images import load_image
    from mmembed.pipeline import Pipeline
    from mmembed.progress import tqdm_progress
    from mmembed.types import Query

    if args.image is not None:
        load_image(args.image)  # fail now, with a clear message, before any model is loaded
    query = Query(text=args.text, image=args.image, target=args.target, instruction=args.instruction)
    settings = Settings.from_env(device=args.device, top_k=args.top_k, cache_dir=args.cache_dir)
    args.top_k = settings.top_k
    reranker = _load_reranker(args.rerank or settings.reranker, settings) if args.rerank is not None else None
    retriever = build_retriever(args, progress_bar=not args.json)
    depth = args.depth or (settings.rerank_top_k if reranker is not None else args.top_k)
    with tqdm_progress(disable=args.json) as progress:
        report = Pipeline(retriever, reranker).search(query, k=args.top_k, mode=args.mode, depth=depth,
                                                     progress=progress)
    if args.json:
        print_json(report.to_dict())
    else:
        _print_report(report)
    if report.reranked.status == "error":
        print(f"error: {report.reranked.message}", file=sys.stderr)
        return 1
    return 0


def _load_reranker(name: str, settings: Settings) -> Reranker:
    """The reranker `name`, refused up front (one line, no model load) when it cannot run here; created as the
    app creates it (`load_reranker`), so image features precomputed by `index build --reranker` are found."""
    from mmembed.registry import BackendUnavailableError
    from mmembed.rerankers import RERANKERS, load_reranker

    reason = RERANKERS.unavailable_reason(name, device=settings.device)  # unknown names raise with the known ones
    if reason is not None:
        raise BackendUnavailableError(f"reranker '{name}' can't run here: {reason} "
                                      f"(python -m mmembed prefetch --reranker {name})")
    return load_reranker(name, settings)


def _print_report(report: SearchReport) -> None:
    target = report.target.label if report.target else "any"
    print(f"{len(report.first_stage)} results ({report.embedder}, mode {report.mode}, target {target})")
    if report.instruction:
        print(f"instruction: {report.instruction}")
    for note in report.notes:
        print(f"note: {note}")
    _print_hits(report, report.first_stage, "first_stage")
    if report.reranked.status == "done":
        print(f"reranked by {report.reranked.reranker} (top {report.depth} candidates):")
        _print_hits(report, report.reranked.hits, "reranked")


def _print_hits(report: SearchReport, hits: tuple[Hit, ...], stage: str) -> None:
    from mmembed.pipeline import movement_label

    for hit in hits:
        marker = " " if report.target is None or hit.item.modality is report.target else "!"
        shown = snippet(hit.item.text) or _image_label(hit.item.image)
        if hit.item.text and hit.item.image is not None:
            shown = f"[{_image_label(hit.item.image)}] {shown}"
        moved = f" {movement_label(hit, report.top_k):>3}" if stage == "reranked" else ""
        print(f"{hit.rank:>3}.{moved} {hit.score:+.4f} {marker}{hit.item.modality.label:<10} {hit.item.id:<12} {shown}")
    wrong = report.wrong_modality_rate(stage)
    if wrong is not None:
        print(f"wrong-modality rate: {wrong:.0%} of the top {len(hits)} ('!' marks them)")


def _image_label(image: object) -> str:
    """A path a person can open: relative to the working folder when under it, else absolute."""
    if image is None:
        return ""
    if not isinstance(image, (str, Path)):
        return "(in-memory image)"
    path = Path(image)
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)
