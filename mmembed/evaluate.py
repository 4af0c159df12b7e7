"""Recall@k per task type on M-BEIR-format queries, plus the wrong-modality rate per target modality.

Recall@k follows M-BEIR: a query counts as a hit when any of its positives is in the top k.
With a reranker, every query's first-stage top `rerank_depth` is reranked too and the same metrics are
computed for that order (below the depth the first stage's order continues), reported beside the first stage's.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mmembed.bias import wrong_modality_rate
from mmembed.corpus import TASK_NAMES, EvalQuery
from mmembed.progress import ProgressFn, report
from mmembed.retriever import Retriever
from mmembed.types import ValidationError

if TYPE_CHECKING:
    from mmembed.rerankers.base import Reranker

DEFAULT_RERANK_DEPTH = 20


@dataclass
class EvalReport:
    """recall[task][k] and wrong_modality[target][k] as fractions in [0, 1]; counts per task/target."""

    mode: str
    ks: tuple[int, ...]
    recall: dict[str, dict[int, float]] = field(default_factory=dict)
    query_counts: dict[str, int] = field(default_factory=dict)
    wrong_modality: dict[str, dict[int, float]] = field(default_factory=dict)
    wrong_ks: tuple[int, ...] = (1, 5)
    # the same figures after reranking the first stage's top `rerank_depth` with `reranker` (None: not asked)
    reranked: EvalReport | None = None
    reranker: str | None = None
    rerank_depth: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """The first stage's figures; with a reranker, also `reranked` (the same keys) and `reranker`."""
        data: dict[str, Any] = {
            "mode": self.mode,
            "recall": {task: {f"R@{k}": round(v, 4) for k, v in by_k.items()} for task, by_k in self.recall.items()},
            "queries": self.query_counts,
            "wrong_modality_rate": {t: {f"@{k}": round(v, 4) for k, v in by_k.items()}
                                    for t, by_k in self.wrong_modality.items()},
        }
        if self.reranked is not None:
            data["reranked"] = self.reranked.to_dict()
            data["reranker"] = {"name": self.reranker, "depth": self.rerank_depth}
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        """One table per metric; with a reranker each cell reads "first stage → reranked"."""
        after = self.reranked

        def cell(value: float, other: float | None, fmt: str) -> str:
            return fmt.format(value) if other is None else f"{fmt.format(value)} → {fmt.format(other)}"

        head = "| task | queries | " + " | ".join(f"R@{k}" for k in self.ks) + " |"
        lines = [head, "|" + "---|" * (2 + len(self.ks))]
        for task, by_k in self.recall.items():
            cells = " | ".join(cell(100 * by_k[k], 100 * after.recall[task][k] if after else None, "{:.1f}")
                               for k in self.ks)
            lines.append(f"| {task} | {self.query_counts[task]} | {cells} |")
        lines += ["", "| target | " + " | ".join(f"wrong-modality @{k}" for k in self.wrong_ks) + " |",
                  "|" + "---|" * (1 + len(self.wrong_ks))]
        for target, by_k in self.wrong_modality.items():
            cells = " | ".join(cell(100 * by_k[k], 100 * after.wrong_modality[target][k] if after else None,
                                    "{:.1f}%") for k in self.wrong_ks)
            lines.append(f"| {target} | {cells} |")
        return "\n".join(lines)


def evaluate(retriever: Retriever, queries: Sequence[EvalQuery], ks: Sequence[int] = (1, 5, 10),
             mode: str = "natural", progress: ProgressFn | None = None, *, reranker: Reranker | None = None,
             rerank_depth: int = DEFAULT_RERANK_DEPTH) -> EvalReport:
    """Search every query and average the metrics; with `reranker`, also rerank each query's first-stage
    top `rerank_depth` and put the same metrics for that order in the report's `reranked`."""
    from mmembed.rerankers.base import rerank

    if rerank_depth < 1:
        raise ValidationError(f"rerank_depth must be at least 1, got {rerank_depth}")
    ks = tuple(sorted(set(ks)))
    wrong_ks = (1, 5)
    depth = max(*ks, *wrong_ks, rerank_depth if reranker is not None else 0)
    first: list[tuple[EvalQuery, Any, list]] = []
    second: list[tuple[EvalQuery, Any, list]] = []
    retriever.ensure_index(progress)
    for done, eval_query in enumerate(queries, start=1):
        result = retriever.search(eval_query.query, k=depth, mode=mode)
        first.append((eval_query, result.target, list(result.hits)))
        if reranker is not None:
            hits = rerank(result.query, result.hits, reranker, top_k=rerank_depth) + list(result.hits[rerank_depth:])
            second.append((eval_query, result.target, hits))
        report(progress, done, len(queries), "evaluating" if reranker is None else "evaluating and reranking")
    out = _report(first, ks, wrong_ks, mode)
    if reranker is not None:
        out.reranked = _report(second, ks, wrong_ks, mode)
        out.reranker, out.rerank_depth = reranker.name, rerank_depth
    return out


def _report(ranked: list[tuple[EvalQuery, Any, list]], ks: tuple[int, ...], wrong_ks: tuple[int, ...],
            mode: str) -> EvalReport:
    hits_by_task: dict[str, list[list[bool]]] = defaultdict(list)
    wrong_by_target: dict[str, list[list[float]]] = defaultdict(list)
    for eval_query, target, hits in ranked:
        ids = [hit.item.id for hit in hits]
        positives = set(eval_query.positives)
        found = [bool(positives & set(ids[:k])) for k in ks]
        hits_by_task[eval_query.task].append(found)
        hits_by_task["overall"].append(found)
        if target is not None:
            rates = [wrong_modality_rate(hits, target, k) or 0.0 for k in wrong_ks]
            wrong_by_target[target.label].append(rates)
            wrong_by_target["overall"].append(rates)

    order = [t for t in TASK_NAMES if t in hits_by_task] + sorted(
        t for t in hits_by_task if t not in TASK_NAMES and t != "overall") + ["overall"]
    report_ = EvalReport(mode=mode, ks=ks, wrong_ks=wrong_ks)
    for task in order:
        if task not in hits_by_task:
            continue
        rows = hits_by_task[task]
        report_.recall[task] = {k: sum(row[i] for row in rows) / len(rows) for i, k in enumerate(ks)}
        report_.query_counts[task] = len(rows)
    for target in [*sorted(t for t in wrong_by_target if t != "overall"), "overall"]:
        if target in wrong_by_target:
            rows = wrong_by_target[target]
            report_.wrong_modality[target] = {k: sum(r[i] for r in rows) / len(rows) for i, k in enumerate(wrong_ks)}
    return report_
