"""Run a query set through one or two embedders (and optionally a reranker) and build a WorkbenchReport.

Figures come from mmembed.metrics (`MetricsAccumulator`, the one metrics code path); this module only
searches, reranks, classifies failures, counts the modality confusion and caches finished reports.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmembed.metrics import DEFAULT_KS, WRONG_MODALITY_KS, MetricsAccumulator
from mmembed.progress import ProgressFn, report
from mmembed.types import Hit, MMEmbedError, Modality, ValidationError
from mmembed.workbench.report import FORMAT_VERSION, FailureRecord, ModelRun, StageOutcome, WorkbenchReport

if TYPE_CHECKING:
    from mmembed.corpus import EvalQuery
    from mmembed.metrics import EvalReport
    from mmembed.rerankers.base import Reranker
    from mmembed.retriever import Retriever

# How far down the first stage is read to find the first positive's rank (the failure list's sort key). Beyond
# it a positive counts as "not found"; flat search of a few hundred rows costs the same at 10 or 100.
RANK_DEPTH = 100


@dataclass(frozen=True)
class RankedQuery:
    """One evaluation query and the hits one stage returned for it (`target`: what that search asked for)."""

    query: EvalQuery
    hits: tuple[Hit, ...]
    target: Modality | None

    def first_positive_rank(self) -> int | None:
        """1-based rank of the first positive among the hits; None when no positive was returned."""
        positives = set(self.query.positives)
        return next((hit.rank for hit in self.hits if hit.item.id in positives), None)


class EvaluationCancelled(MMEmbedError):
    """The run was cancelled (cancel button, Ctrl-C); nothing partial is cached or reported."""


@dataclass(frozen=True)
class QuerySet:
    """Evaluation queries and where they came from; `digest` identifies the content for the result cache."""

    name: str
    digest: str
    queries: tuple[EvalQuery, ...]


def queries_digest(queries: Sequence[EvalQuery]) -> str:
    """sha256 over what a query set means (qid, text, image, target, positives, task), for sets not read from a
    file; query sets read from a file use the file's own bytes (mmembed.workbench.queryfile)."""
    digest = hashlib.sha256()
    for q in queries:
        image = str(q.query.image) if isinstance(q.query.image, (str, Path)) else repr(q.query.image)
        target = q.query.target.value if q.query.target else ""
        digest.update(json.dumps([q.qid, q.query.text, image, target, list(q.positives), q.task]).encode())
    return digest.hexdigest()


class ReportCache:
    """Finished reports by key, LRU, thread-safe; shared by every visitor, so it never holds a file name a
    visitor gave (the caller puts the display name back on the copy it returns)."""

    def __init__(self, size: int = 16) -> None:
        self.size = size
        self._data: OrderedDict[str, WorkbenchReport] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> WorkbenchReport | None:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            return None

    def put(self, key: str, value: WorkbenchReport) -> None:
        with self._lock:
            self._data[key] = value
            while len(self._data) > self.size:
                self._data.popitem(last=False)


def cache_key(query_set: QuerySet, retrievers: Sequence[Retriever], mode: str, reranker: Reranker | None,
              depth: int, k: int, ks: Sequence[int] = DEFAULT_KS) -> str:
    """(query-file hash, corpus, model fingerprints, mode, reranker and depth, k, ks) -> a hex key."""
    rerank_id = None
    if reranker is not None:
        rerank_id = [reranker.name, getattr(reranker, "fingerprint", None), depth]
    parts = [FORMAT_VERSION, query_set.digest, [r.corpus.content_hash for r in retrievers],
             [[r.embedder.name, r.embedder.fingerprint] for r in retrievers], mode, rerank_id, k, list(ks)]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def run_workbench(query_set: QuerySet, retrievers: Sequence[Retriever], *, mode: str = "natural",
                  reranker: Reranker | None = None, depth: int = 20, k: int = 10,
                  ks: Sequence[int] = DEFAULT_KS, progress: ProgressFn | None = None,
                  cancel: Callable[[], bool] | None = None, cache: ReportCache | None = None,
                  turn: AbstractContextManager[Any] | None = None) -> WorkbenchReport:
    """Evaluate `query_set` with each retriever (one, or two to compare) in `mode`, reranking the top `depth`
    with `reranker` when given. Recall is reported at `ks`; a failure is a query whose positives are all
    missed in the top `k`, or whose rank-1 result has the wrong modality (FAILURE_KINDS).

    `cancel()` is polled between queries; when it returns True, EvaluationCancelled is raised. `turn` (e.g. the
    page's FairLock) is held for one query at a time, so other users of the same models get turns in between.
    """
    check_request(query_set, retrievers, k, depth)
    ks = tuple(sorted(set(ks)))
    key = cache_key(query_set, retrievers, mode, reranker, depth, k, ks)
    if cache is not None and (hit := cache.get(key)) is not None:
        report(progress, 1, 1, "evaluation (cached)")
        return replace(hit, query_set=query_set.name)
    runs = []
    for position, retriever in enumerate(retrievers):
        runs.append(_run_model(query_set.queries, retriever, mode, reranker, depth, k, ks, progress, cancel, turn,
                               done_before=position * len(query_set.queries),
                               total=len(retrievers) * len(query_set.queries)))
    result = WorkbenchReport(query_set.name, query_set.digest, len(query_set.queries), mode, k,
                             reranker.name if reranker else None, depth if reranker else None, runs)
    if cache is not None:
        cache.put(key, result)
    return result


def check_request(query_set: QuerySet, retrievers: Sequence[Retriever], k: int, depth: int) -> None:
    """What run_workbench refuses (also checked by the distributed run, before any rank searches)."""
    if not 1 <= len(retrievers) <= 2:
        raise ValidationError(f"the workbench compares one or two embedders, got {len(retrievers)}")
    if not query_set.queries:
        raise ValidationError(f"{query_set.name}: no queries to evaluate")
    if not isinstance(k, int) or k < 1 or not isinstance(depth, int) or depth < 1:
        raise ValidationError(f"k and depth must be positive integers, got k={k!r}, depth={depth!r}")
    names = [r.embedder.name for r in retrievers]
    if len(set(names)) != len(names):
        raise ValidationError(f"pick two different embedders to compare (both are {names[0]!r})")


def _run_model(queries: Sequence[EvalQuery], retriever: Retriever, mode: str, reranker: Reranker | None,
               depth: int, k: int, ks: tuple[int, ...], progress: ProgressFn | None,
               cancel: Callable[[], bool] | None, turn: AbstractContextManager[Any] | None, *,
               done_before: int, total: int) -> ModelRun:
    started = time.perf_counter()
    retriever.ensure_index(progress)
    ranked = rank_queries(queries, retriever, mode, reranker, depth, k, ks, progress, cancel, turn,
                          done_before=done_before, total=total)
    return model_run(ranked, retriever, mode, k, ks, time.perf_counter() - started)


def rank_queries(queries: Sequence[EvalQuery], retriever: Retriever, mode: str, reranker: Reranker | None,
                 depth: int, k: int, ks: tuple[int, ...], progress: ProgressFn | None = None,
                 cancel: Callable[[], bool] | None = None, turn: AbstractContextManager[Any] | None = None, *,
                 done_before: int = 0, total: int | None = None) -> dict[str, list[RankedQuery]]:
    """Search (and rerank) each query: stage ("first", and "reranked" with a reranker) -> one row per query,
    in the queries' order. The index must be ready (`retriever.ensure_index`)."""
    from mmembed.rerankers.base import rerank

    # the depth read depends on the whole corpus, not on the queries: every rank of a split run reads the same
    read_depth = min(max(RANK_DEPTH, k, depth, *ks), len(retriever.corpus))
    ranked: dict[str, list[RankedQuery]] = {"first": []}
    if reranker is not None:
        ranked["reranked"] = []
    what = f"evaluating {retriever.embedder.name}" + (f" + {reranker.name}" if reranker is not None else "")
    for done, eval_query in enumerate(queries, start=1):
        if cancel is not None and cancel():
            raise EvaluationCancelled("evaluation cancelled")
        with turn if turn is not None else nullcontext():
            result = retriever.search(eval_query.query, k=read_depth, mode=mode)
            top = rerank(result.query, result.hits[:depth], reranker) if reranker is not None else []
        ranked["first"].append(RankedQuery(eval_query, tuple(result.hits), result.target))
        if reranker is not None:
            rest = [replace(hit, rank=rank) for rank, hit in enumerate(result.hits[depth:], start=len(top) + 1)]
            ranked["reranked"].append(RankedQuery(eval_query, (*top, *rest), result.target))
        report(progress, done_before + done, total if total is not None else len(queries), what)
    return ranked


def model_run(ranked: dict[str, list[RankedQuery]], retriever: Retriever, mode: str, k: int,
              ks: tuple[int, ...], seconds: float) -> ModelRun:
    """Figures, modality confusion and failure records of one model's ranked queries (all of them, in order)."""
    name = retriever.embedder.name
    root = retriever.corpus.root
    failures = [record for rows in zip(*ranked.values(), strict=True)
                if (record := _failure(dict(zip(ranked, rows, strict=True)), name, k, root)) is not None]
    return ModelRun(
        name=name, fingerprint=retriever.embedder.fingerprint,
        stages={stage: _figures(rows, mode, ks) for stage, rows in ranked.items()},
        confusion={stage: modality_confusion(rows, WRONG_MODALITY_KS) for stage, rows in ranked.items()},
        failures=failures, seconds=seconds)


def _figures(rows: Sequence[RankedQuery], mode: str, ks: Sequence[int]) -> EvalReport:
    metrics = MetricsAccumulator(ks, WRONG_MODALITY_KS)
    for row in rows:
        metrics.add(row.query.task, [hit.item.id for hit in row.hits], set(row.query.positives), row.target,
                    [hit.item.modality for hit in row.hits])
    return metrics.report(mode)


def modality_confusion(ranked: Sequence[RankedQuery],
                       ks: Sequence[int] = WRONG_MODALITY_KS) -> dict[int, dict[str, dict[str, int]]]:
    """Requested x retrieved modality: confusion[k][target label][retrieved label] = results of that modality
    among the top k of the queries asking for that target (k=1: what came first). Queries without a target are
    left out; every modality is a key, zeros included, so tables and charts line up."""
    labels = [modality.label for modality in Modality]
    confusion: dict[int, dict[str, dict[str, int]]] = {k: {} for k in ks}
    for row in ranked:
        if row.target is None:
            continue
        for k in ks:
            counts = confusion[k].setdefault(row.target.label, dict.fromkeys(labels, 0))
            for hit in row.hits[:k]:
                counts[hit.item.modality.label] += 1
    order = {label: i for i, label in enumerate(labels)}
    return {k: dict(sorted(by_target.items(), key=lambda kv: order[kv[0]])) for k, by_target in confusion.items()}


def _outcome(row: RankedQuery, k: int) -> StageOutcome:
    positives = set(row.query.positives)
    rank = row.first_positive_rank()
    first = row.hits[0] if row.hits else None
    kinds = []
    if rank is None or rank > k:
        kinds.append("missed")
    if first is not None and row.target is not None and first.item.modality is not row.target:
        kinds.append("wrong-modality")
    wrong = next((hit for hit in row.hits if hit.item.id not in positives), None)
    return StageOutcome(
        first_positive_rank=rank,
        first_positive_id=row.hits[rank - 1].item.id if rank is not None else None,
        rank1_id=first.item.id if first else None,
        rank1_modality=first.item.modality.label if first else None,
        first_wrong_id=wrong.item.id if wrong else None,
        kinds=tuple(kinds))


def _failure(rows: dict[str, RankedQuery], model: str, k: int, root: Path | None) -> FailureRecord | None:
    stages = {stage: _outcome(row, k) for stage, row in rows.items()}
    if not any(outcome.kinds for outcome in stages.values()):
        return None
    row = rows["first"]
    query = row.query.query
    return FailureRecord(qid=row.query.qid, task=row.query.task, model=model,
                         target=row.target.label if row.target else None, query_text=query.text,
                         query_image=_shown_path(query.image, root), positives=row.query.positives, stages=stages)


def _shown_path(image: Any, root: Path | None) -> str | None:
    """A query image as reports show it: relative to the corpus folder (no server path), else its file name."""
    if image is None:
        return None
    if not isinstance(image, (str, Path)):
        return "(in-memory image)"
    path = Path(image)
    if root is not None:
        try:
            return path.resolve().relative_to(Path(root).resolve()).as_posix()
        except ValueError:
            pass
    return path.name

