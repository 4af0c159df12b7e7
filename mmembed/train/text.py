"""Training-side text vectors: the locked text tower's outputs, embedded once and cached on disk.

Because the tower is frozen, the trainer embeds every training text once and caches the vectors
(`cached_text_vectors`); only the small trainable heads see gradients. The tower itself lives in
mmembed/models/minilm.py, shared with inference.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mmembed.models.minilm import MiniLMEncoder, TextEncoder

if TYPE_CHECKING:
    import numpy as np


def cached_text_vectors(encoder: TextEncoder, texts: Sequence[str], cache_dir: Path | None,
                        progress: Callable[[int, int, str], None] | None = None) -> np.ndarray:
    """Vectors of `texts`, reusing every text an earlier run embedded with the same encoder.

    The cache is one safetensors file per encoder: sha256 keys of texts and their vectors. Only texts not
    yet in it are embedded (a rebuilt training set re-embeds just what changed). A corrupt or mismatched
    file is ignored and rewritten, never trusted."""
    import numpy as np

    keys = np.frombuffer(b"".join(hashlib.sha256(t.encode()).digest()[:16] for t in texts), dtype=np.uint8)
    keys = keys.reshape(len(texts), 16)
    known_keys = np.zeros((0, 16), dtype=np.uint8)
    known_vectors = np.zeros((0, encoder.dim), dtype=np.float32)
    path = None
    if cache_dir is not None:
        path = cache_dir / f"text-{hashlib.sha256(encoder.name.encode()).hexdigest()[:16]}.safetensors"
        if path.is_file():
            from safetensors.numpy import load_file

            try:
                stored = load_file(str(path))
                if stored["vectors"].shape[1] == encoder.dim and len(stored["keys"]) == len(stored["vectors"]):
                    known_keys, known_vectors = stored["keys"], stored["vectors"]
            except Exception:  # unreadable cache: start a new one
                pass
    lookup = {bytes(k): i for i, k in enumerate(known_keys)}
    rows = [lookup.get(bytes(k), -1) for k in keys]
    missing = sorted({i for i, r in enumerate(rows) if r < 0}, key=lambda i: texts[i])
    unique_missing: dict[bytes, int] = {}
    for i in missing:
        unique_missing.setdefault(bytes(keys[i]), i)
    if unique_missing:
        todo = list(unique_missing.values())
        todo_texts = [texts[i] for i in todo]
        new = (encoder.encode(todo_texts, progress=progress) if isinstance(encoder, MiniLMEncoder)
               else encoder.encode(todo_texts))
        new = np.ascontiguousarray(new, dtype=np.float32)
        base = len(known_keys)
        known_keys = np.concatenate([known_keys, keys[todo]])
        known_vectors = np.concatenate([known_vectors, new])
        position = {bytes(keys[i]): base + j for j, i in enumerate(todo)}
        rows = [r if r >= 0 else position[bytes(keys[i])] for i, r in enumerate(rows)]
        if path is not None:
            from safetensors.numpy import save_file

            from mmembed.storage import atomic_write

            tensors = {"keys": np.ascontiguousarray(known_keys), "vectors": np.ascontiguousarray(known_vectors)}
            atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata={"encoder": encoder.name}))
    return np.ascontiguousarray(known_vectors[np.array(rows, dtype=np.int64)], dtype=np.float32)
