"""The reranker contract and `rerank()`, which turns first-stage hits into reranked hits.

A reranker scores (query, candidate) pairs; higher is better. MLLM rerankers return P("True") in
[0, 1]. `rerank` optionally fuses that with the first-stage score:
    fused = weight * first_stage + (1 - weight) * reranker      (weight 0 = pure reranker, the default)
First-stage inner products of unit vectors lie in [-1, 1] and P("True") in [0, 1]; we map the
first-stage score to [0, 1] with (s + 1) / 2 before fusing so both terms live on the same scale.
`fusion_weight=None` takes the reranker's own `fusion_weight` attribute when it has one (mmembed-mini-rerank
ships the weight selected on its training set's validation split), else 0.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from typing import Protocol, runtime_checkable

from mmembed.progress import ProgressFn
from mmembed.types import Hit, Item, Query, ValidationError


@runtime_checkable
class Reranker(Protocol):
    """What every second-stage model offers: a relevance score per (query, candidate) pair."""

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
    fusion_weight: float | None = None,
    progress: ProgressFn | None = None,
) -> list[Hit]:
    """Rescore the first `top_k` hits (all if None) and return them re-sorted with ranks 1..n.

    Each returned Hit keeps the first-stage score in `first_stage_score` and its old rank in
    `original_rank`, so `Hit.movement` tells how far it moved. Ties keep first-stage order.
    `fusion_weight` in [0, 1] mixes in the first-stage score (see the module docstring): 0 ranks by the
    reranker alone, 1 keeps the first-stage order, 0.5 averages the two on a [0, 1] scale; None (default)
    takes the reranker's own `fusion_weight`, or 0 when it has none.
    """
    fusion_weight = resolve_fusion_weight(reranker, fusion_weight)
    pool = list(hits if top_k is None else hits[:top_k])
    if not pool:
        return []
    scores = reranker.score(query, [hit.item for hit in pool], progress=progress)
    if len(scores) != len(pool):
        raise RuntimeError(f"reranker {reranker.name!r} returned {len(scores)} scores for {len(pool)} items")
    return _ranked(pool, dict(enumerate(scores)), fusion_weight)


def iter_rerank(
    query: Query,
    hits: Sequence[Hit],
    reranker: Reranker,
    top_k: int | None = None,
    *,
    fusion_weight: float | None = None,
    progress: ProgressFn | None = None,
    first_batch: int | None = 2,
) -> Iterator[list[Hit]]:
    """`rerank`, step by step: after each scored batch, the candidates scored so far in reranked order.

    Ranks are among the scored candidates (1..m); the last list yielded is exactly `rerank`'s result.
    A reranker with a `score_batches(query, items, progress=, first_batch=)` method (MLLMReranker) reports
    every batch, and `first_batch` keeps the first one small so a page shows results early; any other
    reranker is scored in one call (one step).
    """
    fusion_weight = resolve_fusion_weight(reranker, fusion_weight)
    pool = list(hits if top_k is None else hits[:top_k])
    if not pool:
        yield []
        return
    stream = getattr(reranker, "score_batches", None)
    if stream is None:
        yield rerank(query, pool, reranker, fusion_weight=fusion_weight, progress=progress)
        return
    scores: dict[int, float] = {}
    for indices, values in stream(query, [hit.item for hit in pool], progress=progress, first_batch=first_batch):
        scores.update(zip(indices, (float(v) for v in values), strict=True))
        yield _ranked(pool, scores, fusion_weight)
    if len(scores) != len(pool):
        raise RuntimeError(f"reranker {reranker.name!r} scored {len(scores)} of {len(pool)} items")


def resolve_fusion_weight(reranker: Reranker, fusion_weight: float | None) -> float:
    """`fusion_weight`, or the reranker's own (`fusion_weight` attribute) when None, else 0; checked."""
    if fusion_weight is None:
        fusion_weight = float(getattr(reranker, "fusion_weight", 0.0) or 0.0)
    if not 0.0 <= fusion_weight <= 1.0:
        raise ValidationError(f"fusion_weight must be in [0, 1], got {fusion_weight}")
    return fusion_weight


def _ranked(pool: list[Hit], scores: dict[int, float], fusion_weight: float) -> list[Hit]:
    """The scored members of `pool` (position -> reranker score), fused and sorted; ties keep first-stage order."""
    fused = {i: fusion_weight * (pool[i].score + 1.0) / 2.0 + (1.0 - fusion_weight) * float(score)
             for i, score in scores.items()}
    order = sorted(fused, key=lambda i: (-fused[i], pool[i].rank))
    return [
        replace(pool[i], score=fused[i], rank=new_rank, first_stage_score=pool[i].score,
                original_rank=pool[i].rank)
        for new_rank, i in enumerate(order, start=1)
    ]
