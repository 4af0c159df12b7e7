"""The workbench's typed results: per-model figures, the modality-confusion matrix and failure records.

A *failure* is a query whose positives are all missed in the top k ("missed") or whose rank-1 result is
in another modality than the one asked for ("wrong-modality", UniIR's type-1 error); a query can be both.
Each record keeps, per stage (first stage, and reranked when a reranker ran), the rank of the first
positive — how badly it failed — the rank-1 item and its modality, and the first result that is not a
positive, so a reader (or the page) can show the query, what came instead, and what should have.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from mmembed.metrics import EvalReport

STAGES = ("first", "reranked")
FAILURE_KINDS = ("missed", "wrong-modality")
FORMAT_VERSION = 1


@dataclass(frozen=True)
class StageOutcome:
    """One query at one stage. Ranks are 1-based; None means "not among the ranks looked at"."""

    first_positive_rank: int | None
    first_positive_id: str | None
    rank1_id: str | None
    rank1_modality: str | None
    first_wrong_id: str | None
    kinds: tuple[str, ...] = ()


@dataclass(frozen=True)
class FailureRecord:
    """A query one model got wrong at some stage. `kinds` is the union over stages, in FAILURE_KINDS order."""

    qid: str
    task: str
    model: str
    target: str | None
    query_text: str | None
    query_image: str | None  # relative to the corpus folder when it lies inside it (never a server path)
    positives: tuple[str, ...]
    stages: dict[str, StageOutcome]

    @property
    def kinds(self) -> tuple[str, ...]:
        found = {kind for outcome in self.stages.values() for kind in outcome.kinds}
        return tuple(kind for kind in FAILURE_KINDS if kind in found)

    @property
    def final(self) -> StageOutcome:
        """The last stage that ran (reranked when there was a reranker): what a user of the pipeline sees."""
        return self.stages["reranked"] if "reranked" in self.stages else self.stages["first"]

    def severity(self) -> tuple[int, int]:
        """Sort key, worst first when sorted descending: first-positive rank of the final stage (never found
        counts as worst), then the first stage's."""
        def rank(outcome: StageOutcome | None) -> int:
            return 10**9 if outcome is None or outcome.first_positive_rank is None else outcome.first_positive_rank

        return rank(self.final), rank(self.stages.get("first"))

    def to_dict(self) -> dict[str, Any]:
        return {"qid": self.qid, "task": self.task, "model": self.model, "kinds": list(self.kinds),
                "target": self.target, "query_text": self.query_text, "query_image": self.query_image,
                "positives": list(self.positives),
                "stages": {stage: {**asdict(outcome), "kinds": list(outcome.kinds)}
                           for stage, outcome in self.stages.items()}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FailureRecord:
        stages = {stage: StageOutcome(**{**value, "kinds": tuple(value["kinds"])})
                  for stage, value in data["stages"].items()}
        return cls(data["qid"], data["task"], data["model"], data["target"], data["query_text"],
                   data["query_image"], tuple(data["positives"]), stages)


@dataclass
class ModelRun:
    """One embedder over the whole query set: figures per stage, confusion per stage, its failures."""

    name: str
    fingerprint: str
    stages: dict[str, EvalReport]
    confusion: dict[str, dict[int, dict[str, dict[str, int]]]]
    failures: list[FailureRecord] = field(default_factory=list)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "embedder": self.name, "fingerprint": self.fingerprint, "seconds": round(self.seconds, 3),
            "stages": {stage: report.to_dict() for stage, report in self.stages.items()},
            "confusion": {stage: {f"@{k}": by_target for k, by_target in by_k.items()}
                          for stage, by_k in self.confusion.items()},
            "failures": [failure.to_dict() for failure in self.failures],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelRun:
        return cls(data["embedder"], data["fingerprint"],
                   {stage: _eval_report_from_dict(value) for stage, value in data["stages"].items()},
                   {stage: {int(k.lstrip("@")): v for k, v in by_k.items()}
                    for stage, by_k in data["confusion"].items()},
                   [FailureRecord.from_dict(f) for f in data["failures"]], data["seconds"])


def _eval_report_from_dict(data: dict[str, Any]) -> EvalReport:
    """Inverse of EvalReport.to_dict (figures come back rounded to 4 places, as written)."""
    recall = {task: {int(key[2:]): value for key, value in by_k.items()} for task, by_k in data["recall"].items()}
    wrong = {target: {int(key[1:]): value for key, value in by_k.items()}
             for target, by_k in data["wrong_modality_rate"].items()}
    ks = tuple(next(iter(recall.values())).keys()) if recall else ()
    wrong_ks = tuple(next(iter(wrong.values())).keys()) if wrong else (1, 5)
    return EvalReport(mode=data["mode"], ks=ks, recall=recall, query_counts=dict(data["queries"]),
                      wrong_modality=wrong, wrong_ks=wrong_ks)


@dataclass
class WorkbenchReport:
    """Everything one workbench run found: one or two ModelRuns over the same queries and settings."""

    query_set: str
    query_hash: str
    queries: int
    mode: str
    k: int
    reranker: str | None
    depth: int | None
    models: list[ModelRun]

    @property
    def stages(self) -> tuple[str, ...]:
        return STAGES if self.reranker else STAGES[:1]

    def model(self, name: str) -> ModelRun:
        for run in self.models:
            if run.name == name:
                return run
        raise KeyError(f"no model {name!r} in this report; it has: {', '.join(m.name for m in self.models)}")

    def difference(self) -> dict[str, dict[str, dict[int, float]]] | None:
        """Recall of the second model minus the first, per stage, task and k; None with one model."""
        if len(self.models) < 2:
            return None
        first, second = self.models[0], self.models[1]
        out: dict[str, dict[str, dict[int, float]]] = {}
        for stage in self.stages:
            a, b = first.stages[stage].recall, second.stages[stage].recall
            out[stage] = {task: {k: b[task][k] - a[task][k] for k in a[task]} for task in a if task in b}
        return out

    def failures(self, *, model: str | None = None, task: str | None = None,
                 kind: str | None = None) -> list[FailureRecord]:
        """Failures filtered by model, task and kind, worst first (first positive furthest down or never found)."""
        rows = [f for run in self.models if model in (None, run.name) for f in run.failures
                if task in (None, f.task) and (kind is None or kind in f.kinds)]
        return sorted(rows, key=lambda f: (tuple(-x for x in f.severity()), f.model, f.qid))

    def to_dict(self) -> dict[str, Any]:
        difference = self.difference()
        return {
            "format_version": FORMAT_VERSION, "query_set": self.query_set, "query_hash": self.query_hash,
            "queries": self.queries, "mode": self.mode, "k": self.k, "reranker": self.reranker,
            "rerank_depth": self.depth, "models": [run.to_dict() for run in self.models],
            "difference": None if difference is None else {
                "models": [self.models[1].name, self.models[0].name],  # second minus first
                **{stage: {task: {f"R@{k}": round(v, 4) for k, v in by_k.items()} for task, by_k in by_task.items()}
                   for stage, by_task in difference.items()}},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkbenchReport:
        if data.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"workbench report format {data.get('format_version')!r}, expected {FORMAT_VERSION}")
        return cls(data["query_set"], data["query_hash"], data["queries"], data["mode"], data["k"],
                   data["reranker"], data["rerank_depth"], [ModelRun.from_dict(m) for m in data["models"]])

    def failures_jsonl(self, failures: Sequence[FailureRecord] | None = None) -> str:
        """One JSON object per failure (the CLI's --failures file), worst first."""
        rows = self.failures() if failures is None else failures
        return "".join(json.dumps(f.to_dict(), ensure_ascii=False) + "\n" for f in rows)

    def failures_csv(self, failures: Sequence[FailureRecord] | None = None) -> str:
        """One row per failing (query, model): qid, task, model, kinds, then per stage the first-positive rank,
        rank-1 modality and ids; ';' joins lists. Empty cells: not found / stage not run."""
        rows = self.failures() if failures is None else failures
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        per_stage = ("first_positive_rank", "rank1_modality", "rank1_id", "first_wrong_id", "first_positive_id",
                     "kinds")
        writer.writerow(["qid", "task", "model", "kinds", "target", "query_text", "query_image", "positives",
                         *(f"{stage}_{column}" for stage in self.stages for column in per_stage)])
        for f in rows:
            cells: list[Any] = [f.qid, f.task, f.model, ";".join(f.kinds), f.target or "", f.query_text or "",
                                f.query_image or "", ";".join(f.positives)]
            for stage in self.stages:
                outcome = f.stages.get(stage)
                values = asdict(outcome) if outcome else {}
                for column in per_stage:
                    value = values.get(column)
                    cells.append(";".join(value) if isinstance(value, (tuple, list)) else ("" if value is None
                                                                                          else value))
            writer.writerow(cells)
        return buffer.getvalue()
