"""Recall@k per task type on M-BEIR-format queries, plus the wrong-modality rate per target modality.

Recall@k follows M-BEIR: a query counts as a hit when any of its positives is in the top k.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from mmembed.bias import wrong_modality_rate
from mmembed.corpus import TASK_NAMES, EvalQuery
from mmembed.progress import ProgressFn, report
from mmembed.retriever import Retriever


@dataclass
class EvalReport:
    """recall[task][k] and wrong_modality[target][k] as fractions in [0, 1]; counts per task/target."""

    mode: str
    ks: tuple[int, ...]
    recall: dict[str, dict[int, float]] = field(default_factory=dict)
    query_counts: dict[str, int] = field(default_factory=dict)
    wrong_modality: dict[str, dict[int, float]] = field(default_factory=dict)
    wrong_ks: tuple[int, ...] = (1, 5)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "recall": {task: {f"R@{k}": round(v, 4) for k, v in by_k.items()} for task, by_k in self.recall.items()},
            "queries": self.query_counts,
            "wrong_modality_rate": {t: {f"@{k}": round(v, 4) for k, v in by_k.items()}
                                    for t, by_k in self.wrong_modality.items()},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def to_markdown(self) -> str:
        head = "| task | queries | " + " | ".join(f"R@{k}" for k in self.ks) + " |"
        lines = [head, "|" + "---|" * (2 + len(self.ks))]
        for task, by_k in self.recall.items():
            cells = " | ".join(f"{100 * by_k[k]:.1f}" for k in self.ks)
            lines.append(f"| {task} | {self.query_counts[task]} | {cells} |")
        lines += ["", "| target | " + " | ".join(f"wrong-modality @{k}" for k in self.wrong_ks) + " |",
                  "|" + "---|" * (1 + len(self.wrong_ks))]
        for target, by_k in self.wrong_modality.items():
            lines.append(f"| {target} | " + " | ".join(f"{100 * by_k[k]:.1f}%" for k in self.wrong_ks) + " |")
        return "\n".join(lines)


def evaluate(retriever: Retriever, queries: Sequence[EvalQuery], ks: Sequence[int] = (1, 5, 10),
             mode: str = "natural", progress: ProgressFn | None = None) -> EvalReport:
    ks = tuple(sorted(set(ks)))
    wrong_ks = (1, 5)
    depth = max(*ks, *wrong_ks)
    hits_by_task: dict[str, list[list[bool]]] = defaultdict(list)
    wrong_by_target: dict[str, list[list[float]]] = defaultdict(list)
    retriever.ensure_index(progress)
    for done, eval_query in enumerate(queries, start=1):
        result = retriever.search(eval_query.query, k=depth, mode=mode)
        ranked = [hit.item.id for hit in result.hits]
        positives = set(eval_query.positives)
        found = [bool(positives & set(ranked[:k])) for k in ks]
        hits_by_task[eval_query.task].append(found)
        hits_by_task["overall"].append(found)
        if result.target is not None:
            rates = [wrong_modality_rate(result.hits, result.target, k) or 0.0 for k in wrong_ks]
            wrong_by_target[result.target.label].append(rates)
            wrong_by_target["overall"].append(rates)
        report(progress, done, len(queries), "evaluating")

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
