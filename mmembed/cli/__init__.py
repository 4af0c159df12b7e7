"""The `python -m mmembed` command line.

Each subcommand lives in its own module under mmembed/cli/ exposing `add_parser(subparsers)`, which
registers its arguments and sets `func(args) -> int`. Modules import nothing heavy at import time,
so `--help` stays fast. Errors we raise on purpose (MMEmbedError) print as one line and exit 1;
`--debug` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import importlib
import sys

SUBCOMMAND_MODULES = ("search", "index", "eval", "prefetch", "train", "finetune")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mmembed",
        description="Universal multimodal retrieval with multimodal LLMs: search, index, evaluate, "
        "prefetch models, train the offline model.",
    )
    parser.add_argument("--debug", action="store_true", help="show full tracebacks on errors")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(f"mmembed.cli.{name}").add_parser(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    from mmembed.types import MMEmbedError

    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (MMEmbedError, OSError) as exc:  # OSError: missing files, permissions, a full or read-only disk
        if args.debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 1
