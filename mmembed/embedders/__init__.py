"""Embedder backends, created by name through `EMBEDDERS` (see mmembed.registry)."""

from __future__ import annotations

from mmembed.embedders.base import Embedder, QueryInfo, fuse_image_text, l2_normalize
from mmembed.registry import BackendInfo, Registry

EMBEDDERS: Registry[Embedder] = Registry("embedder")

for _info in (
    BackendInfo(
        name="clip-b32",
        factory="mmembed.embedders.clip:ClipEmbedder",
        description="OpenAI CLIP ViT-B/32 with UniIR's CLIP-SF score fusion (CPU friendly)",
        hub_id="openai/clip-vit-base-patch32",
        license="MIT",
        allow_patterns=("*.json", "*.txt", "model.safetensors"),
    ),
    BackendInfo(
        name="siglip-b16",
        factory="mmembed.embedders.clip:ClipEmbedder",
        description="Google SigLIP base/16 at 224 px with CLIP-SF fusion",
        hub_id="google/siglip-base-patch16-224",
        license="Apache-2.0",
        allow_patterns=("*.json", "*.model", "model.safetensors"),
    ),
    BackendInfo(
        name="siglip2-b16",
        factory="mmembed.embedders.clip:ClipEmbedder",
        description="Google SigLIP 2 base/16 at 224 px with CLIP-SF fusion",
        hub_id="google/siglip2-base-patch16-224",
        license="Apache-2.0",
        allow_patterns=("*.json", "*.model", "model.safetensors"),
    ),
    BackendInfo(
        name="mmembed-mini",
        factory="mmembed.embedders.mini:MiniEmbedder",
        description="Small offline universal retriever trained by this project with the MM-Embed recipe "
        "(ships in assets/, needs no network)",
        license="Apache-2.0",
        random_negatives="mmembed-mini-rand",
    ),
    BackendInfo(
        name="mmembed-mini-rand",
        factory="mmembed.embedders.mini:MiniEmbedder",
        description="mmembed-mini's M_rand: the same model trained with random negatives only (no modality-aware "
        "mining, no continual fine-tuning), shipped to show the modality bias the recipe removes",
        license="Apache-2.0",
    ),
    BackendInfo(
        name="gme-2b",
        factory="mmembed.embedders.gme:GmeEmbedder",
        description="GME-Qwen2-VL-2B universal multimodal embedder (instruction-following; slow on CPU)",
        hub_id="Alibaba-NLP/gme-Qwen2-VL-2B-Instruct",
        license="Apache-2.0",
        allow_patterns=("*.json", "*.safetensors", "*.txt", "*.jinja"),
    ),
    BackendInfo(
        name="mm-embed",
        factory="mmembed.embedders.mm_embed:MMEmbedEmbedder",
        description="NVIDIA MM-Embed (LLaVA-Next + NV-Embed, 7B; GPU only). Licence CC-BY-NC-4.0",
        hub_id="nvidia/MM-Embed",
        license="CC-BY-NC-4.0",
        needs_gpu=True,
        allow_patterns=("*.json", "*.safetensors", "*.model", "*.txt"),
    ),
):
    EMBEDDERS.register(_info)

__all__ = ["EMBEDDERS", "Embedder", "QueryInfo", "fuse_image_text", "l2_normalize"]
