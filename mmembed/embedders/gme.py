"""GME (Alibaba-NLP/gme-Qwen2-VL-2B-Instruct), natively on transformers' Qwen2-VL classes. Apache-2.0.

What GME's published `gme_inference.py` does, reproduced here:
- prompt: `<|im_start|>system\\n{instruction}<|im_end|>\\n<|im_start|>user\\n{input}<|im_end|>\\n
  <|im_start|>assistant\\n<|endoftext|>` where `{input}` is `<|vision_start|><|image_pad|><|vision_end|>`
  (when there is an image) followed by the text; candidates use the instruction
  "You are a helpful assistant.", queries the task instruction;
- the Qwen2-VL vision tower's merged patch features replace the `<|image_pad|>` slots;
- the text decoder runs causally with right padding and plain sequential positions (GME calls the
  decoder with `position_ids=None`, so no multimodal 3-D rope indices are used);
- pooling: hidden state of the last non-padding token (`<|endoftext|>`), L2-normalised (1536-d for 2B).

Image resolution cap: GME resizes every image so that its visual-token count (one per 28x28 pixels)
lies in [256, 1280]. Here the default range is [256, 512] tokens (MIN/MAX_IMAGE_PIXELS below): above
~512 tokens CPU latency grows quickly for little retrieval gain on photos. Pass
`max_image_pixels=1280 * 28 * 28` for GME's own setting. Long texts are cut so the prompt fits
`max_length` (1800, as GME) without losing the template's end, whose last token is the one pooled.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from mmembed.embedders._mllm_common import (
    CheckpointMismatchError,
    EmbedInput,
    MLLMEmbedder,
    build_context,
    load_weights_strict,
    read_checkpoint_json,
)
from mmembed.registry import BackendInfo
from mmembed.types import MMEmbedError

if TYPE_CHECKING:
    import numpy as np

PIXELS_PER_TOKEN = 28 * 28  # a 2x2 merge of 14x14 patches
MIN_IMAGE_PIXELS = 256 * PIXELS_PER_TOKEN  # GME's min_image_tokens
MAX_IMAGE_PIXELS = 512 * PIXELS_PER_TOKEN  # GME allows 1280; see the module docstring
DEFAULT_INSTRUCTION = "You are a helpful assistant."
VISION_BLOCK = "<|vision_start|><|image_pad|><|vision_end|>"
IMAGE_PAD = "<|image_pad|>"
SPECIAL_MARKERS = ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|vision_start|>", "<|vision_end|>", IMAGE_PAD)


def _rename(key: str) -> str | None:
    """Checkpoint name (transformers 4.x `Qwen2VLForConditionalGeneration`, or the v5 layout) -> Qwen2VLModel name."""
    for old, new in (("model.language_model.", "language_model."), ("model.visual.", "visual.")):
        if key.startswith(old):
            return new + key[len(old) :]
    if key.startswith("model."):
        return "language_model." + key[len("model.") :]
    if key.startswith("visual."):
        return key
    if key == "lm_head.weight":
        return None  # the language-model head plays no part in embeddings (and is tied to the input table in 2B)
    return key  # anything else is reported as unexpected by the strict loader


def _clean(text: str) -> str:
    """User text must not inject template or image-slot tokens."""
    for marker in SPECIAL_MARKERS:
        text = text.replace(marker, "")
    return text


class GmeEmbedder(MLLMEmbedder):
    """`gme-2b`: instruction-following universal embedder that also runs (slowly) on a CPU."""

    format_version = "1"

    def __init__(
        self,
        info: BackendInfo,
        model_id: str | None = None,
        revision: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 4,
        max_image_pixels: int = MAX_IMAGE_PIXELS,
        min_image_pixels: int = MIN_IMAGE_PIXELS,
        max_length: int = 1800,
        adapter: str | None = None,
    ) -> None:
        from mmembed.devices import resolve_device

        super().__init__(info, model_id, revision, batch_size, adapter=adapter)
        if not PIXELS_PER_TOKEN <= min_image_pixels <= max_image_pixels:
            raise MMEmbedError(
                f"need {PIXELS_PER_TOKEN} <= min_image_pixels <= max_image_pixels, got {min_image_pixels}, "
                f"{max_image_pixels}"
            )
        self.device = resolve_device(device)
        self.dtype_name = dtype
        self.max_image_pixels = max_image_pixels
        self.min_image_pixels = min_image_pixels
        self.max_length = max_length
        self._dim: int | None = None
        self._model: Any = None

    @property
    def dim(self) -> int:
        if self._dim is None:
            model_dir = self.model_dir()
            raw = read_checkpoint_json(model_dir / "config.json")
            self._dim = int(raw.get("text_config", {}).get("hidden_size") or raw["hidden_size"])
        return self._dim

    def _settings(self) -> str:
        return f":px{self.min_image_pixels}-{self.max_image_pixels}:len{self.max_length}"

    def notes(self) -> tuple[str, ...]:
        tokens = self.max_image_pixels // PIXELS_PER_TOKEN
        return (f"images resized to at most {tokens} visual tokens (~{int(self.max_image_pixels**0.5)} px square)",)

    def _load(self) -> None:
        from transformers import PreTrainedTokenizerFast, Qwen2VLConfig
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil
        from transformers.models.qwen2_vl.modeling_qwen2_vl import Qwen2VLModel

        from mmembed.devices import resolve_dtype
        model_dir = self.model_dir()
        config = Qwen2VLConfig.from_pretrained(str(model_dir))
        if config.model_type != "qwen2_vl":
            raise CheckpointMismatchError(f"{model_dir}: model_type {config.model_type!r}, expected 'qwen2_vl'")
        dtype = resolve_dtype(self.dtype_name, self.device)
        for sub in (config, config.text_config, config.vision_config):
            sub._attn_implementation = "sdpa"
            sub.dtype = dtype  # sub-models built with _from_config would otherwise follow the saved torch_dtype
        with build_context(self.device, dtype):
            model = Qwen2VLModel(config)
        load_weights_strict(model, model_dir, rename=_rename, what="GME")
        self._model = model.eval()
        self._dim = config.text_config.hidden_size
        self._image_token_id = config.image_token_id
        self._dtype = dtype
        self._tokenizer = PreTrainedTokenizerFast.from_pretrained(str(model_dir))
        if self._tokenizer.convert_tokens_to_ids(IMAGE_PAD) != self._image_token_id:
            raise CheckpointMismatchError(f"{model_dir}: tokenizer and config disagree on the {IMAGE_PAD} id")
        self._pad_id = self._tokenizer.pad_token_id
        if self._pad_id is None:
            self._pad_id = self._tokenizer.convert_tokens_to_ids("<|endoftext|>")
        self._processor = Qwen2VLImageProcessorPil.from_pretrained(
            str(model_dir), min_pixels=self.min_image_pixels, max_pixels=self.max_image_pixels
        )
        self._merge = int(self._processor.merge_size)

    # -- prompts -----------------------------------------------------------------------------------------
    @staticmethod
    def prompt_parts(entry: EmbedInput) -> tuple[str, str, str]:
        """(head, text, tail) of the GME prompt; the image slot, if any, ends the head."""
        instruction = _clean(entry.instruction) if entry.instruction else DEFAULT_INSTRUCTION
        head = f"<|im_start|>system\n{instruction}<|im_end|>\n<|im_start|>user\n"
        if entry.image is not None:
            head += VISION_BLOCK
        tail = "<|im_end|>\n<|im_start|>assistant\n<|endoftext|>"
        return head, _clean(entry.text or ""), tail

    def _ids(self, entry: EmbedInput, image_tokens: int) -> list[int]:
        head, text, tail = self.prompt_parts(entry)
        head = head.replace(IMAGE_PAD, IMAGE_PAD * image_tokens)
        tok = self._tokenizer
        ids = tok(head + text + tail, add_special_tokens=False)["input_ids"]
        if len(ids) <= self.max_length:
            return ids
        # too long: cut the text, keep the template's end (its last token is the pooled one)
        fixed = tok(head, add_special_tokens=False)["input_ids"], tok(tail, add_special_tokens=False)["input_ids"]
        room = self.max_length - len(fixed[0]) - len(fixed[1])
        if room < 0:
            raise MMEmbedError(f"the image alone needs more than max_length={self.max_length} tokens")
        body = tok(text, add_special_tokens=False)["input_ids"][:room]
        return [*fixed[0], *body, *fixed[1]]

    def prepare(self, inputs: Sequence[EmbedInput]) -> dict[str, Any]:
        import torch

        images = [entry.open_image() for entry in inputs if entry.image is not None]
        pixel_values = grid = None
        counts: list[int] = []
        if images:
            processed = self._processor(images=images, return_tensors="pt")
            pixel_values, grid = processed["pixel_values"], processed["image_grid_thw"]
            counts = (grid.prod(-1) // self._merge**2).tolist()
        rows, k = [], 0
        for entry in inputs:
            if entry.image is not None:
                rows.append(self._ids(entry, counts[k]))
                k += 1
            else:
                rows.append(self._ids(entry, 0))
        longest = max(len(r) for r in rows)
        input_ids = torch.full((len(rows), longest), self._pad_id, dtype=torch.long)
        attention = torch.zeros((len(rows), longest), dtype=torch.long)
        for i, row in enumerate(rows):  # right padding, as GME sets it
            input_ids[i, : len(row)] = torch.tensor(row)
            attention[i, : len(row)] = 1
        return {"input_ids": input_ids, "attention_mask": attention, "pixel_values": pixel_values, "grid": grid}

    def forward_prepared(self, batch: dict[str, Any]) -> Any:
        import torch

        model = self._model
        device = model.language_model.embed_tokens.weight.device
        input_ids = batch["input_ids"].to(device)
        attention = batch["attention_mask"].to(device)
        embeds = model.language_model.embed_tokens(input_ids)
        if batch["pixel_values"] is not None:
            vision = model.visual(batch["pixel_values"].to(device, self._dtype), grid_thw=batch["grid"].to(device))
            image_embeds = vision.pooler_output if hasattr(vision, "pooler_output") else vision
            slots = input_ids == self._image_token_id
            if int(slots.sum()) != image_embeds.shape[0]:
                raise MMEmbedError(f"{int(slots.sum())} image slots for {image_embeds.shape[0]} image features")
            embeds = embeds.masked_scatter(slots.unsqueeze(-1), image_embeds.to(embeds.dtype))
        hidden = model.language_model(inputs_embeds=embeds, attention_mask=attention).last_hidden_state
        last = attention.sum(dim=1) - 1
        pooled = hidden[torch.arange(hidden.shape[0], device=device), last]
        return torch.nn.functional.normalize(pooled.float(), p=2, dim=-1)

    def _encode_batch(self, inputs: Sequence[EmbedInput]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            return self.forward_prepared(self.prepare(inputs)).cpu().numpy()

    def _cost(self, entry: EmbedInput) -> int:
        image = self.max_image_pixels // PIXELS_PER_TOKEN if entry.image is not None else 0
        return 30 + (len(entry.text) // 4 if entry.text else 0) + image
