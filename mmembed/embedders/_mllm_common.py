"""What the MLLM embedders (MM-Embed, GME) share: strict checkpoint loading, length-sorted batching, ZeroGPU.

Both backends build their torch modules themselves (no `trust_remote_code`, no `from_pretrained` magic)
and fill them from the published safetensors *by name*. `load_weights_strict` is the single gate for
that: every tensor of the checkpoint must land in a parameter of the same shape and every parameter
must be filled, otherwise it raises `CheckpointMismatchError` listing what did not line up. A model
that silently kept random weights would still return unit vectors, just meaningless ones.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmembed.devices import zero_gpu as gpu
from mmembed.embedders.base import QueryInfo, l2_normalize
from mmembed.images import load_image
from mmembed.instructions import instruction_for
from mmembed.progress import ProgressFn, report
from mmembed.registry import BackendInfo
from mmembed.types import Item, MMEmbedError, Query

if TYPE_CHECKING:
    import numpy as np
    import torch
    from PIL.Image import Image as PILImage


class CheckpointMismatchError(MMEmbedError, RuntimeError):
    """The checkpoint's tensors and the model's parameters do not correspond one to one."""


# ----------------------------------------------------------------------------------------------------------
# Checkpoint reading and strict loading
# ----------------------------------------------------------------------------------------------------------


def checkpoint_files(model_dir: Path) -> list[Path]:
    """The safetensors files of a checkpoint: those named by the index when there is one, else all of them."""
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        weight_map = json.loads(index.read_text(encoding="utf-8")).get("weight_map", {})
        files = sorted({model_dir / name for name in weight_map.values()})
        absent = [f.name for f in files if not f.is_file()]
        if absent:
            raise CheckpointMismatchError(f"{model_dir}: shards named in the index are missing: {', '.join(absent)}")
        return files
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        raise CheckpointMismatchError(f"{model_dir} holds no *.safetensors weights (only safetensors are loaded)")
    return files


def checkpoint_keys(model_dir: Path) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor in the checkpoint (reads headers only)."""
    from safetensors import safe_open

    shapes: dict[str, tuple[int, ...]] = {}
    for file in checkpoint_files(model_dir):
        with safe_open(str(file), framework="pt") as handle:
            for key in handle.keys():  # noqa: SIM118 (safe_open is not iterable)
                shapes[key] = tuple(handle.get_slice(key).get_shape())
    return shapes


def _summarise(label: str, names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(sorted(names)[:limit])
    more = f" (+{len(names) - limit} more)" if len(names) > limit else ""
    return f"{len(names)} {label}: {shown}{more}"


def load_weights_strict(
    module: torch.nn.Module,
    model_dir: Path,
    *,
    rename: Callable[[str], str | None],
    what: str,
) -> list[str]:
    """Copy every checkpoint tensor into `module`'s parameter/buffer `rename(key)`; return the ignored keys.

    `rename` maps a checkpoint name to a state-dict name of `module`, or returns None for a tensor the
    embedder does not use by design (e.g. a language-model head). Raises CheckpointMismatchError when a
    parameter stays unfilled, a tensor has no home, or shapes differ: nothing is left randomly initialised.
    """
    import torch
    from safetensors import safe_open

    targets = module.state_dict(keep_vars=True)
    filled: set[str] = set()
    unexpected: list[str] = []
    wrong_shape: list[str] = []
    ignored: list[str] = []
    with torch.no_grad():
        for file in checkpoint_files(model_dir):
            with safe_open(str(file), framework="pt") as handle:
                for key in handle.keys():  # noqa: SIM118 (safe_open is not iterable)
                    name = rename(key)
                    if name is None:
                        ignored.append(key)
                        continue
                    target = targets.get(name)
                    if target is None:
                        unexpected.append(key)
                        continue
                    shape = tuple(handle.get_slice(key).get_shape())
                    if shape != tuple(target.shape):
                        wrong_shape.append(f"{key} {list(shape)} vs model {list(target.shape)}")
                        continue
                    target.data.copy_(handle.get_tensor(key))
                    filled.add(name)
    missing = [name for name in targets if name not in filled]
    if missing or unexpected or wrong_shape:
        parts = []
        if missing:
            parts.append(_summarise("model weights missing from the checkpoint", missing))
        if unexpected:
            parts.append(_summarise("checkpoint tensors the model has no place for", unexpected))
        if wrong_shape:
            parts.append(_summarise("tensors with the wrong shape", wrong_shape))
        raise CheckpointMismatchError(
            f"{what}: the checkpoint in {model_dir} does not match the model architecture; " + "; ".join(parts)
        )
    return ignored


@contextmanager
def build_context(device: str, dtype: torch.dtype) -> Iterator[None]:
    """Create modules directly on `device` in `dtype`, skipping random init (every weight is loaded next)."""
    import torch
    from transformers.initialization import no_init_weights

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device), no_init_weights():
            yield
    finally:
        torch.set_default_dtype(previous)


def read_checkpoint_json(path: Path) -> dict[str, Any]:
    """A checkpoint's JSON file, or CheckpointMismatchError saying what is wrong. (Caches use
    storage.read_json, which answers None instead: a bad cache file is rebuilt, a bad checkpoint is not.)"""
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointMismatchError(f"{path.name} not found in {path.parent}") from None
    except json.JSONDecodeError as exc:
        raise CheckpointMismatchError(f"{path} is not valid JSON ({exc})") from exc


# ----------------------------------------------------------------------------------------------------------
# The shared embedder skeleton: lazy load, length-sorted batches, instruction handling
# ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class EmbedInput:
    """One thing to embed: text and/or image, plus the task instruction (queries only; None for candidates)."""

    text: str | None
    image: Any  # path or PIL image; opened lazily with mmembed.images.load_image
    instruction: str | None = None

    def open_image(self, max_side: int | None = None) -> PILImage | None:
        return None if self.image is None else load_image(self.image, max_side=max_side)


class MLLMEmbedder:
    """Base of the MLLM embedders. Subclasses set `dim` and implement `_load`, `_encode_batch`, `_cost`."""

    #: bumped when prompts/pooling change, so cached vectors from an older format are not reused
    format_version = "1"

    def __init__(self, info: BackendInfo, model_id: str | None, revision: str | None, batch_size: int,
                 adapter: str | None = None) -> None:
        if batch_size < 1:
            raise MMEmbedError(f"batch_size must be >= 1, got {batch_size}")
        self.info = info
        self.name = info.name
        self.model_id = model_id or info.hub_id
        if not self.model_id:
            raise MMEmbedError(f"{info.name}: no model id given and the backend has no default")
        self.revision = revision if revision is not None else (info.revision if model_id is None else None)
        self.batch_size = batch_size
        # A LoRA adapter folder (peft format) trained by `mmembed finetune`, applied on top of the weights.
        self.adapter = str(Path(adapter).expanduser().resolve()) if adapter else None
        if self.adapter and not (Path(self.adapter) / "adapter_config.json").is_file():
            raise MMEmbedError(f"{info.name}: no LoRA adapter (adapter_config.json) in {self.adapter}")
        self._lock = threading.RLock()
        self._model_dir: Path | None = None
        self._loaded = False
        self._encode = gpu(self._encode_batch)

    # -- subclass hooks ---------------------------------------------------------------------------------
    @property
    def dim(self) -> int:  # pragma: no cover - overridden
        raise NotImplementedError

    def _load(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    def _encode_batch(self, inputs: Sequence[EmbedInput]) -> np.ndarray:  # pragma: no cover - overridden
        raise NotImplementedError

    def _cost(self, entry: EmbedInput) -> int:
        """Rough token count used to sort inputs so that one batch holds inputs of similar length."""
        return (len(entry.text) // 4 if entry.text else 0) + (1_000 if entry.image is not None else 0)

    def _settings(self) -> str:
        """Anything beyond model id/revision that changes the vectors (resolution caps, ...)."""
        return ""

    def notes(self) -> tuple[str, ...]:
        return ()

    # -- the Embedder protocol ------------------------------------------------------------------------------
    def model_dir(self) -> Path:
        """The local folder of the checkpoint (HF cache snapshot or the user's folder), resolved once."""
        with self._lock:
            if self._model_dir is None:
                from mmembed.hub import resolve_model_dir

                self._model_dir = resolve_model_dir(self.model_id, self.revision, backend=self.name,
                                                    allow_patterns=self.info.allow_patterns)
            return self._model_dir

    @property
    def fingerprint(self) -> str:
        from mmembed.hub import model_identity

        identity = model_identity(self.model_dir())
        adapter = f":lora-{adapter_digest(Path(self.adapter))}" if self.adapter else ""
        return f"{self.name}:{self.model_id}@{identity}:fmt{self.format_version}{self._settings()}{adapter}"

    def ensure_loaded(self) -> None:
        with self._lock:
            if not self._loaded:
                self._load()
                if self.adapter:
                    apply_lora_adapter(self._model, Path(self.adapter))
                self._loaded = True

    def embed_items(self, items: Sequence[Item], *, progress: ProgressFn | None = None) -> np.ndarray:
        inputs = [EmbedInput(item.text, item.image) for item in items]
        return self._embed_all(inputs, progress, f"embedding with {self.name}")

    def embed_query(self, query: Query) -> np.ndarray:
        entry = EmbedInput(query.text, query.image, instruction_for(query))
        return self._embed_all([entry], None, "")[0]

    def describe_query(self, query: Query) -> QueryInfo:
        return QueryInfo(instruction=instruction_for(query), notes=self.notes())

    def _embed_all(self, inputs: Sequence[EmbedInput], progress: ProgressFn | None, desc: str) -> np.ndarray:
        import numpy as np

        if not inputs:
            return np.zeros((0, self.dim), dtype=np.float32)
        self.ensure_loaded()
        out = np.zeros((len(inputs), self.dim), dtype=np.float32)
        # Sorting by estimated length keeps padding small; rows are written back at their original index.
        order = sorted(range(len(inputs)), key=lambda i: self._cost(inputs[i]))
        report(progress, 0, len(inputs), desc)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            with self._lock:  # one forward pass at a time: the model is shared between threads (Gradio)
                out[chunk] = self._encode([inputs[i] for i in chunk])
            report(progress, min(start + self.batch_size, len(order)), len(inputs), desc)
        return l2_normalize(out)


def adapter_digest(folder: Path) -> str:
    """Content hash of a LoRA adapter folder (config + weights): a retrained adapter re-embeds the corpus."""
    import hashlib

    digest = hashlib.sha256()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        path = folder / name
        if path.is_file():
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    return digest.hexdigest()[:12]


def apply_lora_adapter(model: Any, folder: Path) -> None:
    """Inject the LoRA layers described in `folder` into `model` and load their trained weights (strict)."""
    import torch
    from peft import LoraConfig, inject_adapter_in_model, set_peft_model_state_dict
    from safetensors.torch import load_file

    config = LoraConfig.from_pretrained(str(folder))
    inject_adapter_in_model(config, model)
    weights = load_file(str(folder / "adapter_model.safetensors"))
    result = set_peft_model_state_dict(model, weights)
    unexpected = list(getattr(result, "unexpected_keys", []) or [])
    if unexpected:
        raise CheckpointMismatchError(f"LoRA adapter {folder}: tensors the model has no place for: "
                                      f"{_summarise('unexpected', unexpected)}")
    model.requires_grad_(False)
    model.eval()
    with torch.no_grad():  # keep the adapter in the model's dtype and device
        first = next(model.parameters())
        for name, param in model.named_parameters():
            if "lora_" in name:
                param.data = param.data.to(first.device, first.dtype)
