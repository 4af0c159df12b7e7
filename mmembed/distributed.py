"""Corpus embedding split across processes started by `torchrun` (gloo on CPUs, NCCL on GPUs).

    torchrun --nproc-per-node 4 -m mmembed index build --embedder gme-2b --corpus pool.jsonl
    torchrun --nnodes 2 --node-rank R --rdzv-backend c10d --rdzv-endpoint HOST:29500 \\
             --nproc-per-node 8 -m mmembed index build ...       # multi-node: cache dir on a shared disk

torchrun starts the processes, sets RANK / WORLD_SIZE / LOCAL_RANK and runs the rendezvous; this module
only reads them. The split is the index cache's own shards (index.SHARD_SIZE items each): rank r embeds
shards r, r + W, r + 2W, ... into the same fingerprinted shard files a one-process build writes, so

  * the result is the one-process build's, file for file (same rows, same order, same index);
  * a rank that dies loses only its unfinished shard: `torchrun --max-restarts N` (or running the same
    command again) skips every shard already on disk;
  * rank 0 alone checks the cache fingerprint and clears stale shards before anyone writes (a barrier
    keeps the others waiting), and builds the FAISS index once every rank is done.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from pathlib import Path

    from mmembed.corpus import Corpus
    from mmembed.embedders.base import Embedder
    from mmembed.index import VectorIndex
    from mmembed.progress import ProgressFn

# Ranks wait at barriers while the slowest one embeds its shards: hours for an 8B model on a big pool.
BARRIER_TIMEOUT = timedelta(hours=24)


@dataclass(frozen=True)
class DistContext:
    """This process's place in a torchrun job."""

    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context_from_env(environ: Mapping[str, str] | None = None) -> DistContext | None:
    """The torchrun context from RANK / WORLD_SIZE / LOCAL_RANK, or None for an ordinary single process."""
    env = os.environ if environ is None else environ
    world = int(env.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return None
    rank = int(env["RANK"])
    return DistContext(rank=rank, world_size=world, local_rank=int(env.get("LOCAL_RANK", rank)))


def rank_device(ctx: DistContext, device: str) -> str:
    """Each rank on its own GPU (cuda:LOCAL_RANK); CPU and MPS stay as they are."""
    from mmembed.devices import resolve_device

    resolved = resolve_device(device)
    return f"cuda:{ctx.local_rank}" if resolved == "cuda" else resolved


@contextmanager
def process_group(ctx: DistContext, device: str) -> Iterator[None]:
    """init_process_group through torchrun's env:// rendezvous for the duration of the block."""
    import torch
    import torch.distributed as dist

    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(ctx.local_rank)
    dist.init_process_group(backend=backend, rank=ctx.rank, world_size=ctx.world_size, timeout=BARRIER_TIMEOUT)
    try:
        yield
    finally:
        dist.destroy_process_group()


def barrier() -> None:
    import torch.distributed as dist

    dist.barrier()


def shards_of_rank(n_shards: int, ctx: DistContext) -> list[int]:
    """Round-robin: neighbouring shards (similar items in a sorted pool) go to different ranks."""
    return list(range(ctx.rank, n_shards, ctx.world_size))


def gather_to_main(value: Any, ctx: DistContext) -> list[Any] | None:
    """Every rank's `value`, by rank, on rank 0 (None on the others). Pickled by torch.distributed: for our own
    results between our own processes, never for anything a user supplies."""
    import torch.distributed as dist

    gathered: list[Any] | None = [None] * ctx.world_size if ctx.is_main else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def in_round_robin_order(by_rank: list[list[Any]]) -> list[Any]:
    """Undo the round-robin split: rank r's j-th element was element r + j * W of the whole."""
    world = len(by_rank)
    whole: list[Any] = [None] * sum(len(part) for part in by_rank)
    for rank, part in enumerate(by_rank):
        whole[rank::world] = part
    return whole


def distributed_build(corpus: Corpus, embedder: Embedder, cache_dir: Path, ctx: DistContext, *,
                      index_type: str = "flat", progress: ProgressFn | None = None,
                      out: TextIO | None = None) -> VectorIndex | None:
    """Embed this rank's shards; rank 0 then builds the index and returns it (other ranks return None).

    Prints `rank R/W: embedded N of M items` per rank (N: the items of its shards, M: the corpus) to `out`
    (default stdout; `eval` keeps stdout for its figures). Must run inside `process_group`.
    """
    from mmembed.index import (
        cache_folder,
        embed_shard,
        embedding_fingerprint,
        load_or_build_index,
        prepare_embedding_cache,
        shard_bounds,
    )

    folder = cache_folder(cache_dir, corpus.name, embedder.name, embedder.fingerprint)
    if ctx.is_main:
        prepare_embedding_cache(corpus, embedder, folder)
    barrier()
    bounds = shard_bounds(len(corpus))
    mine = shards_of_rank(len(bounds), ctx)
    expected = embedding_fingerprint(corpus, embedder)
    done = 0
    total_mine = sum(stop - start for start, stop in (bounds[s] for s in mine))
    for shard in mine:
        embed_shard(corpus, embedder, folder, shard, expected)
        done += bounds[shard][1] - bounds[shard][0]
        if progress is not None:
            progress(done, total_mine, f"rank {ctx.rank}/{ctx.world_size} embedding")
    print(f"rank {ctx.rank}/{ctx.world_size}: embedded {done} of {len(corpus)} items", file=out or sys.stdout,
          flush=True)
    barrier()
    index = None
    if ctx.is_main:  # every shard is on disk now: this only loads them and builds the index
        index = load_or_build_index(corpus, embedder, cache_dir, index_type=index_type)
    barrier()
    return index
