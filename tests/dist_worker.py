"""A torchrun worker for tests/test_distributed.py: one rank of a distributed corpus embedding.

    python -m torch.distributed.run --nproc-per-node 2 tests/dist_worker.py CORPUS CACHE [--die-on-rank R]

Uses the keyword fake embedder (tests/fakes.py), so the run is fast and its vectors exact. With
--die-on-rank R, rank R exits hard (as a killed process would) right after embedding its first shard.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from fakes import KeywordEmbedder

from mmembed.corpus import load_corpus
from mmembed.distributed import context_from_env, distributed_build, process_group

VOCABULARY = ["cat", "dog", "apple", "car", "tree", "house", "boat", "moon"]


class DyingEmbedder(KeywordEmbedder):
    """Exits the process hard on its second call (after one shard is safely on disk)."""

    def embed_items(self, items, *, progress=None):
        if self.calls["items"] >= 1:
            os._exit(17)
        return super().embed_items(items, progress=progress)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("corpus", type=Path)
    parser.add_argument("cache", type=Path)
    parser.add_argument("--die-on-rank", type=int, default=-1)
    args = parser.parse_args()
    ctx = context_from_env()
    assert ctx is not None, "run under torchrun"
    kind = DyingEmbedder if ctx.rank == args.die_on_rank else KeywordEmbedder
    embedder = kind(VOCABULARY)
    with process_group(ctx, "cpu"):
        index = distributed_build(load_corpus(args.corpus), embedder, args.cache, ctx)
    print(f"rank {ctx.rank} calls={embedder.calls['items']} index={'yes' if index is not None else 'no'}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
