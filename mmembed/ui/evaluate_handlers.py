"""The Evaluate tab's logic: parse a run request, evaluate through the workbench, filter failures, open one in
the Search tab, export. No Gradio here (the layout wires these), so handler tests need no browser.

Concurrency: an evaluation runs in its own Gradio concurrency group (see `layout`), so a search is not queued
behind it; both share the loaded models through `DemoState.model_turn` (a FairLock), which the evaluation
takes one query at a time — a search waits for at most the query in flight.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmembed.types import ValidationError
from mmembed.ui.ground_truth import KnownQuery, index_queries

if TYPE_CHECKING:
    from mmembed.progress import ProgressFn
    from mmembed.ui.state import DemoState
    from mmembed.workbench import FailureRecord, QuerySet, WorkbenchReport

SHIPPED_LABEL = "shipped query set"
NO_COMPARE = "(none)"
ALL = "all"
MAX_DEPTH = 50
MAX_UPLOAD_MB = 5


@dataclass(frozen=True)
class EvalRequest:
    """One evaluation as the visitor asked for it, validated."""

    upload: str | None  # path of an uploaded query jsonl; None: the shipped query set
    embedders: tuple[str, ...]
    mode: str
    reranker: str | None
    depth: int
    k: int


def _int(value: Any, name: str, low: int, high: int) -> int:
    try:
        number = int(float(value))
    except (TypeError, ValueError):
        raise ValidationError(f"{name} must be a whole number, got {value!r}") from None
    if not low <= number <= high:
        raise ValidationError(f"{name} must be between {low} and {high}, got {number}")
    return number


def parse_eval_request(state: DemoState, upload: str | None, embedder: str | None, compare: str | None, mode: str,
                       rerank_on: bool, reranker: str | None, depth: Any, k: Any) -> EvalRequest:
    if not embedder:
        raise ValidationError("Pick an embedder to evaluate.")
    if mode not in ("natural", "filtered"):
        raise ValidationError(f"unknown mode {mode!r}; use 'natural' or 'filtered'")
    names = [embedder] + ([compare] if compare and compare != NO_COMPARE else [])
    if len(names) == 2 and names[0] == names[1]:
        raise ValidationError("Pick a different second embedder to compare with (or none).")
    for name in names:
        state.check_usable("embedder", name)
    chosen_reranker = reranker if rerank_on and reranker else None
    if chosen_reranker:
        state.check_usable("reranker", chosen_reranker)
    return EvalRequest(upload or None, tuple(names), mode, chosen_reranker, _int(depth, "depth", 1, MAX_DEPTH),
                       _int(k, "k", 1, 100))


def query_set_for(state: DemoState, upload: str | None) -> QuerySet:
    """The shipped query set (read once) or the visitor's upload, checked against the loaded corpus."""
    from mmembed.workbench import MAX_UPLOAD_BYTES, load_query_set

    if upload is None:
        return state.shipped_query_set()
    return load_query_set(upload, state.corpus, name=Path(upload).name, max_bytes=MAX_UPLOAD_BYTES)


class CancelTokens:
    """Cancel flags by token: the Run event starts one (kept in the visitor's session), Cancel sets it."""

    def __init__(self) -> None:
        self._events: dict[str, threading.Event] = {}
        self._lock = threading.Lock()

    def start(self) -> tuple[str, threading.Event]:
        token, event = uuid.uuid4().hex, threading.Event()
        with self._lock:
            self._events[token] = event
        return token, event

    def event(self, token: str | None) -> threading.Event:
        """The flag of `token`; a fresh one (that nobody can set) when the token is unknown, e.g. an API call."""
        with self._lock:
            return self._events.get(token or "") or threading.Event()

    def cancel(self, token: str | None) -> bool:
        with self._lock:
            event = self._events.get(token or "")
        if event is None:
            return False
        event.set()
        return True

    def finish(self, token: str) -> None:
        with self._lock:
            self._events.pop(token, None)


def run_evaluation(state: DemoState, request: EvalRequest, progress: ProgressFn | None = None,
                   cancel: threading.Event | None = None) -> tuple[WorkbenchReport, QuerySet]:
    """Evaluate `request` (cached in `state.workbench_cache`); the query set comes back for the failure list."""
    from mmembed.workbench import run_workbench

    query_set = query_set_for(state, request.upload)
    retrievers = [state.pipeline(name, progress).retriever for name in request.embedders]
    reranker = state.reranker(request.reranker, progress) if request.reranker else None
    report = run_workbench(query_set, retrievers, mode=request.mode, reranker=reranker, depth=request.depth,
                           k=request.k, progress=progress, cancel=cancel.is_set if cancel else None,
                           cache=state.workbench_cache, turn=state.model_turn)
    return report, query_set


def session_ground_truth(query_set: QuerySet, *, shipped: bool) -> dict[Any, KnownQuery] | None:
    """An uploaded set's queries, for the Search tab's ✓ marking in this visitor's session (the shipped set is
    known to every visitor already)."""
    return None if shipped else index_queries(query_set.queries, query_set.name)


def filter_failures(report: WorkbenchReport | None, task: str | None, kind: str | None,
                    model: str | None) -> list[FailureRecord]:
    if report is None:
        return []
    return report.failures(model=None if model in (None, "", ALL) else model,
                           task=None if task in (None, "", ALL) else task,
                           kind=None if kind in (None, "", ALL) else kind)


def failure_search(state: DemoState, report: WorkbenchReport, query_set: QuerySet, qid: str,
                   model: str) -> dict[str, Any]:
    """What the Search tab needs to show failure `qid` of `model`: the query's text, image (a corpus file),
    target and mode, the embedder that failed, the other one to compare with, and the reranker used."""
    found = next((q for q in query_set.queries if q.qid == qid), None)
    names = [run.name for run in report.models]
    if found is None or model not in names:
        raise ValidationError(f"no failure {qid!r} of {model!r} in this evaluation; run it again")
    image = found.query.image
    other = next((name for name in names if name != model), None)
    return {"text": found.query.text or "", "image": str(image) if image is not None else None,
            "target": found.query.target.label if found.query.target else "image", "mode": report.mode,
            "embedder": model, "compare": other, "reranker": report.reranker, "depth": report.depth,
            "positives": list(found.positives), "qid": qid}


def export_report(report: WorkbenchReport, folder: Path) -> tuple[Path, Path]:
    """The report as JSON and the failures as CSV, in `folder` (the page's export folder), atomically."""
    from mmembed.storage import atomic_write

    stem = f"mmembed-evaluation-{uuid.uuid4().hex[:8]}"
    json_path = atomic_write(folder / f"{stem}.json",
                             lambda tmp: tmp.write_text(report.to_json() + "\n", encoding="utf-8"))
    csv_path = atomic_write(folder / f"{stem}-failures.csv",
                            lambda tmp: tmp.write_text(report.failures_csv(), encoding="utf-8"))
    return json_path, csv_path


def copy_for_upload(image: str, folder: Path) -> str:
    """A copy of a corpus image for the Search tab's image input, in the page's scratch folder (Gradio serves
    only its own folder back; the bytes stay the same, so the ground-truth lookup recognises the query)."""
    import shutil

    from mmembed.storage import atomic_write

    source = Path(image)
    target = folder / "queries" / f"{uuid.uuid4().hex[:8]}-{source.name}"
    atomic_write(target, lambda tmp: shutil.copyfile(source, tmp))
    return str(target)
