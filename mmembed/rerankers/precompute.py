"""Reranker image features for a whole corpus, computed ahead of time: by `index build --reranker` or in the
background after the app starts, so no visitor's query pays for encoding corpus images.

The work is resumable for free: features go to the reranker's on-disk cache one image at a time (atomically),
and images already cached are skipped before they are decoded. Rerankers without an image-feature cache
(naive-path models, text-only rerankers) report `supported=False` and do nothing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from mmembed.progress import ProgressFn, report
from mmembed.types import Item

DESCRIPTION = "reranker image features"


@dataclass(frozen=True)
class PrecomputeSummary:
    """What precomputing a reranker's corpus image features did (counts per outcome), for the CLI and the page."""

    reranker: str
    supported: bool
    images: int  # corpus items with an image
    cached: int  # of those, items whose image features were cached before this run
    encoded: int  # distinct images encoded in this run (identical files are encoded once; unusable ones never)
    seconds: float
    stopped: bool = False  # ended early by a stop request

    def to_dict(self) -> dict[str, Any]:
        return {"reranker": self.reranker, "supported": self.supported, "images": self.images,
                "already_cached": self.cached, "encoded": self.encoded, "seconds": round(self.seconds, 2),
                "stopped": self.stopped}


def precompute_corpus_features(reranker: Any, items: Sequence[Item], *, progress: ProgressFn | None = None,
                               background: bool = False, stop: threading.Event | None = None) -> PrecomputeSummary:
    """Encode and cache the reranker image features of every image in `items` that is not cached yet.

    `background=True`: one image per step, pausing while a query is being scored (see MLLMReranker).
    """
    started = time.perf_counter()
    name = str(getattr(reranker, "name", reranker))
    with_images = [item for item in items if item.image is not None]
    method: Callable[..., int] | None = getattr(reranker, "precompute_image_features", None)
    if method is None or not getattr(reranker, "caches_image_features", False):
        return PrecomputeSummary(name, False, len(with_images), 0, 0, time.perf_counter() - started)
    pending = [item for item in with_images if not reranker.has_cached_features(item)]
    cached = len(with_images) - len(pending)
    total = max(len(with_images), 1)
    report(progress, cached, total, DESCRIPTION)
    encoded = method(pending, progress=_scaled(progress, len(with_images)), background=background, stop=stop)
    stopped = stop is not None and stop.is_set()
    if not stopped:
        report(progress, total, total, DESCRIPTION)
    return PrecomputeSummary(name, True, len(with_images), cached, encoded, time.perf_counter() - started, stopped)


def _scaled(progress: ProgressFn | None, total: int) -> ProgressFn | None:
    """Progress over the images still to encode, shown against all the corpus's images (cached count as done)."""
    if progress is None:
        return None

    def update(done: int, todo: int, description: str) -> None:
        progress(total - todo + done, total, DESCRIPTION)

    return update


class BackgroundPrecompute:
    """Runs `precompute_corpus_features` (after `prepare`, e.g. loading the models) on a daemon thread.

    `status()` is a one-line summary for the page's status line; `state` is one of idle, running, done,
    failed, stopped. Errors never escape the thread: they end in `state == "failed"` with the message kept.
    """

    def __init__(self, load: Callable[[ProgressFn], tuple[Any, Sequence[Item]]]) -> None:
        self._load = load
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.state = "idle"
        self.done = 0
        self.total = 0
        self.step = ""
        self.error: str | None = None
        self.summary: PrecomputeSummary | None = None

    def start(self) -> BackgroundPrecompute:
        with self._lock:
            if self._thread is None:
                self.state = "running"
                self._thread = threading.Thread(target=self._run, name="mmembed-precompute", daemon=True)
                self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def wait(self, timeout: float | None = None) -> bool:
        """True once the job has ended (done, failed or stopped)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self.state in {"done", "failed", "stopped"}

    def _progress(self, done: int, total: int, description: str) -> None:
        self.done, self.total, self.step = done, total, description

    def _run(self) -> None:
        try:
            reranker, items = self._load(self._progress)
            self.summary = precompute_corpus_features(reranker, items, progress=self._progress, background=True,
                                                      stop=self._stop)
            self.state = "stopped" if self.summary.stopped else "done"
        except Exception as exc:  # a background job must never take the server down; the status line says why
            self.error = f"{type(exc).__name__}: {exc}"
            self.state = "failed"

    def status(self) -> str:
        if self.state == "idle":
            return ""
        if self.state == "failed":
            return f"Reranker warm-up failed ({self.error}); corpus images are encoded on first use instead."
        if self.state == "running":
            if self.step != DESCRIPTION or not self.total:
                return f"Preparing the reranker in the background: {self.step or 'starting'}…"
            return f"Reranker image features: {self.done}/{self.total} corpus images encoded (in the background)…"
        summary = self.summary
        if summary is None or not summary.supported:
            return ""
        if self.state == "stopped":
            return f"Reranker image features: stopped at {self.done}/{self.total}."
        return f"Reranker image features ready for all {summary.images} corpus images."
