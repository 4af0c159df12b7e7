"""Hugging Face Hub access in one place: offline checks, clear errors, and `prefetch`.

Models are resolved through the local HF cache first. When weights are neither cached nor
downloadable (HF_HUB_OFFLINE=1, or no network), loaders raise `WeightsNotAvailableError`, whose
message names the model and the exact command that downloads it for offline use.
"""

from __future__ import annotations

import os
from pathlib import Path

from mmembed.types import MMEmbedError


class WeightsNotAvailableError(MMEmbedError, OSError):
    """Model files are not in the local cache and cannot be downloaded now."""


def is_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def prefetch_hint(backend: str, kind: str = "embedder") -> str:
    """The command that downloads `backend` (a registered embedder or reranker name, or a repo id)."""
    return f"python -m mmembed prefetch --{kind} {backend}"


def weights_available(repo_id: str, revision: str | None = None) -> bool:
    """True if `repo_id` is a local directory or has a config.json in the local HF cache."""
    if Path(repo_id).is_dir():
        return True
    from huggingface_hub import try_to_load_from_cache

    for name in ("config.json", "model_index.json", "modules.json"):
        found = try_to_load_from_cache(repo_id, name, revision=revision)
        if isinstance(found, str):
            return True
    return False


def resolve_model_dir(repo_id: str, revision: str | None = None, *, backend: str | None = None,
                      allow_patterns: tuple[str, ...] = (), kind: str = "embedder") -> Path:
    """A local directory holding `repo_id`'s files: the path itself, the HF cache, or a download.

    Raises WeightsNotAvailableError (naming the prefetch command) when none of those works.
    """
    path = Path(repo_id).expanduser()
    if path.is_dir():
        return path
    from huggingface_hub import snapshot_download

    patterns = list(allow_patterns) or None
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns,
                                      local_files_only=True))
    except Exception:
        pass  # not (fully) cached: try the network unless we are told we are offline
    if is_offline():
        raise WeightsNotAvailableError(
            f"model {repo_id!r} is not in the local Hugging Face cache and HF_HUB_OFFLINE is set; "
            f"download it once with: {prefetch_hint(backend or repo_id, kind)}"
        )
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns))
    except Exception as exc:
        raise WeightsNotAvailableError(
            f"model {repo_id!r} could not be downloaded ({type(exc).__name__}: {exc}); "
            f"on a machine with network, run: {prefetch_hint(backend or repo_id, kind)}"
        ) from exc


def prefetch(repo_id: str, revision: str | None = None, allow_patterns: tuple[str, ...] = ()) -> Path:
    """Download `repo_id` (only files matching `allow_patterns`, if given) into the HF cache."""
    from huggingface_hub import snapshot_download

    if is_offline():
        raise WeightsNotAvailableError("cannot prefetch with HF_HUB_OFFLINE set; unset it and retry")
    return Path(snapshot_download(repo_id, revision=revision, allow_patterns=list(allow_patterns) or None))
