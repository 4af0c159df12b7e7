"""Evaluate a retriever on M-BEIR-format queries: Recall@k per task type and the wrong-modality rate per
target modality, computed by `mmembed.metrics` (the implementation training validation and the
benchmarks share).
"""

from __future__ import annotations

from collections.abc import Sequence

from mmembed.corpus import EvalQuery
from mmembed.metrics import DEFAULT_KS, EvalReport, MetricsAccumulator
from mmembed.progress import ProgressFn, report
from mmembed.retriever import Retriever

__all__ = ["EvalReport", "evaluate"]


def evaluate(retriever: Retriever, queries: Sequence[EvalQuery], ks: Sequence[int] = DEFAULT_KS,
             mode: str = "natural", progress: ProgressFn | None = None) -> EvalReport:
    """Search every query (`mode`: natural, or filtered to the target modality) and average the metrics."""
    metrics = MetricsAccumulator(ks)
    retriever.ensure_index(progress)
    for done, eval_query in enumerate(queries, start=1):
        result = retriever.search(eval_query.query, k=metrics.depth, mode=mode)
        metrics.add(eval_query.task, [hit.item.id for hit in result.hits], set(eval_query.positives),
                    result.target, [hit.item.modality for hit in result.hits])
        report(progress, done, len(queries), "evaluating")
    return metrics.report(mode)
