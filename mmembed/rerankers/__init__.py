"""Reranker backends, created by name through `RERANKERS` (see mmembed.registry)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmembed.registry import BackendInfo, Registry
from mmembed.rerankers.base import Reranker, rerank

if TYPE_CHECKING:
    from mmembed.config import Settings

RERANKERS: Registry[Reranker] = Registry("reranker")

# What `prefetch` downloads: configs, tokenizer (json/txt/sentencepiece), chat template, safetensors weights;
# not the ONNX exports or pickled duplicates these repos also carry (SmolVLM's onnx/ folder is GBs).
_MLLM_FILES = ("*.json", "*.txt", "*.model", "*.jinja", "*.safetensors")

for _info in (
    BackendInfo(
        name="smolvlm-256m",
        factory="mmembed.rerankers.mllm:MLLMReranker",
        description="SmolVLM-256M-Instruct, zero-shot P(True) reranking (CPU default)",
        hub_id="HuggingFaceTB/SmolVLM-256M-Instruct",
        license="Apache-2.0",
        allow_patterns=_MLLM_FILES,
    ),
    BackendInfo(
        name="smolvlm-500m",
        factory="mmembed.rerankers.mllm:MLLMReranker",
        description="SmolVLM-500M-Instruct, zero-shot P(True) reranking",
        hub_id="HuggingFaceTB/SmolVLM-500M-Instruct",
        license="Apache-2.0",
        allow_patterns=_MLLM_FILES,
    ),
    BackendInfo(
        name="qwen2-vl-2b",
        factory="mmembed.rerankers.mllm:MLLMReranker",
        description="Qwen2-VL-2B-Instruct, zero-shot P(True) reranking (GPU recommended)",
        hub_id="Qwen/Qwen2-VL-2B-Instruct",
        license="Apache-2.0",
        allow_patterns=_MLLM_FILES,
    ),
    BackendInfo(
        name="llava-next-7b",
        factory="mmembed.rerankers.mllm:MLLMReranker",
        description="LLaVA-v1.6-Mistral-7B, the paper's zero-shot reranker (GPU only)",
        hub_id="llava-hf/llava-v1.6-mistral-7b-hf",
        license="Apache-2.0",
        needs_gpu=True,
        allow_patterns=_MLLM_FILES,
    ),
    BackendInfo(
        name="mmembed-mini-rerank",
        factory="mmembed.rerankers.mini:MiniReranker",
        description="Small offline multimodal cross-encoder (MiniLM + mmembed-mini's image tower) trained by this "
        "project to rerank mmembed-mini's top-N; not an MLLM (ships in assets/, needs no network)",
        license="Apache-2.0",
    ),
):
    RERANKERS.register(_info)



def load_reranker(name: str, settings: Settings, registry: Registry[Reranker] | None = None) -> Reranker:
    """The reranker `name` as configured by `settings` (device; for MLLM rerankers, dtype and the feature cache
    under the settings' cache dir). The app and `index build --reranker` both create it here, so they share one
    instance per process and the same on-disk image features. `registry`: another registry (tests' fakes)."""
    registry = registry or RERANKERS
    options: dict[str, object] = {"device": settings.device}
    factory = registry.info(name).factory
    if isinstance(factory, str) and factory.endswith(":MLLMReranker"):
        options["dtype"] = settings.rerank_dtype
        options["feature_cache_dir"] = settings.cache_dir / "rerank-image-features"
    return registry.get(name, **options)


__all__ = ["RERANKERS", "Reranker", "load_reranker", "rerank"]
