"""Orchestration only: corpus + embedder + index -> ranked Hits. No model code, no metrics here."""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmembed.progress import ProgressFn
from mmembed.types import Hit, MMEmbedError, Modality, Query, ValidationError

if TYPE_CHECKING:
    import numpy as np

    from mmembed.config import Settings
    from mmembed.corpus import Corpus
    from mmembed.embedders.base import Embedder
    from mmembed.index import VectorIndex
    from mmembed.registry import Registry

MODES = ("natural", "filtered")


@dataclass(frozen=True)
class SearchResult:
    """First-stage results plus how the query was read (instruction, notes such as truncation)."""

    query: Query
    hits: list[Hit]
    mode: str
    target: Modality | None
    instruction: str | None
    notes: tuple[str, ...] = ()


class Retriever:
    """Searches one corpus with one embedder. The index is built (or loaded from cache) once, lazily."""

    def __init__(self, corpus: Corpus, embedder: Embedder, *, cache_dir: Path | None = None,
                 index_type: str = "flat") -> None:
        from mmembed.config import default_cache_dir

        self.corpus = corpus
        self.embedder = embedder
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.index_type = index_type
        self._index: VectorIndex | None = None
        self._lock = threading.Lock()
        self.cache_notes: list[str] = []  # what went wrong with the on-disk cache, in words
        self.in_memory_only = False  # the cache folder could not be written: the index lives in memory

    @classmethod
    def from_settings(cls, settings: Settings) -> Retriever:
        from mmembed.corpus import load_corpus
        from mmembed.embedders import EMBEDDERS

        embedder = EMBEDDERS.get(settings.embedder, **embedder_options(settings, settings.embedder))
        return cls(load_corpus(settings.corpus), embedder, cache_dir=settings.cache_dir,
                   index_type=settings.index_type)

    @property
    def index(self) -> VectorIndex:
        self.ensure_index()
        assert self._index is not None
        return self._index

    def ensure_index(self, progress: ProgressFn | None = None) -> None:
        """Embed the corpus (cached on disk by fingerprint) and build the FAISS index, once.

        A cached index is served while its checksum is verified in the background; if that check fails,
        the next call rebuilds it (with a warning) before answering.
        """
        if self._index is not None and not _check_failed(self._index):
            return
        with self._lock:
            if self._index is None:
                self._index = self._load(progress)
            elif _check_failed(self._index):
                self._index = self._load(progress, failed=self._index)

    def _load(self, progress: ProgressFn | None, failed: VectorIndex | None = None) -> VectorIndex:
        from mmembed.index import CacheNotWritableWarning, IndexCacheWarning, load_or_build_index

        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", IndexCacheWarning)
            if failed is not None and getattr(failed, "check", None) is not None:
                warnings.warn(f"cached index {failed.check.path} {failed.check.problem}; rebuilding",
                              IndexCacheWarning, stacklevel=2)
            index = load_or_build_index(self.corpus, self.embedder, self.cache_dir, index_type=self.index_type,
                                        progress=progress, rebuild=failed is not None)
        for warning in caught:  # kept for the page (status line), and passed on to the caller's handlers
            if issubclass(warning.category, IndexCacheWarning):
                self.cache_notes.append(str(warning.message))
            self.in_memory_only |= issubclass(warning.category, CacheNotWritableWarning)
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        return index

    def search(self, query: Query, k: int = 10, target: Modality | str | None = None,
               mode: str = "natural") -> SearchResult:
        """Top-k items for `query`.

        natural: the whole pool is ranked; the target only shapes the instruction of models that take one
        (so modality bias shows). filtered: only items of the target modality can be returned.
        """
        if mode not in MODES:
            raise ValidationError(f"unknown mode {mode!r}; use 'natural' or 'filtered'")
        if not isinstance(k, int) or k < 1:
            raise ValidationError(f"k must be a positive integer, got {k!r}")
        wanted = Modality.parse(target) if target is not None else query.target
        if mode == "filtered" and wanted is None:
            raise ValidationError("filtered mode needs a target modality (image, text or image+text)")
        query = replace(query, target=wanted)
        info = self.embedder.describe_query(query)
        vector = self.embedder.embed_query(query)
        hits = self.search_by_vector(vector, k, target=wanted, mode=mode)
        return SearchResult(query, hits, mode, wanted, info.instruction, tuple(info.notes))

    def search_by_vector(self, vector: np.ndarray, k: int, target: Modality | None = None,
                         mode: str = "natural") -> list[Hit]:
        only = target if mode == "filtered" else None
        scores, rows = self.index.search(vector, k, only=only)
        items = self.corpus.items
        hits = [Hit(items[int(row)], float(score), rank=0) for score, row in zip(scores[0], rows[0], strict=True)
                if row >= 0]
        return [replace(hit, rank=rank) for rank, hit in enumerate(hits, start=1)]


def _check_failed(index: Any) -> bool:
    """Whether `index` came from the cache and its background checksum verification found it damaged
    (an on-disk IVF-PQ index has no such check: it has none of this attribute)."""
    check = getattr(index, "check", None)
    return check is not None and check.done and check.problem is not None


def embedder_options(settings: Settings, name: str, registry: Registry[Embedder] | None = None) -> dict[str, Any]:
    """Constructor options for embedder `name` from `settings`: the device, and the dtype and batch size when
    they are set and the backend takes them (mmembed-mini has a single float32 path; "int8" is the CLIP
    family's CPU option)."""
    import inspect

    from mmembed.embedders import EMBEDDERS

    registry = registry or EMBEDDERS
    options: dict[str, Any] = {"device": settings.device}
    chosen = {"dtype": None if settings.dtype == "auto" else settings.dtype, "batch_size": settings.batch_size}
    chosen = {key: value for key, value in chosen.items() if value is not None}
    if chosen:  # only then ask the registry: a backend registered as a built instance has no factory to inspect
        accepted = inspect.signature(registry.factory(name)).parameters
        options.update({key: value for key, value in chosen.items() if key in accepted})
    return options


def load_embedder_with_fallback(settings: Settings, name: str | None = None,
                                registry: Registry[Embedder] | None = None) -> tuple[Embedder, str | None]:
    """The embedder `name` (default settings.embedder), loaded; if its weights cannot be had (offline,
    not cached), the shipped offline model settings.fallback_embedder instead, with a note saying why.

    Loading is forced here (a tiny query is embedded) so the failure happens now, not mid-search.
    """
    from mmembed.embedders import EMBEDDERS
    from mmembed.hub import WeightsNotAvailableError
    from mmembed.registry import BackendUnavailableError

    registry = registry or EMBEDDERS
    wanted = name or settings.embedder
    try:
        embedder = registry.get(wanted, **embedder_options(settings, wanted, registry))
        embedder.embed_query(Query(text="warm-up"))
        return embedder, None
    except (WeightsNotAvailableError, BackendUnavailableError) as exc:
        # Only "cannot run here" falls back; an unknown name or a broken corpus is the user's to fix.
        fallback = settings.fallback_embedder
        if not fallback or fallback == wanted:
            raise
        why = "is not available offline" if isinstance(exc, WeightsNotAvailableError) else "cannot run here"
        note = f"'{wanted}' {why} ({exc}); using the offline model '{fallback}' shipped with mmembed instead"
        warnings.warn(note, stacklevel=2)
        try:
            embedder = registry.get(fallback, **embedder_options(settings, fallback, registry))
        except MMEmbedError as fallback_exc:
            raise MMEmbedError(f"{exc}; the offline fallback '{fallback}' failed too: {fallback_exc}") from exc
        return embedder, note
