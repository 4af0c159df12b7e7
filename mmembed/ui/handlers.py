"""What the demo does, free of Gradio: validate input, run the pipeline's two stages, details, export.

The stages go through `mmembed.pipeline` and hand back typed `SearchReport`s (the page keeps the report
of the current search in its session); `api_payload` turns one into the JSON the page renders and the
`search` API returns. Bad input raises `UserInputError` (or another MMEmbedError) whose message is shown
to the visitor. `mmembed.ui.events` turns these into Gradio events; the tests call them directly.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmembed.pipeline import MODES, RERANK_ERRORS, SearchReport, StageReport
from mmembed.progress import ProgressFn
from mmembed.types import Modality, Query, ValidationError
from mmembed.ui.ground_truth import KnownQuery, lookup, mark_payload

if TYPE_CHECKING:
    from mmembed.ui.scratch import Scratch
    from mmembed.ui.state import DemoState

# The page's words for a cache folder the server cannot write (the log names the folder; the page names none).
IN_MEMORY_NOTE = ("The index cache on this server cannot be written, so the index was built in memory for this run: "
                  "searches work, and the server rebuilds it at its next start.")
MAX_QUERY_CHARS = 2000  # far beyond any model's context; longer input is a paste accident, not a query
MAX_TOP_K = 50
TARGETS = {"image": Modality.IMAGE, "text": Modality.TEXT, "image+text": Modality.IMAGE_TEXT}
RERANK_OFF = "Reranking is off: tick “Rerank the candidates” to compare."


class UserInputError(ValidationError):
    """Input the demo cannot use; the message is written for the visitor."""


@dataclass(frozen=True)
class SearchRequest:
    """A validated query as the page or the API submitted it."""

    text: str | None
    image: str | None  # path of the uploaded file, already checked with load_image
    target: Modality
    mode: str
    top_k: int
    depth: int  # how many first-stage candidates the reranker sees (>= top_k)
    embedder: str

    def cache_key(self) -> tuple[Any, ...]:
        digest = _file_digest(self.image) if self.image else None
        return (self.text, digest, self.target, self.mode, self.top_k, self.depth, self.embedder)


def _file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def parse_request(text: str | None, image: str | None, target: str, mode: str, top_k: float | int,
                  embedder: str, depth: float | int | None = None, *, state: DemoState) -> SearchRequest:
    """Check everything the visitor entered; raise UserInputError with a message for them."""
    from mmembed.images import ImageLoadError, load_image

    text = text.strip() if isinstance(text, str) and text.strip() else None
    image = str(image) if image else None
    if text is None and image is None:
        raise UserInputError("Enter a query: type some text, add an image, or both.")
    if text is not None and len(text) > MAX_QUERY_CHARS:
        raise UserInputError(f"The query text is {len(text):,} characters long; the limit is "
                             f"{MAX_QUERY_CHARS:,}. Shorten it and search again.")
    if image is not None:
        if not Path(image).is_file():  # removed by the scratch disk cap, or a path that was never uploaded
            raise UserInputError("The uploaded image is no longer on the server; upload it again.")
        try:
            load_image(image)  # decode once, safely: bombs, corrupt, empty and odd modes are caught here
        except ImageLoadError as exc:
            raise UserInputError(f"The uploaded image can't be used: {exc}") from exc
    modality = _parse_target(target)
    if mode not in MODES:
        raise UserInputError(f"Unknown mode {mode!r}; choose natural or filtered.")
    try:
        k = int(top_k)
    except (TypeError, ValueError):
        raise UserInputError(f"top-k must be a whole number, got {top_k!r}") from None
    if not 1 <= k <= MAX_TOP_K:
        raise UserInputError(f"top-k must be between 1 and {MAX_TOP_K}, got {k}")
    wanted_depth = int(depth) if depth else state.settings.rerank_top_k
    depth_k = min(max(wanted_depth, k), MAX_TOP_K)
    state.check_usable("embedder", embedder)
    return SearchRequest(text, image, modality, mode, k, depth_k, embedder)


def _parse_target(target: str) -> Modality:
    key = str(target or "").strip().lower().replace(" ", "")
    if key in TARGETS:
        return TARGETS[key]
    try:
        return Modality.parse(key)
    except ValidationError:
        raise UserInputError(f"Unknown target modality {target!r}; choose image, text or image+text.") from None


def notes_to_toast(notes: tuple[str, ...] | list[str]) -> list[str]:
    """The embedder notes worth a pop-up: those about the visitor's own input (it was cut short).

    Every note is in the status line; routine ones ("image read at 64x64 px", "takes no instructions")
    would pop up on every query and teach visitors to ignore warnings.
    """
    return [note for note in notes if "truncated" in note.lower()]


def _ms(since: float) -> float:
    return (time.perf_counter() - since) * 1000


# --- the two stages -----------------------------------------------------------------------------------

def first_stage(state: DemoState, request: SearchRequest, progress: ProgressFn | None = None) -> SearchReport:
    """Retrieve; the report's reranked stage is "pending". Repeated queries come from the result cache."""
    loading = time.perf_counter()
    query = Query(text=request.text, image=request.image, target=request.target)
    cached = state.results.get(("first", *request.cache_key()))
    if cached is not None:
        # this visitor's own query (never the first asker's upload), and the time this answer took
        return replace(cached, query=query, cached=True, timings_ms={"first_stage": _ms(loading)})
    pipeline = state.pipeline(request.embedder, progress)  # slow only the first time (model + index)
    load_ms = _ms(loading)
    with state.model_turn:  # shared with a running evaluation, which takes the models a query at a time
        report = pipeline.retrieve(query, request.top_k, request.mode, depth=request.depth,
                                   requested_embedder=request.embedder, progress=progress)
    notes = (*report.notes, IN_MEMORY_NOTE) if pipeline.retriever.in_memory_only else report.notes
    report = replace(report, reranked=StageReport("pending", message="Reranking…"), notes=notes,
                     timings_ms={"model_and_index_load": load_ms, **report.timings_ms})
    state.results.put(("first", *request.cache_key()), report)
    return report


def second_stage_steps(state: DemoState, report: SearchReport, reranker_name: str | None, enabled: bool,
                       progress: ProgressFn | None = None) -> Iterator[SearchReport]:
    """Rerank `report`'s candidates: a report after every scored batch, the finished one last.

    Never raises for a reranker that is off, unknown, unavailable or failing: the column says why.
    """
    refusal = _refusal(state, reranker_name, enabled)
    if refusal is not None:
        yield report.with_reranked(refusal)
        return
    assert reranker_name is not None  # _refusal covers the empty name
    key = ("rerank", reranker_name, *_report_key(report))
    started = time.perf_counter()
    cached = state.results.get(key)
    if cached is not None:
        yield replace(cached, query=report.query, cached=True,
                      timings_ms={**report.timings_ms, "rerank": _ms(started)})
        return
    try:
        reranker = state.reranker(reranker_name, progress)
    except RERANK_ERRORS as exc:  # a reranker that cannot load must not take the page down
        yield report.with_reranked(StageReport("error", message=f"Reranker '{reranker_name}' could not run: "
                                               f"{exc}. The first stage is unaffected.", reranker=reranker_name))
        return
    final = report
    steps = state.pipeline(report.requested_embedder or report.embedder).rerank_steps(report, reranker,
                                                                                       progress=progress)
    while True:
        # the models' turn is held per scored batch, never across a yield (Gradio may resume a generator
        # on another thread)
        with state.model_turn:
            step = next(steps, None)
        if step is None:
            break
        final = step
        yield final
    if final.reranked.status == "done":
        state.results.put(key, replace(final, cached=False))


def second_stage(state: DemoState, report: SearchReport, reranker_name: str | None, enabled: bool,
                 progress: ProgressFn | None = None) -> SearchReport:
    """The finished reranked report (the last of `second_stage_steps`)."""
    *_, final = second_stage_steps(state, report, reranker_name, enabled, progress)
    return final


def _refusal(state: DemoState, name: str | None, enabled: bool) -> StageReport | None:
    """Why the reranker will not run (off, none, unknown, unavailable here), or None when it can."""
    if not enabled:
        return StageReport("off", message=RERANK_OFF)
    if not name:
        return StageReport("unavailable", message="No reranker is registered.")
    choices = {choice.name: choice for choice in state.reranker_choices()}
    if name not in choices:
        return StageReport("unavailable", reranker=name,
                           message=f"Unknown reranker '{name}'; choose one of: {', '.join(choices)}.")
    if choices[name].reason:
        return StageReport("unavailable", reranker=name,
                           message=f"Reranker '{name}' is unavailable here: {choices[name].reason} (python -m "
                           f"mmembed prefetch --reranker {name}). The first stage is unaffected.")
    return None


def _report_key(report: SearchReport) -> tuple[Any, ...]:
    """What makes two first-stage reports rerank the same way (the query's image by content, not name)."""
    query = report.query
    digest = _file_digest(query.image) if isinstance(query.image, (str, Path)) else None
    return (query.text, digest, query.target, report.mode, report.top_k, report.depth, report.embedder)


def search(state: DemoState, text: str | None, image: str | None, target: str, mode: str, top_k: float | int,
           rerank_enabled: bool, embedder: str, reranker: str | None, depth: float | int | None = None,
           progress: ProgressFn | None = None) -> dict[str, Any]:
    """Both stages in one call: what the `search` API endpoint returns (the same data the page shows)."""
    request = parse_request(text, image, target, mode, top_k, embedder, depth, state=state)
    report = second_stage(state, first_stage(state, request, progress), reranker, rerank_enabled, progress)
    return api_payload(state, report)


def api_payload(state: DemoState, report: SearchReport,
                known: Mapping[Any, KnownQuery] | None = None) -> dict[str, Any]:
    """The report as the page renders it, the API returns it and the export writes it: images by their
    corpus-relative path and `/corpus/...` URL only (no server path leaves the server).

    When the query is one of an evaluation set's (the visitor's uploaded set `known`, or the shipped one),
    `ground_truth` names it and every hit says whether it is one of its positives."""
    files = state.corpus_files()
    payload = report.to_dict(image_path=files.public_path, image_url=files.url)
    return mark_payload(payload, ground_truth_of(state, report, known))


def ground_truth_of(state: DemoState, report: SearchReport,
                    known: Mapping[Any, KnownQuery] | None = None) -> KnownQuery | None:
    query = report.query
    return lookup(query.text, query.image, query.target, known, state.shipped_ground_truth())


# --- details and export -------------------------------------------------------------------------------

def result_choices(report: SearchReport | None) -> list[tuple[str, str]]:
    """(label, id) for every result on the page, first stage first, then items only the reranker surfaced."""
    if report is None:
        return []
    seen: dict[str, str] = {}
    for hit in report.first_stage:
        seen[hit.item.id] = f"#{hit.rank} {hit.item.id} ({hit.item.modality.label})"
    for hit in report.reranked.hits:
        seen.setdefault(hit.item.id, f"new #{hit.rank} {hit.item.id} ({hit.item.modality.label})")
    return [(label, item_id) for item_id, label in seen.items()]


def item_details(state: DemoState, report: SearchReport | None, item_id: str | None,
                 known: Mapping[Any, KnownQuery] | None = None) -> dict[str, Any] | None:
    """Full text, image path, attribution and both stages' rank and score of one result."""
    if report is None or not item_id:
        return None
    try:
        item = state.corpus[item_id]
    except KeyError:
        raise UserInputError(f"No result {item_id!r} in this search.") from None

    def stage(name: str) -> dict[str, Any] | None:
        hit = next((hit for hit in report.hits(name) if hit.item.id == item_id), None)
        return {"rank": hit.rank, "score": round(float(hit.score), 6)} if hit else None

    meta = {k: v for k, v in item.meta.items() if isinstance(v, (str, int, float, bool))}
    licence = meta.get("license") or meta.get("licence")
    return {
        "id": item.id,
        "modality": item.modality.value,
        "text": item.text,
        "image": state.corpus_files().public_path(item),  # corpus-relative: no server path leaves the server
        "meta": meta,
        "license_name": state.licences().get(str(licence)) if licence is not None else None,
        "first_stage": stage("first_stage"),
        "reranked": stage("reranked"),
        "reranked_status": report.reranked.status,  # "off"/"unavailable"/"error": say so, not "absent"
        "positive_of": found.qid if (found := ground_truth_of(state, report, known)) and item.id in found.positives
        else None,
    }


def pick_backend(state: DemoState, kind: str, name: str | None, previous: str | None) -> tuple[str | None, str | None]:
    """What the embedder/reranker dropdown keeps after the visitor picked `name`, and a warning if refused.

    An unavailable backend ("⊘ … — needs a GPU") cannot be disabled inside a Gradio dropdown, so picking it
    is refused here: the dropdown returns to `previous` and the visitor reads why.
    """
    if not name:
        return previous, None
    found = {choice.name: choice for choice in state.choices(kind)}
    if name not in found:
        return previous, f"Unknown {kind} '{name}'; choose one of: {', '.join(found)}."
    reason = found[name].reason
    if reason is None:
        return name, None
    message = f"The {kind} '{name}' can't be used here: {reason}."
    return previous, f"{message} Staying with '{previous}'." if previous else message


def export_json(state: DemoState, report: SearchReport | None, scratch: Scratch,
                known: Mapping[Any, KnownQuery] | None = None) -> Path:
    """Write the report's payload (what the API returns) to a new JSON file in `scratch`; return its path.

    Called only when a visitor asks for an export: the scratch area's disk cap bounds what they add up to.
    """
    if report is None:
        raise UserInputError("Run a search first; there is nothing to export yet.")
    return scratch.write_export(api_payload(state, report, known))
