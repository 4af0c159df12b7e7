"""Reranker backends, created by name through `RERANKERS` (see mmembed.registry)."""

from __future__ import annotations

from mmembed.registry import BackendInfo, Registry
from mmembed.rerankers.base import Reranker, rerank

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

__all__ = ["RERANKERS", "Reranker", "rerank"]
