"""CLIP-family dual encoders (CLIP, SigLIP, SigLIP 2) on `transformers`, with UniIR's CLIP-SF fusion.

Text and images are encoded by the model's two towers; an image+text item or query is the normalised
sum of its two unit embeddings (`fuse_image_text`), which is how UniIR's CLIP-SF scores mixed inputs.
These models take no task instruction, so the query's target never changes the vector: that is
exactly why they show modality bias in `natural` mode, which the demo sets out to show.

Weights load lazily, once per embedder, under a lock, from a local directory resolved through the
Hugging Face cache (`mmembed.hub.resolve_model_dir`), so HF_HUB_OFFLINE is honoured and a missing
model raises `WeightsNotAvailableError` naming `python -m mmembed prefetch ...`.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmembed.embedders.base import QueryInfo, fuse_image_text, l2_normalize
from mmembed.images import ImageLoadError, load_image
from mmembed.progress import ProgressFn, report
from mmembed.registry import BackendInfo
from mmembed.types import Item, MMEmbedError, Query, ValidationError

if TYPE_CHECKING:
    import numpy as np

FINGERPRINT_VERSION = 1
# SigLIP (v1 and v2) was trained on text padded to the full context with no attention mask; feeding
# it anything else shifts the embeddings, so for these model types we pad to max_length, mask nothing.
_PAD_TO_MAX_LENGTH = {"siglip", "siglip2"}
# SigLIP 2 was trained on lower-cased text, but its fixed-resolution checkpoints ship a plain Gemma tokenizer
# that does not lower-case; SigLIP 1's tokenizer lower-cases anyway. So the whole family gets lower case.
_LOWERCASE_TEXT = {"siglip", "siglip2"}


@dataclass(frozen=True)
class _Source:
    """Where the weights are and what identifies them, known before the model itself is loaded."""

    path: Path
    revision: str  # mmembed.hub.model_identity: the HF snapshot's commit, or a local folder's content hash
    config: Any  # the transformers config (cheap to read)

    @property
    def model_type(self) -> str:
        return str(self.config.model_type)

    @property
    def context_length(self) -> int:
        return int(self.config.text_config.max_position_embeddings)

    @property
    def dim(self) -> int:
        projection = getattr(self.config, "projection_dim", None)  # CLIP
        if projection is None:  # SigLIP: the text head maps to projection_size (= hidden_size by default)
            text = self.config.text_config
            projection = getattr(text, "projection_size", None) or text.hidden_size
        return int(projection)


class ClipEmbedder:
    """An `Embedder` for any CLIP/SigLIP/SigLIP 2 checkpoint (hub id or local directory).

    `dtype` is auto / float32 / float16 / bfloat16 (see mmembed.devices), or "int8" for dynamic int8
    quantisation of the Linear layers on the CPU: about 3x faster, vectors within ~0.999 cosine of float32.
    """

    def __init__(
        self,
        info: BackendInfo,
        model_id: str | None = None,
        revision: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 32,
        prepack: bool = True,
    ) -> None:
        self.name = info.name
        self.info = info
        self.model_id = str(model_id or info.hub_id or "")
        if not self.model_id:
            raise MMEmbedError(f"embedder {info.name!r} needs a model id (a hub id or a local directory)")
        # The registry's pinned revision belongs to its default hub id, not to a model the user chose.
        self.revision = revision if revision is not None else (info.revision if model_id is None else None)
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValidationError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.batch_size = batch_size
        self.prepack = prepack  # float32 on CPU: oneDNN-prepacked Linear weights (see mmembed.packed_linear)
        self._device_request = device
        self._dtype_request = dtype
        self._lock = threading.RLock()
        self._source: _Source | None = None
        self._processor: Any = None
        self._model: Any = None
        self._device: str | None = None
        self._dtype: Any = None

    # ----------------------------------------------------------------- lazy loading (each step once)
    def _get_source(self) -> _Source:
        with self._lock:
            if self._source is None:
                from transformers import AutoConfig

                from mmembed.hub import model_identity, resolve_model_dir

                path = resolve_model_dir(
                    self.model_id, self.revision, backend=self.name, allow_patterns=self.info.allow_patterns
                )
                config = AutoConfig.from_pretrained(str(path))
                if not hasattr(config, "text_config") or not hasattr(config, "vision_config"):
                    raise MMEmbedError(
                        f"{self.model_id!r} is a {config.model_type!r} model, not a CLIP/SigLIP dual encoder"
                    )
                self._source = _Source(path=path, revision=model_identity(path), config=config)
            return self._source

    def _get_processor(self) -> Any:
        with self._lock:
            if self._processor is None:
                from transformers import AutoProcessor

                self._processor = AutoProcessor.from_pretrained(str(self._get_source().path))
            return self._processor

    def _get_model(self) -> Any:
        with self._lock:
            if self._model is None:
                import torch
                from transformers import AutoModel

                from mmembed.devices import quantize_dynamic_int8, resolve_device, resolve_dtype

                source = self._get_source()
                device = resolve_device(self._device_request)
                int8 = self._dtype_request == "int8"
                if int8 and device != "cpu":
                    raise MMEmbedError(f"dtype 'int8' (dynamic quantisation) runs on the CPU only, not {device!r}")
                dtype = torch.float32 if int8 else resolve_dtype(self._dtype_request, device)
                # use_safetensors: never fall back to unpickling a .bin file.
                model = AutoModel.from_pretrained(str(source.path), dtype=dtype, use_safetensors=True)
                if not (hasattr(model, "get_text_features") and hasattr(model, "get_image_features")):
                    raise MMEmbedError(f"{self.model_id!r} has no text and image towers to embed with")
                model = model.to(device).eval()
                if self.prepack and device == "cpu" and dtype == torch.float32 and not int8:
                    _prepack(model)
                if int8:
                    # int8 weights, activations quantised on the fly, in every Linear layer: about 3x faster
                    # on CPU (measured: ViT-B/32 text 88 -> 28 ms, image 262 -> 88 ms, cosine to float32 0.999).
                    model = quantize_dynamic_int8(model)
                self._model = model
                self._device, self._dtype = device, dtype
            return self._model

    # --------------------------------------------------------------------------- Embedder protocol
    @property
    def dim(self) -> int:
        return self._get_source().dim

    @property
    def context_length(self) -> int:
        """Text tokens the model reads (77 for CLIP, 64 for SigLIP), special tokens included."""
        return self._get_source().context_length

    @property
    def fingerprint(self) -> str:
        source = self._get_source()
        from mmembed.devices import resolve_device, resolve_dtype

        if self._dtype_request == "int8":
            dtype = "int8-dynamic"
        else:
            dtype = str(resolve_dtype(self._dtype_request, resolve_device(self._device_request))).replace("torch.", "")
        return (
            f"{self.model_id}@{source.revision}|{source.model_type}|dim={source.dim}|ctx={source.context_length}"
            f"|fusion=clip-sf|dtype={dtype}|v{FINGERPRINT_VERSION}"
        )

    def embed_items(self, items: Sequence[Item], *, progress: ProgressFn | None = None) -> np.ndarray:
        import numpy as np

        items = list(items)
        total = len(items)
        if total == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        description = f"embedding with {self.name}"
        out = np.empty((total, self.dim), dtype=np.float32)
        report(progress, 0, total, description)
        for start in range(0, total, self.batch_size):
            batch = items[start : start + self.batch_size]
            out[start : start + len(batch)] = self._embed(
                [item.text for item in batch],
                [item.image for item in batch],
                [f"item {item.id!r}" for item in batch],
            )
            report(progress, start + len(batch), total, description)
        return out

    def embed_query(self, query: Query) -> np.ndarray:
        # CLIP-family models take no instruction: the target cannot (and does not) change the vector.
        return self._embed([query.text], [query.image], ["query"])[0]

    def describe_query(self, query: Query) -> QueryInfo:
        notes: list[str] = []
        if query.text:
            length = self.count_tokens(query.text)
            if length > self.context_length:
                notes.append(
                    f"text truncated to {self.context_length} tokens ({length} tokens given); "
                    f"{self.name} reads no further"
                )
        if query.instruction:
            notes.append(f"{self.name} takes no instructions; the instruction was ignored")
        return QueryInfo(instruction=None, notes=tuple(notes))

    def count_tokens(self, text: str) -> int:
        """Tokens `text` becomes, special tokens included, before truncation (loads only the tokenizer)."""
        text = self._prepare_text(text)
        return len(self._get_processor().tokenizer(text, truncation=False)["input_ids"])

    def _prepare_text(self, text: str) -> str:
        return text.lower() if self._get_source().model_type in _LOWERCASE_TEXT else text

    # ------------------------------------------------------------------------------- encoding
    def _embed(self, texts: Sequence[str | None], images: Sequence[Any], labels: Sequence[str]) -> np.ndarray:
        """Unit vectors for parallel lists of (text or None, image or None): text, image or fused."""
        import numpy as np

        text_rows = [i for i, text in enumerate(texts) if text and text.strip()]
        image_rows = [i for i, image in enumerate(images) if image is not None]
        missing = sorted(set(range(len(texts))) - set(text_rows) - set(image_rows))
        if missing:
            raise ValidationError(f"{labels[missing[0]]}: needs text, an image, or both; got neither")
        text_vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        image_vectors = np.zeros_like(text_vectors)
        if text_rows:
            text_vectors[text_rows] = self._encode_texts([texts[i] for i in text_rows])
        if image_rows:
            loaded = []
            for i in image_rows:
                try:
                    loaded.append(load_image(images[i]))
                except ImageLoadError as exc:
                    raise ImageLoadError(f"{labels[i]}: {exc}") from exc
            image_vectors[image_rows] = self._encode_images(loaded)
        has_text = np.zeros(len(texts), dtype=bool)
        has_text[text_rows] = True
        has_image = np.zeros(len(texts), dtype=bool)
        has_image[image_rows] = True
        # Single-modality rows: the tower's vector. Both: CLIP-SF (unit image + unit text, renormalised).
        out = np.where(has_text[:, None], text_vectors, image_vectors)
        both = has_text & has_image
        if both.any():
            out[both] = fuse_image_text(image_vectors[both], text_vectors[both])
        return l2_normalize(out)

    def text_inputs(self, texts: Sequence[str]) -> dict[str, Any]:
        """Model-ready tensors for get_text_features (also the fine-tuning path's, mmembed.train.backbone)."""
        source = self._get_source()
        self._get_model()  # sets the device
        tokenizer = self._get_processor().tokenizer
        pad_full = source.model_type in _PAD_TO_MAX_LENGTH
        encoded = tokenizer(
            [self._prepare_text(text) for text in texts],
            padding="max_length" if pad_full else True,
            truncation=True,  # longer text is cut to the context (describe_query says so), never an error
            max_length=source.context_length,
            return_tensors="pt",
        )
        inputs = {"input_ids": encoded["input_ids"].to(self._device)}
        if not pad_full and "attention_mask" in encoded:
            inputs["attention_mask"] = encoded["attention_mask"].to(self._device)
        return inputs

    def image_inputs(self, images: Sequence[Any]) -> dict[str, Any]:
        """Model-ready tensors for get_image_features, from loaded PIL images."""
        self._get_model()  # sets the device and dtype
        pixels = self._get_processor().image_processor(images=list(images), return_tensors="pt")
        # CLIP/SigLIP give pixel_values; SigLIP 2 NaFlex adds pixel_attention_mask and spatial_shapes.
        inputs = {}
        for key, value in pixels.items():
            value = value.to(self._device)
            inputs[key] = value.to(self._dtype) if key == "pixel_values" else value
        return inputs

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        import torch

        model = self._get_model()
        inputs = self.text_inputs(texts)
        with torch.inference_mode():
            features = model.get_text_features(**inputs)
        return l2_normalize(feature_tensor(features).float().cpu().numpy())

    def _encode_images(self, images: list[Any]) -> np.ndarray:
        import torch

        model = self._get_model()
        inputs = self.image_inputs(images)
        with torch.inference_mode():
            features = model.get_image_features(**inputs)
        return l2_normalize(feature_tensor(features).float().cpu().numpy())


def _prepack(model: Any) -> None:
    """oneDNN-prepacked Linear weights; the vision tower's layout is chosen for one image's tokens (a query)."""
    from mmembed.packed_linear import prepack_linear_layers

    vision = model.config.vision_config
    # Fixed-resolution towers: patches + class token; NaFlex (no fixed image size): its patch budget.
    size = getattr(vision, "image_size", None)
    tokens = (int(size) // int(vision.patch_size)) ** 2 + 1 if size else int(getattr(vision, "num_patches", 256))
    if getattr(model, "vision_model", None) is not None:
        prepack_linear_layers(model.vision_model, tokens)
    prepack_linear_layers(model, 16)  # the text tower (a query is ~10 tokens) and the projections


def feature_tensor(features: Any) -> Any:
    """transformers 5 returns an output object (projected vectors in pooler_output); older ones a tensor."""
    if hasattr(features, "pooler_output"):
        return features.pooler_output
    if isinstance(features, (tuple, list)):
        return features[1] if len(features) > 1 else features[0]
    return features

