"""Modality-aware hard negative mining (MM-Embed, section 4.2).

A model trained with random negatives (M_rand) retrieves the top-N candidates of every training query.
Two kinds of negatives are kept, never a positive:
  C1 - candidates in the top-N whose modality is not the query's target modality: the mistakes a
       modality-biased retriever makes, exactly what it must learn to push down;
  C2 - candidates of the target modality ranked beyond `threshold` (but within the top-N): hard, yet far
       enough down that they are unlikely to be unlabelled positives (false negatives).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from mmembed.types import Item, Modality, Query, ValidationError

if TYPE_CHECKING:
    import numpy as np

    from mmembed.embedders.base import Embedder


@dataclass(frozen=True)
class MinedNegatives:
    """A query's hard negatives: wrong-modality ones (C1) and low-ranked ones of the target modality (C2)."""

    wrong_modality: tuple[str, ...]  # C1, in rank order
    ranked_low: tuple[str, ...]  # C2, in rank order

    @property
    def all(self) -> tuple[str, ...]:
        return self.wrong_modality + self.ranked_low


def top_n_indices(query_vectors: np.ndarray, pool_vectors: np.ndarray, n: int, chunk: int = 1024) -> np.ndarray:
    """(q, min(n, pool)) pool indices by descending inner product, ties broken by index (stable)."""
    import numpy as np

    n = min(n, len(pool_vectors))
    out = np.zeros((len(query_vectors), n), dtype=np.int64)
    for start in range(0, len(query_vectors), chunk):
        scores = query_vectors[start : start + chunk] @ pool_vectors.T
        order = np.argsort(-scores, axis=1, kind="stable")[:, :n]
        out[start : start + chunk] = order
    return out


def mine_from_rankings(rankings: np.ndarray, pool_ids: Sequence[str], pool_modalities: Sequence[Modality],
                       targets: Sequence[Modality], positives: Sequence[Sequence[str]], threshold: int = 45
                       ) -> list[MinedNegatives]:
    """C1/C2 per query from its ranked pool indices (rank 1 = rankings[q, 0])."""
    if threshold < 0:
        raise ValidationError(f"threshold must be >= 0, got {threshold}")
    mined = []
    for row, target, pos in zip(rankings, targets, positives, strict=True):
        pos_set = set(pos)
        c1, c2 = [], []
        for rank, index in enumerate(row, 1):
            did = pool_ids[index]
            if did in pos_set:
                continue
            if pool_modalities[index] is not target:
                c1.append(did)
            elif rank > threshold:
                c2.append(did)
        mined.append(MinedNegatives(tuple(c1), tuple(c2)))
    return mined


def mine_from_vectors(query_vectors: np.ndarray, pool_vectors: np.ndarray, pool_ids: Sequence[str],
                      pool_modalities: Sequence[Modality], targets: Sequence[Modality],
                      positives: Sequence[Sequence[str]], top_n: int = 50, threshold: int = 45
                      ) -> list[MinedNegatives]:
    if top_n < 1:
        raise ValidationError(f"top_n must be >= 1, got {top_n}")
    if threshold >= top_n:
        raise ValidationError(f"threshold ({threshold}) must be below top_n ({top_n}) or C2 is always empty")
    rankings = top_n_indices(query_vectors, pool_vectors, top_n)
    return mine_from_rankings(rankings, pool_ids, pool_modalities, targets, positives, threshold)


def mine_with_embedder(embedder: Embedder, pool: Sequence[Item], queries: Sequence[Query],
                       positives: Sequence[Sequence[str]], top_n: int = 50, threshold: int = 45
                       ) -> list[MinedNegatives]:
    """Mining with any embedder backend: every query must carry its target modality."""
    import numpy as np

    missing = [i for i, q in enumerate(queries) if q.target is None]
    if missing:
        raise ValidationError(f"mining needs each query's target modality; queries {missing[:5]} have none")
    pool_vectors = embedder.embed_items(pool)
    query_vectors = np.stack([embedder.embed_query(q) for q in queries])
    return mine_from_vectors(query_vectors, pool_vectors, [i.id for i in pool], [i.modality for i in pool],
                             [q.target for q in queries], positives, top_n, threshold)


def summarize(mined: Sequence[MinedNegatives]) -> dict[str, float | int]:
    n = max(len(mined), 1)
    c1 = sum(len(m.wrong_modality) for m in mined)
    c2 = sum(len(m.ranked_low) for m in mined)
    return {"queries": len(mined), "c1_wrong_modality": c1, "c2_ranked_low": c2,
            "queries_with_negatives": sum(1 for m in mined if m.all), "c1_per_query": round(c1 / n, 2),
            "c2_per_query": round(c2 / n, 2)}
