"""Hugging Face Hub access in one place: offline checks, clear errors, and `prefetch`.

Models are resolved through the local HF cache first. When weights are neither cached nor
downloadable (HF_HUB_OFFLINE=1, or no network), loaders raise `WeightsNotAvailableError`, whose
message names the model and the exact command that downloads it for offline use.
"""

from __future__ import annotations

import os
from functools import lru_cache
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


# Weight files up to this size are hashed whole; larger ones by their size plus evenly spaced blocks, so a
# 16 GB checkpoint is identified in milliseconds. Retraining changes every block, so it is still caught.
_FULL_HASH_BYTES = 64 * 1024 * 1024
_SAMPLE_BLOCKS, _BLOCK_BYTES = 64, 64 * 1024
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


def model_identity(path: str | Path) -> str:
    """What a model folder's vectors depend on, for cache fingerprints (one rule for every backend).

    An HF cache snapshot (…/snapshots/<commit>): the resolved commit, even when no revision was asked for,
    so a new snapshot of the same hub id never reuses an old index. Any other folder:
    "local-<hash>" of its JSON configs and its weights' content, so retraining into the same folder does.
    """
    path = Path(path).expanduser().resolve()
    if path.parent.name == "snapshots" and len(path.name) == 40:
        return path.name
    files = sorted(p for p in path.iterdir() if p.is_file() and (p.suffix == ".json" or p.name.endswith(
        _WEIGHT_SUFFIXES)))
    signature = tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    return _content_identity(str(path), signature)


@lru_cache(maxsize=64)
def _content_identity(folder: str, signature: tuple[tuple[str, int, int], ...]) -> str:
    """Hash of the files in `signature`; memoised on their names, sizes and mtimes (a retrain changes them)."""
    import hashlib

    digest = hashlib.sha256()
    for name, size, _mtime in signature:
        digest.update(f"{name}\0{size}\0".encode())
        with open(Path(folder) / name, "rb") as handle:
            if size <= _FULL_HASH_BYTES:
                for block in iter(lambda h=handle: h.read(1 << 20), b""):
                    digest.update(block)
                continue
            for i in range(_SAMPLE_BLOCKS):
                handle.seek((size - _BLOCK_BYTES) * i // (_SAMPLE_BLOCKS - 1))
                digest.update(handle.read(_BLOCK_BYTES))
    return f"local-{digest.hexdigest()[:16]}"
