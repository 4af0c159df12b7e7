"""The reranker contract and `rerank()`, which turns first-stage hits into reranked hits.

A reranker scores (query, candidate) pairs; higher is better. MLLM rerankers return P("True") in
[0, 1]. `rerank` optionally fuses that with the first-stage score:
    fused = weight * first_stage + (1 - weight) * reranker      (weight 0 = pure reranker, the default)
First-stage inner products of unit vectors lie in [-1, 1] and P("True") in [0, 1]; we map the
first-stage score to [0, 1] with (s + 1) / 2 before fusing so both terms live on the same scale.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Protocol, runtime_checkable

from mmembed.progress import ProgressFn
from mmembed.types import Hit, Item, Query, ValidationError


@runtime_checkable
class Reranker(Protocol):
    name: str

    def score(self, query: Query, items: Sequence[Item], *, progress: ProgressFn | None = None) -> list[float]:
        """One score per item, in order; never raises for a single bad candidate."""
        ...


def rerank(
    query: Query,
    hits: Sequence[Hit],
    reranker: Reranker,
    top_k: int | None = None,
    *,
    fusion_weight: float = 0.0,
    progress: ProgressFn | None = None,
) -> list[Hit]:
    """Rescore the first `top_k` hits (all if None) and return them re-sorted with ranks 1..n.

    Each returned Hit keeps the first-stage score in `first_stage_score` and its old rank in
    `original_rank`, so `Hit.movement` tells how far it moved. Ties keep first-stage order.
    `fusion_weight` in [0, 1] mixes in the first-stage score (see the module docstring): 0 (default) ranks
    by the reranker alone, 1 keeps the first-stage order, 0.5 averages the two on a [0, 1] scale.
    """
    if not 0.0 <= fusion_weight <= 1.0:
        raise ValidationError(f"fusion_weight must be in [0, 1], got {fusion_weight}")
    pool = list(hits if top_k is None else hits[:top_k])
    if not pool:
        return []
    scores = reranker.score(query, [hit.item for hit in pool], progress=progress)
    if len(scores) != len(pool):
        raise RuntimeError(f"reranker {reranker.name!r} returned {len(scores)} scores for {len(pool)} items")
    fused = [
        fusion_weight * (hit.score + 1.0) / 2.0 + (1.0 - fusion_weight) * float(score)
        for hit, score in zip(pool, scores, strict=True)
    ]
    order = sorted(range(len(pool)), key=lambda i: (-fused[i], pool[i].rank))
    return [
        replace(pool[i], score=fused[i], rank=new_rank, first_stage_score=pool[i].score,
                original_rank=pool[i].rank)
        for new_rank, i in enumerate(order, start=1)
    ]
