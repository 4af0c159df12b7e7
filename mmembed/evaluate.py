"""Evaluate a retriever on M-BEIR-format queries: Recall@k per task type and the wrong-modality rate per
target modality, computed by `mmembed.metrics` (the implementation training validation and the
benchmarks share).

With a reranker, every query's first-stage top `rerank_depth` is reranked too and the same metrics are
computed for that order (below the depth the first stage's order continues), reported beside the first
stage's in the report's `reranked`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from mmembed.corpus import EvalQuery
from mmembed.metrics import DEFAULT_KS, EvalReport, MetricsAccumulator
from mmembed.progress import ProgressFn, report
from mmembed.retriever import Retriever
from mmembed.types import ValidationError

if TYPE_CHECKING:
    from mmembed.rerankers.base import Reranker

DEFAULT_RERANK_DEPTH = 20

__all__ = ["EvalReport", "evaluate"]


def evaluate(retriever: Retriever, queries: Sequence[EvalQuery], ks: Sequence[int] = DEFAULT_KS,
             mode: str = "natural", progress: ProgressFn | None = None, *, reranker: Reranker | None = None,
             rerank_depth: int = DEFAULT_RERANK_DEPTH) -> EvalReport:
    """Search every query (`mode`: natural, or filtered to the target modality) and average the metrics.
    With `reranker`, also rerank each query's first-stage top `rerank_depth`: the same metrics for that
    order go to the report's `reranked`."""
    from mmembed.rerankers.base import rerank

    if rerank_depth < 1:
        raise ValidationError(f"rerank_depth must be at least 1, got {rerank_depth}")
    metrics = MetricsAccumulator(ks)
    reranked = MetricsAccumulator(ks) if reranker is not None else None
    depth = max(metrics.depth, rerank_depth) if reranker is not None else metrics.depth
    retriever.ensure_index(progress)
    for done, eval_query in enumerate(queries, start=1):
        result = retriever.search(eval_query.query, k=depth, mode=mode)
        positives = set(eval_query.positives)
        metrics.add(eval_query.task, [hit.item.id for hit in result.hits], positives, result.target,
                    [hit.item.modality for hit in result.hits])
        if reranker is not None and reranked is not None:
            hits = rerank(result.query, result.hits, reranker, top_k=rerank_depth) + list(result.hits[rerank_depth:])
            reranked.add(eval_query.task, [hit.item.id for hit in hits], positives, result.target,
                         [hit.item.modality for hit in hits])
        report(progress, done, len(queries), "evaluating" if reranker is None else "evaluating and reranking")
    out = metrics.report(mode)
    if reranker is not None and reranked is not None:
        out.reranked = reranked.report(mode)
        out.reranker, out.rerank_depth = reranker.name, rerank_depth
    return out
