"""`python -m mmembed prefetch`: download model files into the Hugging Face cache for offline use.

Only the files a backend needs are fetched (its `BackendInfo.allow_patterns`: config, tokenizer,
safetensors weights; not the duplicate TF/Flax/ONNX/pickle copies many repos carry), through
`huggingface_hub.snapshot_download`, which shows a progress bar per file. Afterwards the app and the
CLI run with HF_HUB_OFFLINE=1. Every name is checked before anything is downloaded. The weights' licence
is printed with each download and in `--list` (MM-Embed's is CC-BY-NC-4.0: non-commercial use only).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mmembed.types import MMEmbedError


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prefetch",
        help="download model weights into the Hugging Face cache for offline use",
        description="Download the files of the named embedders/rerankers into the Hugging Face cache "
        "(set HF_HOME to choose where). Afterwards everything runs with HF_HUB_OFFLINE=1.",
    )
    parser.add_argument("--embedder", action="append", default=[], metavar="NAME",
                        help="an embedder to download (repeatable), e.g. clip-b32")
    parser.add_argument("--reranker", action="append", default=[], metavar="NAME",
                        help="a reranker to download (repeatable), e.g. smolvlm-256m")
    parser.add_argument("--all-defaults", action="store_true",
                        help="the default embedder and reranker (MMEMBED_EMBEDDER / MMEMBED_RERANKER if set)")
    parser.add_argument("--list", action="store_true", help="list the backends and whether each is cached")
    parser.set_defaults(func=run)


def _selected(args: argparse.Namespace) -> list[tuple[str, str]]:
    """(kind, name) pairs in the order given, defaults appended, duplicates dropped."""
    wanted = [("embedder", name) for name in args.embedder] + [("reranker", name) for name in args.reranker]
    if args.all_defaults:
        from mmembed.config import Settings

        settings = Settings.from_env()
        wanted += [("embedder", settings.embedder), ("reranker", settings.reranker)]
    return list(dict.fromkeys(wanted))


def _registry(kind: str):
    if kind == "embedder":
        from mmembed.embedders import EMBEDDERS

        return EMBEDDERS
    from mmembed.rerankers import RERANKERS

    return RERANKERS


def _size(path: Path) -> str:
    total = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())  # stat follows the cache's symlinks
    return f"{total / 2**20:,.1f} MB"


def _list() -> int:
    from mmembed.hub import weights_available

    for kind in ("embedder", "reranker"):
        registry = _registry(kind)
        for name in registry.names():
            info = registry.info(name)
            if not info.hub_id:
                state, source = "ships with mmembed", "-"
            else:
                state = "cached" if weights_available(info.hub_id, info.revision) else "not downloaded"
                source = info.hub_id
            print(f"{kind:9} {name:15} {source:40} {info.license or 'licence unknown':15} {state}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.list:
        return _list()
    wanted = _selected(args)
    if not wanted:
        raise MMEmbedError("nothing to prefetch: name --embedder NAME and/or --reranker NAME, or use --all-defaults "
                           "(--list shows the names)")
    infos = [(kind, _registry(kind).info(name)) for kind, name in wanted]  # unknown names fail before any download

    from mmembed.hub import WeightsNotAvailableError, is_offline, prefetch

    if is_offline() and any(info.hub_id for _, info in infos):
        raise WeightsNotAvailableError("cannot download with HF_HUB_OFFLINE set; unset it (and TRANSFORMERS_OFFLINE) "
                                       "on a machine with network and run this again")
    for kind, info in infos:
        if not info.hub_id:
            print(f"{info.name}: nothing to download (ships with mmembed)")
            continue
        patterns = ", ".join(info.allow_patterns) or "all files"
        licence = f"; licence {info.license}" if info.license else ""  # e.g. MM-Embed is non-commercial
        print(f"{info.name}: downloading {info.hub_id} ({patterns}{licence})", file=sys.stderr, flush=True)
        try:
            path = prefetch(info.hub_id, info.revision, info.allow_patterns)
        except MMEmbedError:
            raise
        except Exception as exc:  # network, auth, missing repo: one clear line, not a traceback
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            message = f"could not download {kind} {info.name!r} ({info.hub_id}): {detail}"
            raise WeightsNotAvailableError(message) from exc
        print(f"{info.name}: {info.hub_id} is in {path} ({_size(path)})")
    return 0
