"""A cache of projected image features (vision encoder + connector output), so reranking does not re-encode
corpus images the model has seen before.

Keys are the sha256 of the image's content (file bytes, or a PIL image's pixels) together with the model
fingerprint (weights + image preprocessing settings): a changed file or model never reuses old features.
Entries live in memory (bounded, least recently used dropped first) and, optionally, on disk as one
safetensors file per image under `<cache dir>/rerank-image-features/<fingerprint>/`, written atomically.
Only corpus images go to disk; query images (a visitor's uploads) stay in memory.
A corrupt or mismatched file is ignored with a warning and recomputed.
"""

from __future__ import annotations

import hashlib
import threading
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image as PILImage

FORMAT_VERSION = "1"


def image_content_hash(source: str | Path | PILImage, loaded: PILImage | None = None) -> str:
    """sha256 of the file bytes for a path (cheap, stable across runs), of mode+size+pixels for a PIL image
    (`loaded`, the decoded image; not needed for a path)."""
    digest = hashlib.sha256()
    if isinstance(source, (str, Path)):
        with open(source, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    else:
        loaded = source if loaded is None else loaded
        digest.update(f"{loaded.mode}|{loaded.size}|".encode())
        digest.update(loaded.tobytes())
    return digest.hexdigest()


class ImageFeatureCache:
    """Candidate image features of one reranker, kept in memory and on disk (keyed by its fingerprint)."""

    def __init__(self, fingerprint: str, directory: Path | None = None, max_items: int = 4096) -> None:
        self.fingerprint = fingerprint
        self.directory = directory / hashlib.sha256(fingerprint.encode()).hexdigest()[:24] if directory else None
        self.max_items = max_items
        self._memory: OrderedDict[str, torch.Tensor] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path | None:
        return self.directory / f"{key}.safetensors" if self.directory else None

    def contains(self, key: str) -> bool:
        """Whether features for `key` are in memory or on disk (without reading or checking the file)."""
        with self._lock:
            if key in self._memory:
                return True
        path = self._path(key)
        return path is not None and path.is_file()

    def get(self, key: str) -> torch.Tensor | None:
        with self._lock:
            found = self._memory.get(key)
            if found is not None:
                self._memory.move_to_end(key)
                self.hits += 1
                return found
        path = self._path(key)
        if path is not None and path.is_file():
            tensor = self._read(path)
            if tensor is not None:
                self._remember(key, tensor)
                with self._lock:
                    self.hits += 1
                return tensor
        with self._lock:
            self.misses += 1
        return None

    def put(self, key: str, features: torch.Tensor, *, persist: bool = True) -> None:
        """Remember `features`; also write them to disk unless `persist` is False (e.g. a user's query image)."""
        features = features.detach().contiguous()
        self._remember(key, features)
        path = self._path(key) if persist else None
        if path is not None and not path.is_file():
            self._write(path, features)

    def _remember(self, key: str, features: torch.Tensor) -> None:
        with self._lock:
            self._memory[key] = features
            self._memory.move_to_end(key)
            while len(self._memory) > self.max_items:
                self._memory.popitem(last=False)

    def _read(self, path: Path) -> torch.Tensor | None:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as handle:
                meta = handle.metadata() or {}
                if meta.get("fingerprint") != self.fingerprint or meta.get("format") != FORMAT_VERSION:
                    raise ValueError("written by another model or format version")
                return handle.get_tensor("features")
        except Exception as exc:  # corrupt, truncated or foreign file: recompute, never trust it
            warnings.warn(f"ignoring cached image features {path.name} ({exc}); recomputing", stacklevel=3)
            return None

    def _write(self, path: Path, features: torch.Tensor) -> None:
        from safetensors.torch import save_file

        from mmembed.storage import atomic_write

        tensors = {"features": features.cpu()}
        metadata = {"fingerprint": self.fingerprint, "format": FORMAT_VERSION}
        try:
            atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata))
        except OSError as exc:  # a read-only or full cache dir must not fail the reranking
            warnings.warn(f"could not write image feature cache {path} ({exc})", stacklevel=3)
