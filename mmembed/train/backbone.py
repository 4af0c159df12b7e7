"""Trainable views of the registered embedders, for the MM-Embed recipe on real backbones.

The recipe's loop (mmembed.train.recipe) needs, from a backbone, one thing: unit vectors *with gradients*
for a batch of queries or candidates, computed exactly as the embedder computes them at inference. So
each view reuses its embedder's own preprocessing and forward pass, minus `inference_mode`:

  * CLIP / SigLIP family (`ClipTrainable`): full fine-tuning of both towers; image+text inputs are fused
    as at inference (CLIP-SF: unit image + unit text, renormalised). Saved with `save_pretrained`, so the
    result is a CLIP folder that `EMBEDDERS.get("clip-b32", model_id=folder)` loads like any checkpoint.
  * MLLM embedders (GME, MM-Embed: `LoraTrainable`): the 2B-8B backbone stays frozen and LoRA adapters
    (through `peft`) are trained in its attention and MLP projections. Saved as a peft adapter folder
    that the embedder loads back with `adapter=folder` (mmembed.embedders._mllm_common).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from mmembed.embedders._mllm_common import EmbedInput
from mmembed.types import MMEmbedError

if TYPE_CHECKING:
    import torch

# LoRA on the attention and MLP projections of Mistral/Qwen2-style layers (the names both backbones use).
DEFAULT_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


class Trainable(Protocol):
    """What the recipe's loop trains: a module (its trainable parameters) and a differentiable encoder."""

    module: torch.nn.Module

    def encode(self, entries: Sequence[EmbedInput]) -> torch.Tensor:
        """(len(entries), dim) unit vectors, differentiable with respect to the trainable parameters."""
        ...

    def trainable_state(self) -> dict[str, torch.Tensor]:
        """The tensors a checkpoint must hold to resume (the trainable ones only)."""
        ...

    def save(self, out: Path) -> None:
        """Write the trained model in the form its embedder loads back."""
        ...


class ClipTrainable:
    """Full fine-tuning of a CLIP/SigLIP dual encoder, through the same tokenizer/processor as ClipEmbedder."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder
        self.module = embedder._get_model()  # the embedder's own model object: it embeds with the new weights
        if not hasattr(self.module, "get_text_features"):
            raise MMEmbedError(f"{embedder.name}: not a dual encoder")
        if any(type(m).__name__ == "PackedLinear" for m in self.module.modules()):
            raise MMEmbedError(f"{embedder.name}: its Linear layers are prepacked for inference (no gradients); "
                               "load it with prepack=False to fine-tune it")
        self.module.requires_grad_(True)

    def encode(self, entries: Sequence[EmbedInput]) -> torch.Tensor:
        import torch

        from mmembed.embedders.clip import feature_tensor
        from mmembed.images import load_image

        text_rows = [i for i, e in enumerate(entries) if e.text and e.text.strip()]
        image_rows = [i for i, e in enumerate(entries) if e.image is not None]
        dim = self.embedder.dim
        device = next(self.module.parameters()).device
        text = torch.zeros((len(entries), dim), device=device)
        image = torch.zeros((len(entries), dim), device=device)
        if text_rows:
            inputs = self.embedder.text_inputs([entries[i].text for i in text_rows])
            text = text.index_copy(0, torch.tensor(text_rows, device=device), _unit(
                feature_tensor(self.module.get_text_features(**inputs))))
        if image_rows:
            inputs = self.embedder.image_inputs([load_image(entries[i].image) for i in image_rows])
            image = image.index_copy(0, torch.tensor(image_rows, device=device), _unit(
                feature_tensor(self.module.get_image_features(**inputs))))
        has_text = torch.zeros(len(entries), dtype=torch.bool, device=device)
        has_text[text_rows] = True
        has_image = torch.zeros_like(has_text)
        has_image[image_rows] = True
        # one tower's vector, or CLIP-SF fusion when both are there: exactly ClipEmbedder._embed's rule
        fused = torch.where((has_text & has_image)[:, None], text + image,
                            torch.where(has_text[:, None], text, image))
        return _unit(fused.float())

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {name: p for name, p in self.module.named_parameters() if p.requires_grad}

    def save(self, out: Path) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.module.save_pretrained(str(out), safe_serialization=True)
        self.embedder._get_processor().save_pretrained(str(out))


class LoraTrainable:
    """LoRA adapters (peft) in a frozen MLLM embedder (GME, MM-Embed), trained through its own forward."""

    def __init__(self, embedder: Any, *, rank: int = 16, alpha: int = 32, dropout: float = 0.0,
                 targets: Sequence[str] = DEFAULT_LORA_TARGETS) -> None:
        from peft import LoraConfig, inject_adapter_in_model

        if not hasattr(embedder, "forward_prepared"):
            raise MMEmbedError(f"{embedder.name}: LoRA training needs an MLLM embedder (gme-2b, mm-embed)")
        embedder.ensure_loaded()
        self.embedder = embedder
        self.module = embedder._model
        self.module.requires_grad_(False)
        if embedder.adapter:  # continue training the adapter it loaded (the ct stage starts from hard's)
            self.config = LoraConfig.from_pretrained(embedder.adapter)
        else:
            present = {name.rsplit(".", 1)[-1] for name, _ in self.module.named_modules()}
            chosen = [t for t in targets if t in present]
            if not chosen:
                raise MMEmbedError(f"{embedder.name}: none of the LoRA target modules {list(targets)} exist")
            self.config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=dropout, target_modules=chosen,
                                     bias="none")
            inject_adapter_in_model(self.config, self.module)  # LoRA layers replace the Linear layers in place
        for name, param in self.module.named_parameters():
            param.requires_grad_("lora_" in name)

    def encode(self, entries: Sequence[EmbedInput]) -> torch.Tensor:
        out = self.embedder.forward_prepared(self.embedder.prepare(entries))
        vectors = out[0] if isinstance(out, tuple) else out  # MM-Embed also returns its pooling mask
        return _unit(vectors.float())

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {name: p for name, p in self.module.named_parameters() if p.requires_grad}

    def save(self, out: Path) -> None:
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        from mmembed.storage import atomic_write

        out.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in get_peft_model_state_dict(self.module).items()}
        atomic_write(out / "adapter_model.safetensors", lambda tmp: save_file(state, str(tmp)))
        self.config.save_pretrained(str(out))


def trainable_for(embedder: Any, *, lora: bool | None = None, **lora_options: Any) -> Trainable:
    """The right trainable view of `embedder`: full fine-tuning for dual encoders, LoRA for MLLM embedders."""
    if lora is None:
        lora = hasattr(embedder, "forward_prepared")
    if lora:
        return LoraTrainable(embedder, **lora_options)
    if not hasattr(embedder, "text_inputs"):
        raise MMEmbedError(f"{embedder.name}: this embedder cannot be fine-tuned (no trainable view)")
    return ClipTrainable(embedder)


def _unit(vectors: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.nn.functional.normalize(vectors, p=2, dim=-1)
