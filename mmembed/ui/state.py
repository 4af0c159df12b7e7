"""Resources the demo shares between all visitors, created lazily on first use and then kept.

Nothing heavy runs at import or while the page is built: the corpus, each embedder's index and each
reranker load on the first query that needs them (with progress shown), so the server itself starts
in seconds. Backends come from registries (the global EMBEDDERS/RERANKERS by default); tests pass their
own `Registry` with fakes (`Registry.register_instance`) as `DemoState(corpus=..., embedders=..., rerankers=...)`.
"""

from __future__ import annotations

import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmembed.config import Settings
from mmembed.progress import ProgressFn, report
from mmembed.types import MMEmbedError

if TYPE_CHECKING:
    from mmembed.corpus import Corpus
    from mmembed.embedders.base import Embedder
    from mmembed.pipeline import Pipeline
    from mmembed.registry import Registry
    from mmembed.rerankers.base import Reranker
    from mmembed.rerankers.precompute import BackgroundPrecompute
    from mmembed.ui.files import CorpusFiles
    from mmembed.ui.ground_truth import KnownQuery
    from mmembed.workbench import QuerySet


log = logging.getLogger("mmembed.ui")


class BackendNotUsable(MMEmbedError):
    """A backend the visitor picked that cannot run here; the message says why."""


@dataclass(frozen=True)
class BackendChoice:
    """One dropdown entry: the backend's name, what the visitor reads, and why it is disabled (if it is)."""

    name: str
    reason: str | None = None

    @property
    def label(self) -> str:
        # Gradio dropdowns cannot disable single options: "⊘" and the reason mark them, and picking one
        # is refused by `handlers.pick_backend` (the dropdown goes back to the previous choice).
        return self.name if self.reason is None else f"⊘ {self.name} — {self.reason}"


class ResultCache:
    """A small thread-safe LRU of finished results: repeated queries (examples above all) answer at once."""

    def __init__(self, size: int = 128) -> None:
        self.size = size
        self._data: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any | None:
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            return None

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)


class DemoState:
    """Corpus, pipelines (one per embedder) and rerankers, built once and shared by every session."""

    def __init__(self, settings: Settings | None = None, *, corpus: Corpus | None = None,
                 embedders: Registry[Embedder] | None = None, rerankers: Registry[Reranker] | None = None) -> None:
        self.settings = settings or Settings.from_env()
        self._corpus = corpus
        self._embedders = embedders  # None: the global registries, imported on first use (they are light)
        self._rerankers_registry = rerankers
        self._pipelines: dict[str, Pipeline] = {}
        self._rerankers: dict[str, Reranker] = {}
        self._warmup: BackgroundPrecompute | None = None
        self._lock = threading.RLock()  # one model load at a time: two would only fight for 2 cores
        self.results = ResultCache()
        self._licences: dict[str, str] | None = None
        self._files: CorpusFiles | None = None
        from mmembed.ui.files import Downloads

        self.downloads = Downloads()  # visitors' exports by token (the page never names a server file)
        # the Evaluate tab: finished reports for every visitor, and the models' turns shared with the searches
        # (an evaluation takes one query per turn, so a search waits for one query at most: see concurrency.py)
        from mmembed.concurrency import FairLock
        from mmembed.workbench import ReportCache

        self.workbench_cache = ReportCache()
        self.model_turn = FairLock()
        self._shipped: tuple[QuerySet, dict[Any, KnownQuery]] | None = None

    # --- what can be chosen ---------------------------------------------------------------------------

    @property
    def embedders(self) -> Registry[Embedder]:
        if self._embedders is None:
            from mmembed.embedders import EMBEDDERS

            self._embedders = EMBEDDERS
        return self._embedders

    @property
    def rerankers(self) -> Registry[Reranker]:
        if self._rerankers_registry is None:
            from mmembed.rerankers import RERANKERS

            self._rerankers_registry = RERANKERS
        return self._rerankers_registry

    def loaded(self) -> list[str]:
        """What has been loaded so far ("corpus", "embedder:<name>", "reranker:<name>"): nothing until a query."""
        return ((["corpus"] if self._corpus is not None else [])
                + [f"embedder:{name}" for name in self._pipelines] + [f"reranker:{name}" for name in self._rerankers])

    def embedder_choices(self, *, check_gpu: bool = True) -> list[BackendChoice]:
        return self._choices(self.embedders, check_gpu)

    def reranker_choices(self, *, check_gpu: bool = True) -> list[BackendChoice]:
        return self._choices(self.rerankers, check_gpu)

    def _choices(self, registry: Any, check_gpu: bool) -> list[BackendChoice]:
        # device "auto" makes the registry import torch to look for a GPU: seconds of server start. While the
        # page is built (check_gpu=False) we assume one; the page's load event then shows the full labels.
        device = self.settings.device if check_gpu or self.settings.device != "auto" else "cuda"
        return [BackendChoice(name, _reason(registry, name, device)) for name in registry.names()]

    def default_embedder(self) -> tuple[str, str | None]:
        """The embedder the page starts with, and why, when it is not the configured one."""
        wanted = self.settings.embedder
        choices = {choice.name: choice for choice in self.embedder_choices(check_gpu=self._needs_gpu(wanted))}
        if wanted in choices and choices[wanted].reason is None:
            return wanted, None
        fallback = self.settings.fallback_embedder
        if fallback in choices and choices[fallback].reason is None:
            why = choices[wanted].reason if wanted in choices else "not registered"
            return fallback, (f"Using the offline model '{fallback}' because the configured embedder "
                              f"'{wanted}' is unavailable here ({why}).")
        usable = [name for name, choice in choices.items() if choice.reason is None]
        if not usable:
            raise BackendNotUsable("no embedder can run here; see `python -m mmembed prefetch --help`")
        return usable[0], f"Using '{usable[0]}': neither '{wanted}' nor '{fallback}' is available here."

    def random_negatives_of(self, name: str | None) -> str | None:
        """The registered M_rand of embedder `name` (the same model trained with random negatives, declared as
        `BackendInfo.random_negatives`) when it can run here; None otherwise (the page then hides the switch)."""
        if not name or name not in self.embedders.names():
            return None
        twin = self.embedders.info(name).random_negatives
        if twin is None or twin not in self.embedders.names():
            return None
        return twin if _reason(self.embedders, twin, self.settings.device) is None else None

    def _needs_gpu(self, name: str) -> bool:
        return name in self.embedders.names() and self.embedders.info(name).needs_gpu

    def embedder_note(self, name: str) -> str | None:
        """Why `name` runs instead of the configured embedder, when the page picked it as the fallback."""
        try:
            default, note = self.default_embedder()
        except BackendNotUsable:
            return None
        return note if name == default and name != self.settings.embedder else None

    def default_reranker(self) -> str:
        """The reranker the page starts with: the configured one, or the offline fallback (see
        `reranker_note`) when no weights of it can be had here."""
        return self._reranker_choice()[0]

    def reranker_note(self, name: str) -> str | None:
        """Why `name` reranks instead of the configured reranker, when the page picked it as the fallback."""
        default, note = self._reranker_choice()
        return note if name == default and name != self.settings.reranker else None

    def _reranker_choice(self) -> tuple[str, str | None]:
        from mmembed.rerankers.fallback import choose_reranker

        names = self.rerankers.names()
        if not names:
            return "", None
        wanted = self.settings.reranker if self.settings.reranker in names else names[0]
        # as in _choices: while the page is built, assume a GPU rather than import torch to look for one
        device = self.settings.device if self.settings.device != "auto" else "cuda"
        try:
            return choose_reranker(self.settings, wanted, self.rerankers, device=device)
        except Exception:  # a broken cache entry must not take the page down: keep the configured name
            return wanted, None

    def choices(self, kind: str, *, check_gpu: bool = True) -> list[BackendChoice]:
        """`embedder_choices` or `reranker_choices` by `kind` ("embedder" | "reranker")."""
        if kind not in {"embedder", "reranker"}:
            raise ValueError(f"kind must be 'embedder' or 'reranker', got {kind!r}")
        return (self.embedder_choices(check_gpu=check_gpu) if kind == "embedder"
                else self.reranker_choices(check_gpu=check_gpu))

    def check_usable(self, kind: str, name: str, *, check_gpu: bool = True) -> None:
        """Raise BackendNotUsable (with the reason) for an unknown or unavailable backend."""
        found = {choice.name: choice for choice in self.choices(kind, check_gpu=check_gpu)}
        if name not in found:
            raise BackendNotUsable(f"unknown {kind} {name!r}; choose one of: {', '.join(found)}")
        if found[name].reason is not None:
            raise BackendNotUsable(f"The {kind} '{name}' can't be used here: {found[name].reason}. "
                                   f"Pick another one from the list.")

    # --- lazily loaded resources ---------------------------------------------------------------------

    @property
    def corpus(self) -> Corpus:
        if self._corpus is None:
            with self._lock:
                if self._corpus is None:
                    from mmembed.corpus import CorpusValidationError, load_corpus

                    try:
                        self._corpus = load_corpus(self.settings.corpus)
                    except (OSError, MMEmbedError) as exc:
                        # The operator reads the details (paths, every problem) in the log; visitors read
                        # what happened in words that name no server path.
                        log.warning("the corpus %s could not be loaded: %s", self.settings.corpus, exc)
                        name = self.settings.corpus.name
                        if isinstance(exc, CorpusValidationError):
                            why = f"{name} has {len(exc.problems)} problem(s)"
                        elif isinstance(exc, OSError):
                            why = f"{name} was not found or cannot be read"
                        else:
                            why = f"{name} cannot be read as a corpus"
                        raise MMEmbedError(f"The corpus could not be loaded ({why}); set MMEMBED_CORPUS to a "
                                           "corpus.jsonl. The server log has the details.") from exc
        return self._corpus

    def corpus_root(self) -> Path:
        """The folder whose files the page may serve (the corpus images and nothing above them)."""
        if self._corpus is not None and self._corpus.root is not None:
            return Path(self._corpus.root)
        path = Path(self.settings.corpus)
        return path if path.is_dir() else path.parent

    def licences(self) -> dict[str, str]:
        """Licence key -> full name (and URL) from the corpus folder's ATTRIBUTION.md; {} without one."""
        if self._licences is None:
            path = self.corpus_root() / "ATTRIBUTION.md"
            try:
                self._licences = parse_licences(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError):
                self._licences = {}  # no attribution file: the corpus' own licence field is shown as is
        return self._licences

    def allowed_paths(self) -> list[str]:
        """Folders for Gradio's `file=` route: none. Corpus images go through `corpus_files` (only the files
        the corpus references), thumbnails are inline, and the page loads no files of its own."""
        return []

    def corpus_files(self) -> CorpusFiles:
        """The corpus' image files by corpus-relative path: what the page serves and the API names."""
        if self._files is None:
            corpus = self.corpus
            with self._lock:
                if self._files is None:
                    from mmembed.ui.files import CorpusFiles

                    self._files = CorpusFiles(corpus)
        return self._files

    def image_file(self, public: str | None) -> str | None:
        """The server file behind a hit's corpus-relative `image` (for thumbnails), or None."""
        file = self.corpus_files().resolve(public)
        return str(file) if file is not None else None

    def pipeline(self, name: str, progress: ProgressFn | None = None) -> Pipeline:
        """The pipeline for embedder `name` (its index built or loaded from cache once), shared by every visitor."""
        with self._lock:
            if name not in self._pipelines:
                from mmembed.pipeline import Pipeline
                from mmembed.retriever import Retriever, load_embedder_with_fallback

                report(progress, 0, 3, f"loading the corpus ({self.settings.corpus.name})")
                corpus = self.corpus
                report(progress, 1, 3, f"loading embedder {name}")
                embedder, note = load_embedder_with_fallback(self.settings, name, self.embedders)
                report(progress, 2, 3, "indexing the corpus (cached on disk after the first run)")
                retriever = Retriever(corpus, embedder, cache_dir=self.settings.cache_dir,
                                      index_type=self.settings.index_type)
                retriever.ensure_index(progress)
                self._pipelines[name] = Pipeline(retriever, embedder_note=note or self.embedder_note(name))
            return self._pipelines[name]

    def shipped_query_set(self) -> QuerySet:
        """The configured query set (settings.queries), read and checked against the corpus once."""
        return self._shipped_set()[0]

    def shipped_ground_truth(self) -> dict[Any, KnownQuery]:
        """The configured query set's queries by content, so the Search tab marks their positives; {} when
        the file is missing or does not fit the corpus (the page then marks nothing)."""
        try:
            return self._shipped_set()[1]
        except (OSError, MMEmbedError):
            return {}

    def _shipped_set(self) -> tuple[QuerySet, dict[Any, KnownQuery]]:
        if self._shipped is None:
            from mmembed.ui.ground_truth import index_queries
            from mmembed.workbench import load_query_set

            corpus = self.corpus
            with self._lock:
                if self._shipped is None:
                    query_set = load_query_set(self.settings.queries, corpus)
                    self._shipped = (query_set, index_queries(query_set.queries, query_set.name))
        return self._shipped

    def reranker(self, name: str, progress: ProgressFn | None = None) -> Reranker:
        """The reranker `name` from the registry, created once (its weights load on first use)."""
        with self._lock:
            if name not in self._rerankers:
                report(progress, 0, 1, f"loading reranker {name}")
                from mmembed.rerankers import load_reranker

                # as `index build --reranker` creates it: same dtype, same on-disk image features
                self._rerankers[name] = load_reranker(name, self.settings, self.rerankers)
            return self._rerankers[name]

    # --- background warm-up ---------------------------------------------------------------------------

    def start_warmup(self) -> BackgroundPrecompute | None:
        """After the server starts: load the default pipeline and reranker and encode the corpus images for the
        reranker, on a background thread (visitors' queries go first; see MLLMReranker). None when the default
        reranker cannot run here (nothing to warm; its column says why when asked)."""
        from mmembed.rerankers.precompute import BackgroundPrecompute

        name = self.default_reranker()
        try:
            self.check_usable("reranker", name)
        except MMEmbedError:
            return None

        def load(progress: ProgressFn) -> tuple[Reranker, Any]:
            self.pipeline(self.default_embedder()[0], progress)  # the first query's index, loaded meanwhile
            report(progress, 0, 1, f"loading reranker {name}")
            return self.reranker(name), self.corpus.items

        with self._lock:
            if self._warmup is None:
                self._warmup = BackgroundPrecompute(load).start()
        return self._warmup

    def warmup_running(self) -> bool:
        return self._warmup is not None and self._warmup.state == "running"

    def warmup_status(self) -> str:
        """One line for the page while the warm-up runs or when it failed; "" otherwise."""
        job = self._warmup
        if job is None or job.state == "done":
            return ""
        return job.status()


def _reason(registry: Any, name: str, device: str) -> str | None:
    try:
        return registry.unavailable_reason(name, device=device)
    except Exception as exc:  # a broken cache entry must not take the whole dropdown down
        return f"unavailable ({type(exc).__name__})"


_LICENCE_LINE = re.compile(r"^\s*[-*]\s+\*\*(?P<key>[^*]+)\*\*\s*:\s*(?P<name>.+?)\s*$")


def parse_licences(markdown: str) -> dict[str, str]:
    """Licence key -> full name from an ATTRIBUTION.md's "## Licences" list (`- **CC0-1.0**: Creative ...`)."""
    licences: dict[str, str] = {}
    in_section = False
    for line in markdown.splitlines():
        if line.startswith("#"):
            in_section = line.lstrip("#").strip().lower() in {"licences", "licenses"}
            continue
        match = _LICENCE_LINE.match(line) if in_section else None
        if match:
            licences[match["key"].strip()] = match["name"]
    return licences
