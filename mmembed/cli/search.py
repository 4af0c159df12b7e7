"""`python -m mmembed search "a red apple" --target image -k 10`: one query, ranked results."""

from __future__ import annotations

import argparse
from pathlib import Path

from mmembed.cli._common import add_retrieval_args, build_retriever, print_json, snippet


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("search", help="search the corpus with text and/or an image",
                                   description="Rank corpus items for a text and/or image query.")
    parser.add_argument("text", nargs="?", default=None, help="query text (optional if --image is given)")
    parser.add_argument("--image", type=Path, default=None, help="query image file")
    parser.add_argument("--target", default=None, help="wanted modality: image, text or image+text")
    parser.add_argument("-k", "--top-k", type=int, default=10, help="number of results (default 10)")
    parser.add_argument("--mode", choices=["natural", "filtered"], default="natural",
                        help="natural: the model ranks the whole pool (bias shows); filtered: only the target")
    parser.add_argument("--instruction", default=None, help="task instruction overriding the built-in table")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    add_retrieval_args(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mmembed.bias import wrong_modality_rate
    from mmembed.images import load_image
    from mmembed.types import Query

    if args.image is not None:
        load_image(args.image)  # fail now, with a clear message, before any model is loaded
    query = Query(text=args.text, image=args.image, target=args.target, instruction=args.instruction)
    retriever = build_retriever(args, progress_bar=not args.json)
    result = retriever.search(query, k=args.top_k, mode=args.mode)
    wrong = wrong_modality_rate(result.hits, result.target)
    if args.json:
        print_json({
            "embedder": retriever.embedder.name,
            "mode": result.mode,
            "target": result.target.value if result.target else None,
            "instruction": result.instruction,
            "notes": list(result.notes),
            "wrong_modality_rate": wrong,
            "hits": [{"rank": h.rank, "id": h.item.id, "score": round(h.score, 6), "modality": h.item.modality.value,
                      "text": h.item.text, "image": str(h.item.image) if h.item.image is not None else None}
                     for h in result.hits],
        })
        return 0
    target = result.target.label if result.target else "any"
    print(f"{len(result.hits)} results ({retriever.embedder.name}, mode {result.mode}, target {target})")
    if result.instruction:
        print(f"instruction: {result.instruction}")
    for note in result.notes:
        print(f"note: {note}")
    for hit in result.hits:
        marker = " " if result.target is None or hit.item.modality is result.target else "!"
        shown = snippet(hit.item.text) or _image_label(hit.item.image)
        if hit.item.text and hit.item.image is not None:
            shown = f"[{_image_label(hit.item.image)}] {shown}"
        print(f"{hit.rank:>3}. {hit.score:+.4f} {marker}{hit.item.modality.label:<10} {hit.item.id:<12} {shown}")
    if wrong is not None:
        print(f"wrong-modality rate: {wrong:.0%} of the top {len(result.hits)} ('!' marks them)")
    return 0


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
