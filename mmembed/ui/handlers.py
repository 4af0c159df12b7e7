"""What the demo does, free of Gradio: validate input, retrieve, rerank, summarise, export.

Every function returns plain JSON-able dicts (the page renders them, the `search` API returns them),
and bad input raises `UserInputError` (or another MMEmbedError) whose message is shown to the visitor.
`mmembed.ui.layout` turns these into Gradio events; the tests call them directly.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmembed.progress import ProgressFn, report
from mmembed.types import Hit, MMEmbedError, Modality, Query, ValidationError
from mmembed.ui.state import parse_licences

if TYPE_CHECKING:
    from mmembed.ui.files import CorpusFiles
    from mmembed.ui.scratch import Scratch
    from mmembed.ui.state import DemoState

# The page's words for a cache folder the server cannot write (the log names the folder; the page names none).
IN_MEMORY_NOTE = ("The index cache on this server cannot be written, so the index was built in memory for this run: "
                  "searches work, and the server rebuilds it at its next start.")
MAX_QUERY_CHARS = 2000  # far beyond any model's context; longer input is a paste accident, not a query
MAX_TOP_K = 50
SNIPPET_CHARS = 220
TARGETS = {"image": Modality.IMAGE, "text": Modality.TEXT, "image+text": Modality.IMAGE_TEXT}
MODES = ("natural", "filtered")


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


def _file_digest(path: str) -> str:
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
    key = str(target or "").strip().lower().replace(" ", "")
    modality = TARGETS.get(key)
    if modality is None:
        try:
            modality = Modality.parse(key)
        except ValidationError:
            raise UserInputError(f"Unknown target modality {target!r}; choose image, text or image+text.") from None
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


# --- payload pieces -----------------------------------------------------------------------------------

def _json_float(value: float | None) -> float | None:
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def hit_record(hit: Hit, target: Modality, files: CorpusFiles | None) -> dict[str, Any]:
    """One hit as the page, the API and the export show it: the image as a corpus-relative path and URL only
    (no server path: the URL is fetched from the server's own address)."""
    item = hit.item
    text = item.text or ""
    return {
        "rank": hit.rank,
        "id": item.id,
        "modality": item.modality.value,
        "modality_label": item.modality.label,
        "score": round(float(hit.score), 6),
        "matches_target": item.modality is target,
        "text": text if len(text) <= SNIPPET_CHARS else text[: SNIPPET_CHARS - 1].rstrip() + "…",
        "image": files.public_path(item) if files is not None else None,
        "image_url": files.url(item) if files is not None else None,
    }


def mix_records(hits: list[Hit], state: DemoState) -> list[dict[str, Any]]:
    from mmembed.bias import modality_mix

    frame = modality_mix(hits, state.corpus)
    return [
        {"modality": row.modality, "label": row.label, "count": int(row.count), "share": _json_float(row.share),
         "pool_share": _json_float(row.pool_share), "skew": _json_float(row.skew)}
        for row in frame.itertuples(index=False)
    ]


def stage_record(hits: list[Hit], request_target: Modality, state: DemoState, **extra: Any) -> dict[str, Any]:
    from mmembed.bias import wrong_modality_rate

    files = state.corpus_files()
    return {
        "hits": [hit_record(hit, request_target, files) for hit in hits],
        "modality_mix": mix_records(hits, state),
        "wrong_modality_rate": wrong_modality_rate(hits, request_target),
        **extra,
    }


def _movement_label(hit: Hit, shown: int) -> str:
    if hit.original_rank is None or hit.original_rank > shown:
        return "new"
    moved = hit.original_rank - hit.rank
    return "=" if moved == 0 else f"↑{moved}" if moved > 0 else f"↓{-moved}"


def notes_to_toast(notes: list[str]) -> list[str]:
    """The embedder notes worth a pop-up: those about the visitor's own input (it was cut short).

    Every note is in the status line; routine ones ("image read at 64x64 px", "takes no instructions")
    would pop up on every query and teach visitors to ignore warnings.
    """
    return [note for note in notes if "truncated" in note.lower()]


# --- the two stages -----------------------------------------------------------------------------------

def first_stage(state: DemoState, request: SearchRequest, progress: ProgressFn | None = None) -> dict[str, Any]:
    """Retrieve; returns the session dict {payload, candidates, query_image} with the reranked stage pending."""
    loading = time.perf_counter()
    cached = state.results.get(("first", *request.cache_key()))
    if cached is not None:
        # the stored timings belong to the first run; this answer took only the lookup
        payload = {**cached["payload"], "cached": True,
                   "timings_ms": {"first_stage": round((time.perf_counter() - loading) * 1000, 1)}}
        return _own(request, {**cached, "payload": payload})
    retriever, note = state.retriever(request.embedder, progress)  # slow only the first time (model + index)
    note = note or state.embedder_note(request.embedder)
    started = time.perf_counter()
    load_ms = round((started - loading) * 1000, 1)
    query = Query(text=request.text, image=request.image, target=request.target)
    report(progress, 0, 1, "searching")
    result = retriever.search(query, k=request.depth, target=request.target, mode=request.mode)
    shown = result.hits[: request.top_k]
    corpus = state.corpus
    payload = {
        "query": {
            "text": request.text,
            "image": None,  # the visitor's own file name is added by _own(), never cached
            "modality": query.modality.value,
            "modality_label": query.modality.label,
            "target": request.target.value,
            "target_label": request.target.label,
            "mode": request.mode,
            "top_k": request.top_k,
            "rerank_depth": request.depth,
        },
        "embedder": {"requested": request.embedder, "name": retriever.embedder.name, "note": note},
        "instruction": result.instruction,
        "notes": [*result.notes, *([IN_MEMORY_NOTE] if retriever.in_memory_only else [])],
        "pool": {"name": corpus.name, "size": len(corpus),
                 "mix": [{k: row[k] for k in ("modality", "label", "pool_share")} for row in mix_records([], state)]},
        "first_stage": stage_record(shown, request.target, state, status="done"),
        "reranked": {"status": "pending", "reranker": None, "message": "Reranking…", "hits": [],
                     "modality_mix": [], "wrong_modality_rate": None},
        "cached": False,
        "timings_ms": {"model_and_index_load": load_ms,
                       "first_stage": round((time.perf_counter() - started) * 1000, 1)},
    }
    session = {"payload": payload, "candidates": [[hit.item.id, hit.score] for hit in result.hits]}
    state.results.put(("first", *request.cache_key()), session)
    return _own(request, session)


def _own(request: SearchRequest, shared: dict[str, Any]) -> dict[str, Any]:
    """This visitor's session from a shareable one: only now does their upload (path and name) go in.

    Cached results are shared by everyone who asks the same thing (the same text, the same image bytes);
    anything a visitor supplied beyond that, such as the upload's file name, must not reach the next one.
    """
    payload = shared["payload"]
    name = Path(request.image).name if request.image else None
    return {**shared, "payload": {**payload, "query": {**payload["query"], "image": name}},
            "query_image": request.image}


def second_stage(state: DemoState, session: dict[str, Any], reranker_name: str | None, enabled: bool,
                 progress: ProgressFn | None = None) -> dict[str, Any]:
    """Rerank the session's candidates. Never raises for an unavailable reranker: the column says why."""
    payload = json.loads(json.dumps(session["payload"]))  # a copy: cached sessions are shared
    query_info = payload["query"]
    target = Modality.parse(query_info["target"])

    def finish(status: str, message: str | None, hits: list[Hit] | None = None, **extra: Any) -> dict[str, Any]:
        if hits is None:
            payload["reranked"] = {"status": status, "reranker": reranker_name if enabled else None,
                                   "message": message, "hits": [], "modality_mix": [], "wrong_modality_rate": None}
        else:
            record = stage_record(hits, target, state, status=status, reranker=reranker_name, message=message)
            for row, hit in zip(record["hits"], hits, strict=True):
                row["first_stage_rank"] = hit.original_rank
                row["first_stage_score"] = round(float(hit.first_stage_score or 0.0), 6)
                row["movement"] = hit.movement
                row["movement_label"] = _movement_label(hit, query_info["top_k"])
            payload["reranked"] = record
        payload["timings_ms"].update(extra)
        return {**session, "payload": payload}

    if not enabled:
        return finish("off", "Reranking is off: tick “Rerank with an MLLM” to compare.")
    if not reranker_name:
        return finish("unavailable", "No reranker is registered.")
    choices = {choice.name: choice for choice in state.reranker_choices()}
    if reranker_name not in choices:
        return finish("unavailable", f"Unknown reranker '{reranker_name}'; choose one of: {', '.join(choices)}.")
    if choices[reranker_name].reason:
        return finish("unavailable", f"Reranker '{reranker_name}' is unavailable here: {choices[reranker_name].reason}"
                      f" (python -m mmembed prefetch --reranker {reranker_name}). The first stage is unaffected.")
    # The key holds what decides the result (the upload by its bytes, not its name) and the cached payload
    # holds nothing the visitor supplied beyond that; their own query block goes back in on the way out.
    shared_query = {key: value for key, value in query_info.items() if key != "image"}
    cache_key = ("rerank", reranker_name, json.dumps(shared_query, sort_keys=True), payload["embedder"]["name"],
                 session.get("query_image") and _file_digest(session["query_image"]))
    started = time.perf_counter()
    cached = state.results.get(cache_key)
    if cached is not None:
        timings = {**payload["timings_ms"], "rerank": round((time.perf_counter() - started) * 1000, 1)}
        return {**session, "payload": {**cached, "query": query_info, "cached": True, "timings_ms": timings}}
    try:
        from mmembed.rerankers.base import rerank

        reranker = state.reranker(reranker_name, progress)
        query = Query(text=query_info["text"], image=session.get("query_image"), target=target)
        corpus = state.corpus
        candidates = [Hit(corpus[item_id], float(score), rank=i)
                      for i, (item_id, score) in enumerate(session["candidates"], start=1)]
        report(progress, 0, len(candidates), f"reranking {len(candidates)} candidates")
        reranked = rerank(query, candidates, reranker, progress=progress)
    except (MMEmbedError, ImportError, OSError, RuntimeError, ValueError) as exc:
        # A reranker that cannot load (weights absent offline, not installed) must not take the page down.
        return finish("error", f"Reranker '{reranker_name}' could not run: {exc}. The first stage is unaffected.")
    done = finish("done", None, reranked[: query_info["top_k"]],
                  rerank=round((time.perf_counter() - started) * 1000, 1))
    state.results.put(cache_key, {**done["payload"], "query": {**query_info, "image": None}})
    return done


def search(state: DemoState, text: str | None, image: str | None, target: str, mode: str, top_k: float | int,
           rerank_enabled: bool, embedder: str, reranker: str | None, depth: float | int | None = None,
           progress: ProgressFn | None = None) -> dict[str, Any]:
    """Both stages in one call: what the `search` API endpoint returns (the same data the page shows)."""
    request = parse_request(text, image, target, mode, top_k, embedder, depth, state=state)
    session = second_stage(state, first_stage(state, request, progress), reranker, rerank_enabled, progress)
    return public_payload(session["payload"])


def public_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """The payload as exported and returned by the API (identical to what the page renders)."""
    return json.loads(json.dumps(payload))


# --- details and export -------------------------------------------------------------------------------

def result_choices(session: dict[str, Any] | None) -> list[tuple[str, str]]:
    """(label, id) for every result on the page, first stage first, then items only the reranker surfaced."""
    if not session:
        return []
    payload = session["payload"]
    seen: dict[str, str] = {}
    for hit in payload["first_stage"]["hits"]:
        seen[hit["id"]] = f"#{hit['rank']} {hit['id']} ({hit['modality_label']})"
    for hit in payload["reranked"].get("hits") or []:
        if hit["id"] not in seen:
            seen[hit["id"]] = f"new #{hit['rank']} {hit['id']} ({hit['modality_label']})"
    return [(label, item_id) for item_id, label in seen.items()]


def item_details(state: DemoState, session: dict[str, Any] | None, item_id: str | None) -> dict[str, Any] | None:
    """Full text, image path, attribution and both stages' rank and score of one result."""
    if not session or not item_id:
        return None
    try:
        item = state.corpus[item_id]
    except KeyError:
        raise UserInputError(f"No result {item_id!r} in this search.") from None
    payload = session["payload"]

    def stage(key: str) -> dict[str, Any] | None:
        for hit in payload[key].get("hits") or []:
            if hit["id"] == item_id:
                return {"rank": hit["rank"], "score": hit["score"]}
        return None

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
        "reranked_status": payload["reranked"].get("status"),  # "off"/"unavailable"/"error": say so, not "absent"
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


def export_json(session: dict[str, Any] | None, scratch: Scratch) -> Path:
    """Write the session's payload (what the API returns) to a new JSON file in `scratch`; return its path.

    Called only when a visitor asks for an export: the scratch area's disk cap bounds what they add up to.
    """
    if not session:
        raise UserInputError("Run a search first; there is nothing to export yet.")
    return scratch.write_export(public_payload(session["payload"]))


__all__ = [
    "MAX_QUERY_CHARS",
    "MAX_TOP_K",
    "MODES",
    "TARGETS",
    "SearchRequest",
    "UserInputError",
    "export_json",
    "first_stage",
    "item_details",
    "notes_to_toast",
    "parse_licences",
    "parse_request",
    "pick_backend",
    "public_payload",
    "result_choices",
    "search",
    "second_stage",
]
