"""NVIDIA MM-Embed, implemented natively on transformers 5 (no remote code), loading the published weights as they are.

MM-Embed (arXiv 2411.02571) is LLaVA-Next whose language model is replaced by NV-Embed-v1:
- vision: CLIP ViT-L/14-336 (`vision_tower.*`), features of layer -2 without CLS, through the 2-layer
  projector (`multi_modal_projector.*`); only the *global* 336x336 tile is used (576 patch tokens), and
  LLaVA-Next's `image_newline` vector is appended after them, as its `pack_image_features` does for a
  single tile (so an image occupies 577 positions);
- language model: Mistral-7B layers (`language_model.*`) run with **bidirectional** attention (padding
  mask only, no causal mask), positions 0..n-1, right padding;
- pooling: NV-Embed's latent attention (`latent_attention_model.*`) mean-pooled over the prompt with the
  instruction tokens masked out, L2-normalised, 4096-d.
Prompts: query `Instruct: {instruction}\\nQuery: <image>\\n<text>`, candidate `<image>\\n<text>`; the
`<image>\\n` part is dropped for text-only inputs. The tokenizer is MM-Embed's LLaVA-Next tokenizer
(BOS added, EOS appended when `add_eos_token` is set, as NV-Embed does); the `<pad>` id (32001, beyond
the 32000-row embedding table) is looked up as EOS, as the original does.

The published code downloads NV-Embed-v1's config at load time; its values (Mistral-7B-v0.1 shape,
rope theta 1e4; latent attention 512 latents x 4096, 8 heads of 4096) are built in here instead. A
config.json key `mmembed_retriever_config` ({"text_config": {...}, "latent_attention_config": {...}})
overrides them; only this project's tiny test checkpoints use it.

Weight names are the published ones, except that transformers 5's CLIPVisionModel has no `vision_model`
level: `vision_tower.vision_model.*` is loaded into `vision_tower.*` (see `checkpoint_renamer`).

Licence of the weights: CC-BY-NC-4.0 (non-commercial). 8.2B parameters: GPU only unless forced.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mmembed.embedders._mllm_common import (
    CheckpointMismatchError,
    EmbedInput,
    MLLMEmbedder,
    build_context,
    checkpoint_keys,
    load_weights_strict,
    read_checkpoint_json,
)
from mmembed.registry import BackendInfo, BackendUnavailableError
from mmembed.types import MMEmbedError

if TYPE_CHECKING:
    import numpy as np
    import torch

LICENSE_NOTE = "MM-Embed weights are licensed CC-BY-NC-4.0 (non-commercial use only)."
IMAGE_TOKEN = "<image>"
QUERY_PREFIX = "\nQuery: "

# NV-Embed-v1's language model (Mistral-7B-v0.1 shape) and latent-attention sizes, from its published config.
NVEMBED_V1_TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "max_position_embeddings": 32768,
    "rms_norm_eps": 1e-5,
    "rope_theta": 10000.0,
    "hidden_act": "silu",
}
NVEMBED_V1_LATENT_CONFIG: dict[str, Any] = {
    "num_latents_value": 512,
    "num_cross_heads": 8,
    "cross_dim_head": 4096,
    "latent_dim": 4096,
    "hidden_dim": 4096,
    "output_normalize": True,
}


class MMEmbedGPURequiredError(BackendUnavailableError):
    """MM-Embed was asked to run on a CPU without force_cpu=True."""


def _build_model(model_dir: Path, device: str, dtype: torch.dtype) -> tuple[Any, dict[str, Any]]:
    """Build the MM-Embed module tree from config.json and fill it strictly from the safetensors."""
    from transformers import LlavaNextConfig

    raw = read_checkpoint_json(model_dir / "config.json")
    if raw.get("model_type") != "llava_next":
        raise CheckpointMismatchError(
            f"{model_dir}/config.json has model_type {raw.get('model_type')!r}; MM-Embed's is 'llava_next'"
        )
    config = LlavaNextConfig.from_pretrained(str(model_dir))
    override = raw.get("mmembed_retriever_config") or {}
    text_values = {**NVEMBED_V1_TEXT_CONFIG, **override.get("text_config", {})}
    latent_values = {**NVEMBED_V1_LATENT_CONFIG, **override.get("latent_attention_config", {})}
    shapes = checkpoint_keys(model_dir)
    embed_shape = shapes.get("language_model.embed_tokens.weight")
    if embed_shape is None:
        raise CheckpointMismatchError(
            f"{model_dir}: no 'language_model.embed_tokens.weight'; this is not an MM-Embed checkpoint"
        )
    text_values["vocab_size"] = embed_shape[0]  # NV-Embed-v1 keeps Mistral's 32000 rows (no <image>/<pad> rows)
    model, text_config = construct_mm_embed(config, text_values, latent_values, device, dtype)
    load_weights_strict(model, model_dir, rename=checkpoint_renamer(model), what="MM-Embed")
    model.eval()
    settings = {
        "image_token_id": config.image_token_index,
        "vision_feature_layer": config.vision_feature_layer,
        "select_strategy": config.vision_feature_select_strategy,
        "add_eos_token": bool(raw.get("add_eos_token", True)),
        "padding_side": raw.get("padding_side", "right"),
        "hidden_size": text_config.hidden_size,
        "vocab_size": text_config.vocab_size,
    }
    if settings["padding_side"] != "right":
        # instruction masking counts tokens from the left edge, which only holds with right padding
        raise CheckpointMismatchError(f"{model_dir}: padding_side {settings['padding_side']!r} is not supported")
    return model, settings


PUBLISHED_VISION_PREFIX = "vision_tower.vision_model."


def checkpoint_renamer(model: Any) -> Callable[[str], str]:
    """Checkpoint name -> name in `model`. The published file was written by transformers 4.42, whose
    CLIPVisionModel wrapped its layers in `vision_model`; transformers 5 dropped that level, so
    `vision_tower.vision_model.encoder...` is looked up as `vision_tower.encoder...` when the model has it.
    Everything else keeps its name; the strict loader reports whatever still does not line up."""
    names = set(model.state_dict())

    def rename(key: str) -> str:
        if key not in names and key.startswith(PUBLISHED_VISION_PREFIX):
            flat = "vision_tower." + key[len(PUBLISHED_VISION_PREFIX) :]
            if flat in names:
                return flat
        return key

    return rename


def construct_mm_embed(
    config: Any, text_values: dict[str, Any], latent_values: dict[str, Any], device: str, dtype: torch.dtype
) -> tuple[Any, Any]:
    """The MM-Embed module tree with uninitialised weights (device "meta" works: benchmarks count parameters).

    `config` is a LlavaNextConfig (vision tower, projector, image token); the language model and the latent
    attention take NV-Embed-v1's values. Names of the submodules are those of the published checkpoint.
    """
    import torch
    from torch import nn
    from transformers import CLIPVisionModel, MistralConfig, MistralModel
    from transformers.models.llava_next.modeling_llava_next import LlavaNextMultiModalProjector
    from transformers.models.mistral.modeling_mistral import MistralRotaryEmbedding

    from mmembed.embedders.latent_attention import LatentAttentionPooler, LatentAttentionSpec

    text_config = MistralConfig(**text_values, sliding_window=None)
    text_config._attn_implementation = "sdpa"
    config.vision_config._attn_implementation = "sdpa"
    config.text_config = text_config  # the projector maps vision features into the *retriever's* width
    spec = LatentAttentionSpec(
        hidden_dim=latent_values["hidden_dim"],
        latent_dim=latent_values["latent_dim"],
        num_latents=latent_values["num_latents_value"],
        num_heads=latent_values["num_cross_heads"],
        head_dim=latent_values["cross_dim_head"],
        normalize=bool(latent_values["output_normalize"]),
    )
    with build_context(device, dtype):
        model = nn.Module()
        model.vision_tower = CLIPVisionModel(config.vision_config)
        model.multi_modal_projector = LlavaNextMultiModalProjector(config)
        model.image_newline = nn.Parameter(torch.empty(text_config.hidden_size))
        model.language_model = MistralModel(text_config)
        model.latent_attention_model = LatentAttentionPooler(spec)
    if device != "meta":
        # rotary tables are computed, not loaded: rebuild them in float32 outside the build context
        model.language_model.rotary_emb = MistralRotaryEmbedding(config=text_config).to(device)
    for layer in model.language_model.layers:
        layer.self_attn.is_causal = False  # NV-Embed runs Mistral bidirectionally
    return model, text_config


def bidirectional_forward(language_model: Any, embeds: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Run Mistral decoder layers with a padding-only (non-causal) mask; returns the normed last hidden states."""
    import torch

    batch, length, _ = embeds.shape
    positions = torch.arange(length, device=embeds.device).unsqueeze(0).expand(batch, -1)
    blocked = ~attention_mask.bool()[:, None, None, :]  # (b, 1, 1, L): keys that are padding
    mask = torch.zeros(batch, 1, length, length, dtype=embeds.dtype, device=embeds.device)
    mask = mask.masked_fill(blocked, torch.finfo(embeds.dtype).min)
    position_embeddings = language_model.rotary_emb(embeds, positions)
    hidden = embeds
    for layer in language_model.layers:
        hidden = layer(hidden, attention_mask=mask, position_ids=positions, position_embeddings=position_embeddings)
        if isinstance(hidden, tuple):  # older layer APIs returned tuples
            hidden = hidden[0]
    return language_model.norm(hidden)


class MMEmbedEmbedder(MLLMEmbedder):
    """`mm-embed`: the paper's own universal retriever (4096-d, instruction-aware queries)."""

    format_version = "1"

    def __init__(
        self,
        info: BackendInfo,
        model_id: str | None = None,
        revision: str | None = None,
        device: str = "auto",
        dtype: str = "auto",
        batch_size: int = 8,
        force_cpu: bool = False,
        max_length: int = 512,
        adapter: str | None = None,
    ) -> None:
        from mmembed.devices import resolve_device

        super().__init__(info, model_id, revision, batch_size, adapter=adapter)
        self.device = resolve_device(device)
        if self.device == "cpu" and not force_cpu:
            raise MMEmbedGPURequiredError(
                "mm-embed needs a GPU: it is a 7B-parameter model (about 16 GB in bfloat16) and no CUDA/MPS "
                "device was found. Use gme-2b or clip-b32 on a CPU, or pass force_cpu=True with dtype='bfloat16' to "
                "run it anyway (about 17 GB of RAM; measured on 2 cores: ~3 s per text, ~30 s per image). "
                + LICENSE_NOTE
            )
        self.dtype_name = dtype
        self.max_length = max_length
        self._dim = 4096
        self._model: Any = None
        self._settings_cache: dict[str, Any] = {}

    @property
    def dim(self) -> int:
        if self._model is None and Path(self.model_id).is_dir():
            # a local checkpoint may be a different width (tests' tiny ones); the published one is 4096
            raw = read_checkpoint_json(Path(self.model_id) / "config.json")
            text = (raw.get("mmembed_retriever_config") or {}).get("text_config", {})
            return int(text.get("hidden_size", NVEMBED_V1_TEXT_CONFIG["hidden_size"]))
        return self._dim

    def notes(self) -> tuple[str, ...]:
        return (LICENSE_NOTE,)

    def _settings(self) -> str:
        return f":len{self.max_length}"

    def _load(self) -> None:
        from transformers import PreTrainedTokenizerFast
        from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

        from mmembed.devices import resolve_dtype
        model_dir = self.model_dir()
        dtype = resolve_dtype(self.dtype_name, self.device)
        self._model, self._settings_cache = _build_model(model_dir, self.device, dtype)
        self._dim = self._settings_cache["hidden_size"]
        # tokenizer.json loaded verbatim, as the original's LlamaTokenizerFast did (no re-derivation)
        self._tokenizer = PreTrainedTokenizerFast.from_pretrained(str(model_dir))
        self._image_processor = LlavaNextImageProcessorPil.from_pretrained(str(model_dir))
        if self._tokenizer.convert_tokens_to_ids(IMAGE_TOKEN) != self._settings_cache["image_token_id"]:
            raise CheckpointMismatchError(
                f"{model_dir}: tokenizer maps {IMAGE_TOKEN} to {self._tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)}, "
                f"config says {self._settings_cache['image_token_id']}"
            )
        if self._tokenizer.bos_token_id is None or self._tokenizer.eos_token_id is None:
            raise CheckpointMismatchError(f"{model_dir}: the tokenizer defines no BOS/EOS token")

    # -- prompt building -----------------------------------------------------------------------------------
    @staticmethod
    def prompt_for(entry: EmbedInput) -> str:
        text = (entry.text or "").replace(IMAGE_TOKEN, "")  # user text must not smuggle in image slots
        if entry.instruction is not None:
            template = f"Instruct: {entry.instruction.replace(IMAGE_TOKEN, '')}{QUERY_PREFIX}<image>\n<text>"
        else:
            template = "<image>\n<text>"
        if entry.image is None:
            template = template.replace("<image>\n", "")
        return template.replace("<text>", text)

    def _token_ids(self, text: str) -> list[int]:
        """BOS + tokens (+ EOS), truncated to max_length like the original's tokenizer call."""
        tok = self._tokenizer
        body = tok(text, add_special_tokens=False)["input_ids"]
        tail = [tok.eos_token_id] if self._settings_cache["add_eos_token"] else []
        body = body[: max(self.max_length - 1 - len(tail), 0)]
        return [tok.bos_token_id, *body, *tail]

    def instruction_length(self, prompt: str) -> int:
        """Tokens to mask from pooling: the original tokenises the text before '\\nQuery: ' on its own
        (with BOS and, when add_eos_token is set, EOS) and masks that many leading positions."""
        if QUERY_PREFIX not in prompt:
            return 0
        return len(self._token_ids(prompt.split(QUERY_PREFIX)[0]))

    def prepare(self, inputs: Sequence[EmbedInput]) -> dict[str, Any]:
        """Token ids, pixel values and instruction lengths for a batch (no model call)."""
        import torch

        image_id = self._settings_cache["image_token_id"]
        ids, lengths, images = [], [], []
        for entry in inputs:
            prompt = self.prompt_for(entry)
            row = self._token_ids(prompt)
            expected = 1 if entry.image is not None else 0
            if row.count(image_id) != expected:
                raise MMEmbedError(f"prompt for MM-Embed holds {row.count(image_id)} image slots, expected {expected}")
            ids.append(row)
            lengths.append(self.instruction_length(prompt))
            if entry.image is not None:
                images.append(entry.open_image())
        pixel_values = None
        if images:
            processed = self._image_processor(images=images, return_tensors="pt")
            # tile 0 is the whole image resized to 336x336: MM-Embed uses only this global tile
            pixel_values = processed["pixel_values"][:, 0]
        return {"input_ids": ids, "pixel_values": pixel_values, "instruction_lengths": torch.tensor(lengths)}

    # -- forward ---------------------------------------------------------------------------------------------
    def forward_prepared(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor]:
        """Embeddings (b, 4096) and the pool mask used, for a batch from `prepare`."""
        import torch

        model = self._model
        settings = self._settings_cache
        lm = model.language_model
        weight_dtype = lm.embed_tokens.weight.dtype
        device = lm.embed_tokens.weight.device
        eos = self._tokenizer.eos_token_id
        image_id = settings["image_token_id"]
        image_feats = None
        if batch["pixel_values"] is not None:
            vision = model.vision_tower(
                batch["pixel_values"].to(device=device, dtype=weight_dtype), output_hidden_states=True
            )
            feats = vision.hidden_states[settings["vision_feature_layer"]]
            if settings["select_strategy"] == "default":
                feats = feats[:, 1:]  # drop CLS: 576 patch tokens
            feats = model.multi_modal_projector(feats)
            newline = model.image_newline.to(feats.dtype)[None, None, :].expand(feats.shape[0], 1, -1)
            image_feats = torch.cat([feats, newline], dim=1)
        rows, image_index = [], 0
        for row in batch["input_ids"]:
            ids = torch.tensor(row, device=device)
            lookup = ids.clone()
            lookup[ids == image_id] = 0
            lookup[ids >= settings["vocab_size"]] = eos  # <pad> and other added ids -> EOS row, as the original
            embeds = lm.embed_tokens(lookup)
            where = (ids == image_id).nonzero()
            if len(where):
                at = int(where[0])
                embeds = torch.cat([embeds[:at], image_feats[image_index].to(embeds.dtype), embeds[at + 1 :]])
                image_index += 1
            rows.append(embeds)
        longest = max(r.shape[0] for r in rows)
        pad = lm.embed_tokens(torch.tensor([eos], device=device))[0]
        embeds = torch.stack([torch.cat([r, pad.expand(longest - r.shape[0], -1)]) for r in rows])
        attention = torch.zeros(len(rows), longest, dtype=torch.long, device=device)
        for i, r in enumerate(rows):
            attention[i, : r.shape[0]] = 1
        hidden = bidirectional_forward(lm, embeds, attention)
        pool_mask = attention.clone()
        for i, length in enumerate(batch["instruction_lengths"].tolist()):
            pool_mask[i, :length] = 0
        return model.latent_attention_model(hidden, pool_mask), pool_mask

    def _encode_batch(self, inputs: Sequence[EmbedInput]) -> np.ndarray:
        import torch

        with torch.inference_mode():
            vectors, _ = self.forward_prepared(self.prepare(inputs))
        return vectors.float().cpu().numpy()

    def _cost(self, entry: EmbedInput) -> int:
        return (len(entry.text) // 4 if entry.text else 0) + (577 if entry.image is not None else 0)
