"""Retrieval metrics: the one implementation behind `mmembed eval`, training validation and the benchmarks.

One naming everywhere:
- tasks are M-BEIR's short labels (`t->i`, `(i,t)->t`, see `mmembed.corpus.task_name`), plus "overall";
- Recall@k follows M-BEIR: a query is a hit when any of its positives is in the top k; keyed "R@k";
- the wrong-modality rate is the share of the top k whose modality is not the query's target (UniIR's
  "type 1" error), per target modality (its label: text, image, image+text) plus "overall"; keyed "@k".

Callers rank however they like (FAISS, an exact numpy search, a reranker) and feed each query's ranking to
a `MetricsAccumulator`; `EvalReport` holds the averages and renders them as JSON or markdown.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass, field
from typing import Any

from mmembed.corpus import TASK_NAMES
from mmembed.types import Modality

DEFAULT_KS = (1, 5, 10)
WRONG_MODALITY_KS = (1, 5)
OVERALL = "overall"


def hit_at_k(ranked_ids: Sequence[Hashable], positives: Collection[Hashable], k: int) -> bool:
    """Whether any positive is among the first k ranked ids (M-BEIR's Recall@k for one query)."""
    return any(candidate in positives for candidate in ranked_ids[: max(k, 0)])


def wrong_modality_share(modalities: Sequence[Modality], target: Modality | None, k: int | None = None) -> float | None:
    """Share of the first k modalities that are not `target`; None without a target or without results."""
    if target is None:
        return None
    top = list(modalities[: max(k, 0)] if k is not None else modalities)  # a negative k must not mean "all but last"
    if not top:
        return None
    return sum(modality is not target for modality in top) / len(top)


@dataclass
class EvalReport:
    """recall[task][k] and wrong_modality[target][k] as fractions in [0, 1]; query counts per task."""

    mode: str
    ks: tuple[int, ...]
    recall: dict[str, dict[int, float]] = field(default_factory=dict)
    query_counts: dict[str, int] = field(default_factory=dict)
    wrong_modality: dict[str, dict[int, float]] = field(default_factory=dict)
    wrong_ks: tuple[int, ...] = WRONG_MODALITY_KS

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

    def to_markdown(self, after: EvalReport | None = None) -> str:
        """One table for Recall@k, one for the wrong-modality rate; given `after` (the same queries after
        reranking), each cell reads "first stage → reranked"."""

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


class MetricsAccumulator:
    """Collects one ranking per query and averages them into an `EvalReport`."""

    def __init__(self, ks: Sequence[int] = DEFAULT_KS, wrong_ks: Sequence[int] = WRONG_MODALITY_KS) -> None:
        self.ks = tuple(sorted(set(ks)))
        self.wrong_ks = tuple(sorted(set(wrong_ks)))
        if not self.ks or min(self.ks + self.wrong_ks) < 1:
            raise ValueError(f"k values must be positive integers, got {ks} and {wrong_ks}")
        self._hits: dict[str, list[list[bool]]] = defaultdict(list)
        self._wrong: dict[str, list[list[float]]] = defaultdict(list)

    @property
    def depth(self) -> int:
        """How many results each ranking must hold for every metric to be exact."""
        return max(self.ks + self.wrong_ks)

    def add(self, task: str, ranked_ids: Sequence[Hashable], positives: Collection[Hashable],
            target: Modality | None = None, ranked_modalities: Sequence[Modality] | None = None) -> None:
        """One query: its task label, its ranking (ids, best first), its positives, and, for the
        wrong-modality rate, its target and the modality of each ranked result."""
        found = [hit_at_k(ranked_ids, positives, k) for k in self.ks]
        self._hits[task].append(found)
        self._hits[OVERALL].append(found)
        if target is not None and ranked_modalities is not None:
            # an empty ranking has no wrong results: 0, as a filtered search that found nothing
            rates = [wrong_modality_share(ranked_modalities, target, k) or 0.0 for k in self.wrong_ks]
            self._wrong[target.label].append(rates)
            self._wrong[OVERALL].append(rates)

    def __len__(self) -> int:
        return len(self._hits.get(OVERALL, ()))

    def report(self, mode: str = "natural") -> EvalReport:
        report = EvalReport(mode=mode, ks=self.ks, wrong_ks=self.wrong_ks)
        # M-BEIR's task order first, then any other labels a query set uses, then the overall row
        order = [t for t in TASK_NAMES if t in self._hits] + sorted(
            t for t in self._hits if t not in TASK_NAMES and t != OVERALL) + [OVERALL]
        for task in order:
            rows = self._hits.get(task)
            if rows:
                report.recall[task] = {k: sum(row[i] for row in rows) / len(rows) for i, k in enumerate(self.ks)}
                report.query_counts[task] = len(rows)
        for target in [*sorted(t for t in self._wrong if t != OVERALL), OVERALL]:
            rows = self._wrong.get(target)
            if rows:
                report.wrong_modality[target] = {k: sum(r[i] for r in rows) / len(rows)
                                                 for i, k in enumerate(self.wrong_ks)}
        return report
