"""One typed entry point for a query: first-stage retrieval, MLLM reranking and the modality-bias metrics.

    pipeline = Pipeline(retriever, reranker)                      # the reranker is optional
    report = pipeline.search(Query(text="a red apple", target="image"), k=10, mode="natural")
    report.first_stage, report.reranked.hits, report.wrong_modality_rate("reranked")
    report.to_dict()    # the JSON the demo's `search` API returns and `mmembed search --json` prints

The page, the `/search` API and the CLI all go through `Pipeline`, so they cannot rank, count or
serialise differently. A report is immutable: a result cache may hand the same one to many callers.
Reranking never loses the first stage: a reranker that fails leaves `reranked.status == "error"` and
the reason in `reranked.message`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmembed.progress import ProgressFn, report
from mmembed.retriever import MODES  # natural: the whole pool is ranked (bias shows); filtered: only the target
from mmembed.types import Hit, Item, MMEmbedError, Modality, Query, ValidationError

if TYPE_CHECKING:
    from mmembed.corpus import Corpus
    from mmembed.rerankers.base import Reranker
    from mmembed.retriever import Retriever

SNIPPET_CHARS = 220  # text shown per hit in reports; the full text is one `corpus[id]` away
# Reranker failures that must not take the first stage down (weights absent offline, not installed, OOM).
RERANK_ERRORS = (MMEmbedError, ImportError, OSError, RuntimeError, ValueError)
STAGE_STATUSES = ("done", "pending", "running", "off", "unavailable", "error")
ImageName = Callable[[Item], str | None]  # an item -> how a report names its image (a path or a URL)


@dataclass(frozen=True)
class StageReport:
    """One ranked column and how it came about.

    `status`: done | pending (not started) | running (some candidates scored: `hits` are those, ranked
    among themselves) | off (not asked for) | unavailable | error (`message` says why).
    """

    status: str = "done"
    hits: tuple[Hit, ...] = ()
    message: str | None = None
    reranker: str | None = None  # the reranked stage's model; None for the first stage and when off
    scored: int = 0  # candidates scored so far (the reranked stage)
    candidates: int = 0  # candidates the reranker sees

    def __post_init__(self) -> None:
        if self.status not in STAGE_STATUSES:
            raise ValidationError(f"unknown stage status {self.status!r}; expected one of {STAGE_STATUSES}")


@dataclass(frozen=True)
class SearchReport:
    """Everything one query produced: both ranked lists, how the query was read, timings.

    `candidates` are the first stage's top `depth` hits (what the reranker sees); the first-stage column
    is their top `top_k`. `corpus` is the pool the query ran against (for the modality mix).
    """

    query: Query
    mode: str
    top_k: int
    depth: int
    embedder: str
    corpus: Corpus = field(repr=False, compare=False)
    candidates: tuple[Hit, ...] = ()
    reranked: StageReport = StageReport(status="off")
    instruction: str | None = None
    notes: tuple[str, ...] = ()
    requested_embedder: str | None = None  # what the caller asked for, when a fallback ran instead
    embedder_note: str | None = None  # why the fallback ran
    timings_ms: Mapping[str, float] = field(default_factory=dict)
    cached: bool = False

    @property
    def target(self) -> Modality | None:
        return self.query.target

    @property
    def first_stage(self) -> tuple[Hit, ...]:
        return self.candidates[: self.top_k]

    def hits(self, stage: str) -> tuple[Hit, ...]:
        """The hits of "first_stage" or "reranked"."""
        if stage == "first_stage":
            return self.first_stage
        if stage == "reranked":
            return self.reranked.hits
        raise ValueError(f"stage must be 'first_stage' or 'reranked', got {stage!r}")

    def wrong_modality_rate(self, stage: str = "first_stage") -> float | None:
        from mmembed.bias import wrong_modality_rate

        hits = self.hits(stage)
        return wrong_modality_rate(hits, self.target) if hits else None

    def with_reranked(self, stage: StageReport, **timings: float) -> SearchReport:
        return replace(self, reranked=stage, timings_ms={**self.timings_ms, **timings})

    def to_dict(self, *, image_path: ImageName | None = None, image_url: ImageName | None = None) -> dict[str, Any]:
        """Plain JSON-able data (no NaN): the `/search` API's answer.

        A hit's `image` is `image_path(item)` (default: the path relative to the corpus folder, as given when
        outside it); `image_url`, when given, adds each hit's URL. A server passes both, so that no server
        path leaves it.
        """
        images = (image_path or self._default_image_path, image_url)
        pool_mix = _mix_rows([], self.corpus)
        return {
            "query": self._query_dict(),
            "embedder": {"requested": self.requested_embedder or self.embedder, "name": self.embedder,
                         "note": self.embedder_note},
            "instruction": self.instruction,
            "notes": list(self.notes),
            "pool": {"name": self.corpus.name, "size": len(self.corpus),
                     "mix": [{k: row[k] for k in ("modality", "label", "pool_share")} for row in pool_mix]},
            "first_stage": {**self._stage_dict(self.first_stage, images, moved=False), "status": "done"},
            "reranked": {
                "status": self.reranked.status,
                "reranker": self.reranked.reranker,
                "message": self.reranked.message,
                **self._stage_dict(self.reranked.hits, images, moved=True),
                **({"scored": self.reranked.scored, "candidates": self.reranked.candidates}
                   if self.reranked.status == "running" else {}),
            },
            "cached": self.cached,
            "timings_ms": {key: round(float(value), 1) for key, value in self.timings_ms.items()},
        }

    def _query_dict(self) -> dict[str, Any]:
        query, target = self.query, self.target
        image = query.image
        return {
            "text": query.text,
            "image": Path(image).name if isinstance(image, (str, Path)) else None if image is None else "(image)",
            "modality": query.modality.value,
            "modality_label": query.modality.label,
            "target": target.value if target else None,
            "target_label": target.label if target else "any",
            "mode": self.mode,
            "top_k": self.top_k,
            "rerank_depth": self.depth,
        }

    def _stage_dict(self, hits: tuple[Hit, ...], images: tuple[ImageName, ImageName | None],
                    *, moved: bool) -> dict[str, Any]:
        rows = [self._hit_dict(hit, *images) for hit in hits]
        if moved:
            for row, hit in zip(rows, hits, strict=True):
                row["first_stage_rank"] = hit.original_rank
                row["first_stage_score"] = round(float(hit.first_stage_score or 0.0), 6)
                row["movement"] = hit.movement
                row["movement_label"] = movement_label(hit, self.top_k)
        return {
            "hits": rows,
            "modality_mix": _mix_rows(hits, self.corpus) if hits else [],
            "wrong_modality_rate": _wrong_rate(hits, self.target),
        }

    def _default_image_path(self, item: Item) -> str | None:
        return _relative(str(item.image), self.corpus.root) if isinstance(item.image, (str, Path)) else None

    def _hit_dict(self, hit: Hit, image_path: ImageName, image_url: ImageName | None) -> dict[str, Any]:
        item = hit.item
        row: dict[str, Any] = {
            "rank": hit.rank,
            "id": item.id,
            "modality": item.modality.value,
            "modality_label": item.modality.label,
            "score": round(float(hit.score), 6),
            "matches_target": self.target is None or item.modality is self.target,
            "text": snippet(item.text),
            "image": image_path(item),
        }
        if image_url is not None:
            row["image_url"] = image_url(item)
        return row


def snippet(text: str | None, limit: int = SNIPPET_CHARS) -> str:
    """`text` cut to `limit` characters with an ellipsis ("" for no text)."""
    text = text or ""
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def movement_label(hit: Hit, shown: int) -> str:
    """"↑3", "↓2", "=" or "new" (came from below the first stage's top `shown`)."""
    if hit.original_rank is None or hit.original_rank > shown:
        return "new"
    moved = hit.original_rank - hit.rank
    return "=" if moved == 0 else f"↑{moved}" if moved > 0 else f"↓{-moved}"


def _relative(image_file: str, root: Path | str | None) -> str:
    if root is None:
        return image_file
    try:
        return Path(image_file).relative_to(root).as_posix()
    except ValueError:
        return image_file


def _wrong_rate(hits: tuple[Hit, ...], target: Modality | None) -> float | None:
    from mmembed.bias import wrong_modality_rate

    return wrong_modality_rate(hits, target) if hits else None


def _json_float(value: float | None) -> float | None:
    return None if value is None or value != value else float(value)  # NaN is not JSON


def _mix_rows(hits: tuple[Hit, ...] | list[Hit], corpus: Corpus) -> list[dict[str, Any]]:
    from mmembed.bias import modality_mix

    frame = modality_mix(list(hits), corpus)
    return [
        {"modality": row.modality, "label": row.label, "count": int(row.count), "share": _json_float(row.share),
         "pool_share": _json_float(row.pool_share), "skew": _json_float(row.skew)}
        for row in frame.itertuples(index=False)
    ]


class Pipeline:
    """Retrieval, then (optionally) reranking, as one call. Holds loaded models; cheap to call per query.

    `reranker` is used when `search(..., rerank=True)`; pass another reranker as `rerank=` per query.
    `fusion_weight` mixes the first-stage score into the reranked order (see `rerankers.base.rerank`; None:
    the reranker's own weight, e.g. the one mmembed-mini-rerank ships, else 0).
    """

    # Candidates in the first scored batch of `rerank_steps`: small, so the first reranked results show
    # early; the rest are scored in the reranker's own batches. Measured in benchmarks/bench_ui.py.
    first_batch = 2

    def __init__(self, retriever: Retriever, reranker: Reranker | None = None, *, fusion_weight: float | None = None,
                 embedder_note: str | None = None) -> None:
        self.retriever = retriever
        self.reranker = reranker
        self.fusion_weight = fusion_weight
        self.embedder_note = embedder_note

    def retrieve(self, query: Query, k: int = 10, mode: str = "natural", *, depth: int | None = None,
                 target: Modality | str | None = None, requested_embedder: str | None = None,
                 progress: ProgressFn | None = None) -> SearchReport:
        """The first stage: the top max(k, depth) candidates; the reranked stage is "pending" (or "off"
        when this pipeline has no reranker)."""
        if not isinstance(k, int) or isinstance(k, bool) or k < 1:
            raise ValidationError(f"k must be a positive integer, got {k!r}")
        depth = max(k, depth or k)
        started = time.perf_counter()
        report(progress, 0, 1, "searching")
        result = self.retriever.search(query, k=depth, target=target, mode=mode)
        report(progress, 1, 1, "searching")
        pending = StageReport(status="pending", reranker=getattr(self.reranker, "name", None),
                              candidates=len(result.hits)) if self.reranker is not None else StageReport("off")
        return SearchReport(
            query=result.query, mode=result.mode, top_k=k, depth=depth, embedder=self.retriever.embedder.name,
            corpus=self.retriever.corpus, candidates=tuple(result.hits), reranked=pending,
            instruction=result.instruction, notes=tuple(result.notes), requested_embedder=requested_embedder,
            embedder_note=self.embedder_note,
            timings_ms={"first_stage": (time.perf_counter() - started) * 1000},
        )

    def rerank_steps(self, first: SearchReport, reranker: Reranker | None = None, *,
                     progress: ProgressFn | None = None, first_batch: int | None = None) -> Iterator[SearchReport]:
        """Rerank `first`'s candidates, yielding a report after every scored batch ("running", the hits
        scored so far) and finally the finished one ("done", or "error" with the reason).

        `first_batch` (default `Pipeline.first_batch`; 0: no cap) sizes the first scored batch."""
        from mmembed.rerankers.base import iter_rerank

        reranker = reranker or self.reranker
        if reranker is None:
            yield first.with_reranked(StageReport("off", message="No reranker was given."))
            return
        total = len(first.candidates)
        started = time.perf_counter()
        report(progress, 0, total, f"reranking {total} candidates")
        steps = iter_rerank(first.query, first.candidates, reranker, fusion_weight=self.fusion_weight,
                            progress=progress, first_batch=self.first_batch if first_batch is None else first_batch)
        ranked: list[Hit] = []
        try:
            for ranked in steps:
                if len(ranked) < total:
                    yield first.with_reranked(StageReport("running", tuple(ranked[: first.top_k]),
                                                          f"Reranking… {len(ranked)} of {total} candidates scored",
                                                          reranker.name, len(ranked), total),
                                              rerank=(time.perf_counter() - started) * 1000)
        except RERANK_ERRORS as exc:
            yield first.with_reranked(StageReport("error", message=f"Reranker '{reranker.name}' could not run: "
                                                  f"{exc}. The first stage is unaffected.", reranker=reranker.name,
                                                  candidates=total))
            return
        finally:
            steps.close()
        yield first.with_reranked(StageReport("done", tuple(ranked[: first.top_k]), None, reranker.name, total, total),
                                  rerank=(time.perf_counter() - started) * 1000)

    def rerank(self, first: SearchReport, reranker: Reranker | None = None, *,
               progress: ProgressFn | None = None) -> SearchReport:
        """`first` with its reranked stage filled in (the last step of `rerank_steps`)."""
        *_, final = self.rerank_steps(first, reranker, progress=progress, first_batch=0)
        return final

    def search(self, query: Query, k: int = 10, mode: str = "natural", *, rerank: bool | Reranker = True,
               depth: int | None = None, target: Modality | str | None = None,
               progress: ProgressFn | None = None) -> SearchReport:
        """Both stages: retrieve the top max(k, depth), rerank them (with this pipeline's reranker, or the
        one given as `rerank`; `rerank=False` skips it), keep the top k of each."""
        first = self.retrieve(query, k, mode, depth=depth, target=target, progress=progress)
        if rerank is False:
            return first.with_reranked(StageReport("off", message="Reranking is off."))
        chosen = self.reranker if rerank is True else rerank
        if chosen is None:
            return first.with_reranked(StageReport("off", message="No reranker was given."))
        return self.rerank(first, chosen, progress=progress)


__all__ = ["MODES", "SNIPPET_CHARS", "Pipeline", "SearchReport", "StageReport", "movement_label", "snippet"]
