"""Which reranker runs: the one asked for, or, when it cannot run here (its weights cannot be had offline,
it needs a GPU), the offline cross-encoder shipped with mmembed, with a note saying so.

This mirrors `mmembed.retriever.load_embedder_with_fallback` for the first stage, so the page, the API and
the CLI make the same decision in one place and only show the note. The note never calls the fallback an
MLLM: it is a small MiniLM cross-encoder.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from mmembed.config import Settings
from mmembed.rerankers.base import Reranker
from mmembed.types import MMEmbedError

if TYPE_CHECKING:
    from mmembed.registry import Registry


def _default_registry() -> Registry[Reranker]:
    from mmembed.rerankers import RERANKERS

    return RERANKERS


def choose_reranker(settings: Settings, name: str | None = None, registry: Registry[Reranker] | None = None,
                    *, device: str | None = None) -> tuple[str, str | None]:
    """(the reranker to use, why it is not `name`) without loading anything: `name` (default
    settings.reranker) when it can run here, else settings.fallback_reranker when that one can (the
    offline fallback must itself be usable). An unknown name raises with the known ones. `device`
    overrides settings.device for the check (the page passes "cuda" while it is built, to skip torch)."""
    registry = registry or _default_registry()
    device = device or settings.device
    wanted = name or settings.reranker
    reason = registry.unavailable_reason(wanted, device=device)  # unknown name: UnknownBackendError
    fallback = settings.fallback_reranker
    if (reason is None or not fallback or fallback == wanted or fallback not in registry.names()
            or registry.unavailable_reason(fallback, device=device) is not None):
        return wanted, None
    return fallback, fallback_note(wanted, reason, fallback)


def fallback_note(wanted: str, reason: str, fallback: str) -> str:
    return (f"'{wanted}' is unavailable here ({reason}); reranked by '{fallback}' instead, the small offline "
            "cross-encoder shipped with mmembed (MiniLM + mmembed-mini's image tower, not an MLLM)")


def load_reranker_with_fallback(settings: Settings, name: str | None = None,
                                registry: Registry[Reranker] | None = None) -> tuple[Reranker, str | None]:
    """The reranker `choose_reranker` picks, created through the registry, and the note (None when it is
    the one asked for). A reranker whose creation fails as unavailable falls back the same way."""
    from mmembed.hub import WeightsNotAvailableError
    from mmembed.registry import BackendUnavailableError

    registry = registry or _default_registry()
    chosen, note = choose_reranker(settings, name, registry)
    try:
        reranker = registry.get(chosen, device=settings.device)
    except (WeightsNotAvailableError, BackendUnavailableError) as exc:
        fallback = settings.fallback_reranker
        if not fallback or chosen == fallback:
            raise
        note = fallback_note(chosen, str(exc), fallback)
        try:
            reranker = registry.get(fallback, device=settings.device)
        except MMEmbedError as fallback_exc:
            raise MMEmbedError(f"{exc}; the offline fallback '{fallback}' failed too: {fallback_exc}") from exc
    if note:
        warnings.warn(note, stacklevel=2)
    return reranker, note
