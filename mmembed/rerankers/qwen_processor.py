"""A Qwen2-VL image+text processor that does not need torchvision.

transformers' `Qwen2VLProcessor` insists on building its video processor, which imports torchvision; a
CPU-only install often lacks it, and the reranker never sees videos. This class does the same job for
images: render the chat template, expand each `<|image_pad|>` to one token per merged patch group, and
tokenize; pixel values come from the torch-free `Qwen2VLImageProcessorPil`. Used only as a fallback
when `AutoProcessor` cannot be built.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

IMAGE_PAD = "<|image_pad|>"


class QwenImageTextProcessor:
    """Qwen2-VL's tokenizer + image processor for checkpoints whose processor transformers cannot build itself."""

    def __init__(self, tokenizer: Any, image_processor: Any, chat_template: str | None) -> None:
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        self.chat_template = chat_template or tokenizer.chat_template

    @classmethod
    def from_pretrained(cls, model_dir: str | Path) -> QwenImageTextProcessor:
        from transformers import AutoTokenizer
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

        folder = Path(model_dir)
        template = None
        if (folder / "chat_template.jinja").is_file():
            template = (folder / "chat_template.jinja").read_text(encoding="utf-8")
        elif (folder / "chat_template.json").is_file():
            template = json.loads((folder / "chat_template.json").read_text(encoding="utf-8")).get("chat_template")
        tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False)
        return cls(tokenizer, Qwen2VLImageProcessorPil.from_pretrained(str(folder)), template)

    def apply_chat_template(self, messages: list[dict[str, Any]], **kwargs: Any) -> str:
        return self.tokenizer.apply_chat_template(messages, chat_template=self.chat_template, **kwargs)

    def __call__(self, text: list[str], images: list[Any] | None = None, return_tensors: str = "pt") -> Any:
        from transformers import BatchFeature

        data: dict[str, Any] = {}
        prompts = list(text)
        if images:
            pixels = self.image_processor(images=images, return_tensors="pt")
            data.update(pixels)
            merge = int(self.image_processor.merge_size) ** 2
            counts = iter((pixels["image_grid_thw"].prod(-1) // merge).tolist())
            # Expand each placeholder once, in order; the sentinel keeps expanded pads from being re-expanded.
            expanded = []
            for prompt in prompts:
                while IMAGE_PAD in prompt:
                    prompt = prompt.replace(IMAGE_PAD, "<|placeholder|>" * next(counts), 1)
                expanded.append(prompt.replace("<|placeholder|>", IMAGE_PAD))
            prompts = expanded
        tokens = self.tokenizer(prompts, return_tensors=return_tensors, padding=True)
        data.update(tokens)
        image_id = self.tokenizer.convert_tokens_to_ids(IMAGE_PAD)
        data["mm_token_type_ids"] = (tokens["input_ids"] == image_id).int()
        return BatchFeature(data=data, tensor_type=return_tensors)
