"""MM-Embed's native implementation against a tiny checkpoint with the published layout and weight names.

The fixture writes what nvidia/MM-Embed ships, shrunk: a llava_next config.json (with MM-Embed's extra
keys), one safetensors file whose tensor names are those transformers 4.42 wrote for the published one
(vision_tower.vision_model.*, multi_modal_projector.*, image_newline, language_model.* = NV-Embed's Mistral,
latent_attention_model.*), a tokenizer.json with <image>/<pad> beyond the embedding table, and a
LLaVA-Next preprocessor_config.json. It is loaded through EMBEDDERS like any user would.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from mmembed.embedders import EMBEDDERS  # noqa: E402
from mmembed.embedders._mllm_common import CheckpointMismatchError, EmbedInput  # noqa: E402
from mmembed.embedders.mm_embed import MMEmbedGPURequiredError, bidirectional_forward  # noqa: E402
from mmembed.types import Item, Modality, Query  # noqa: E402

WORDS = [
    *[
        "a",
        "red",
        "blue",
        "green",
        "cat",
        "dog",
        "photo",
        "of",
        "the",
        "on",
        "grass",
        "sky",
        "Instruct",
        "Query",
        "Retrieve",
        "retrieve",
        "an",
        "image",
    ],
    *["that", "matches", "given", "caption", "text", "passage", "describes", "find", "picture"],
]
HIDDEN = 32


def _tokenizer_files(folder: Path) -> int:
    """A WordLevel tokenizer.json: regular words, then <image> and <pad> beyond the embedding rows."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for word in [*WORDS, ":", "\n"]:
        vocab.setdefault(word, len(vocab))
    regular = len(vocab)
    vocab["<image>"] = regular
    vocab["<pad>"] = regular + 1
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(" ", "removed"),
            pre_tokenizers.Split("\n", "isolated"),
            pre_tokenizers.Split(":", "isolated"),
        ]
    )
    tok.add_special_tokens(["<unk>", "<s>", "</s>", "<image>", "<pad>"])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "LlamaTokenizer",  # as published; we load tokenizer.json verbatim regardless
                "bos_token": "<s>",
                "eos_token": "</s>",
                "unk_token": "<unk>",
                "pad_token": "<pad>",
                "model_max_length": 4096,
            }
        )
    )
    return regular


def _latent_tensors(gen: torch.Generator, dim: int, latents: int, heads: int, head_dim: int) -> dict:
    inner = heads * head_dim
    p = "latent_attention_model."
    shapes = {
        p + "latents": (latents, dim),
        p + "cross_attend_blocks.0.norm.weight": (dim,),
        p + "cross_attend_blocks.0.norm.bias": (dim,),
        p + "cross_attend_blocks.0.norm_context.weight": (dim,),
        p + "cross_attend_blocks.0.norm_context.bias": (dim,),
        p + "cross_attend_blocks.0.fn.to_q.weight": (inner, dim),
        p + "cross_attend_blocks.0.fn.to_kv.weight": (2 * inner, dim),
        p + "cross_attend_blocks.0.fn.to_out.weight": (dim, inner),
        p + "cross_attend_blocks.1.norm.weight": (dim,),
        p + "cross_attend_blocks.1.norm.bias": (dim,),
        p + "cross_attend_blocks.1.fn.net.0.weight": (dim * 8, dim),
        p + "cross_attend_blocks.1.fn.net.0.bias": (dim * 8,),
        p + "cross_attend_blocks.1.fn.net.2.weight": (dim, dim * 4),
        p + "cross_attend_blocks.1.fn.net.2.bias": (dim,),
    }
    return {
        k: torch.randn(s, generator=gen) * (0.3 if len(s) > 1 else 0.1) + (1.0 if "norm.weight" in k else 0.0)
        for k, s in shapes.items()
    }


def build_tiny_mm_embed(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import save_file
    from transformers import CLIPVisionConfig, CLIPVisionModel, LlavaNextConfig, MistralConfig, MistralModel
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    folder.mkdir(parents=True, exist_ok=True)
    regular = _tokenizer_files(folder)
    torch.manual_seed(0)
    vision_config = CLIPVisionConfig(
        hidden_size=16, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2, image_size=336, patch_size=14
    )
    text = {
        "hidden_size": HIDDEN,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": regular,
    }
    config = LlavaNextConfig(
        vision_config=vision_config.to_dict(),
        text_config=MistralConfig(**text).to_dict(),
        image_token_index=regular,
        image_grid_pinpoints=[[336, 672], [672, 336], [672, 672]],
    )
    config.save_pretrained(str(folder))
    raw = json.loads((folder / "config.json").read_text())
    raw.update(
        retriever="nvidia/NV-Embed-v1",
        padding_side="right",
        add_eos_token=True,
        global_image_patch_only=True,
        mmembed_retriever_config={
            "text_config": text,
            "latent_attention_config": {
                "num_latents_value": 8,
                "num_cross_heads": 2,
                "cross_dim_head": 16,
                "latent_dim": HIDDEN,
                "hidden_dim": HIDDEN,
            },
        },
    )
    (folder / "config.json").write_text(json.dumps(raw))
    LlavaNextImageProcessorPil(
        size={"shortest_edge": 336},
        crop_size={"height": 336, "width": 336},
        image_grid_pinpoints=[[336, 672], [672, 336], [672, 672]],
    ).save_pretrained(str(folder))

    gen = torch.Generator().manual_seed(1)
    tensors: dict[str, torch.Tensor] = {}
    for name, value in CLIPVisionModel(vision_config).state_dict().items():
        # transformers 4.42 (which wrote the published file) nested CLIP's layers in `vision_model`
        name = name if name.startswith("vision_model.") else "vision_model." + name
        tensors["vision_tower." + name] = value
    assert "vision_tower.vision_model.encoder.layers.1.mlp.fc1.weight" in tensors
    lm = MistralModel(MistralConfig(**text))
    for name, value in lm.state_dict().items():
        tensors["language_model." + name] = value
    tensors["multi_modal_projector.linear_1.weight"] = torch.randn(HIDDEN, 16, generator=gen) * 0.2
    tensors["multi_modal_projector.linear_1.bias"] = torch.randn(HIDDEN, generator=gen) * 0.1
    tensors["multi_modal_projector.linear_2.weight"] = torch.randn(HIDDEN, HIDDEN, generator=gen) * 0.2
    tensors["multi_modal_projector.linear_2.bias"] = torch.randn(HIDDEN, generator=gen) * 0.1
    tensors["image_newline"] = torch.randn(HIDDEN, generator=gen)
    tensors.update(_latent_tensors(gen, HIDDEN, latents=8, heads=2, head_dim=16))
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, str(folder / "model.safetensors"))
    return tensors


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-mm-embed")
    build_tiny_mm_embed(folder)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from PIL import Image

    folder = tmp_path_factory.mktemp("mm-embed-images")
    rng = np.random.default_rng(0)
    out = {}
    for name, size in (("noise", (300, 200)), ("tall", (120, 400))):
        path = folder / f"{name}.png"
        Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype("uint8")).save(path)
        out[name] = path
    return out


@pytest.fixture()
def embedder(tiny_dir: Path):
    EMBEDDERS.clear()
    emb = EMBEDDERS.get("mm-embed", model_id=str(tiny_dir), device="cpu", force_cpu=True, batch_size=4)
    yield emb
    EMBEDDERS.clear()


def test_refuses_cpu_without_force(tiny_dir: Path) -> None:
    EMBEDDERS.clear()
    with pytest.raises(MMEmbedGPURequiredError) as err:
        EMBEDDERS.get("mm-embed", model_id=str(tiny_dir), device="cpu")
    message = str(err.value)
    assert "needs a GPU" in message and "force_cpu=True" in message and "CC-BY-NC-4.0" in message


def test_shapes_norms_and_modalities(embedder, images) -> None:
    assert embedder.dim == HIDDEN  # known from config.json before any weight is loaded
    items = [
        Item("t", text="a red cat on grass"),
        Item("i", image=images["noise"]),
        Item("it", text="a red cat on grass", image=images["noise"]),
    ]
    vectors = embedder.embed_items(items)
    assert vectors.shape == (3, HIDDEN) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    # image+text is neither its text alone nor its image alone
    assert np.abs(vectors[2] - vectors[0]).max() > 1e-3
    assert np.abs(vectors[2] - vectors[1]).max() > 1e-3
    assert embedder.dim == HIDDEN
    assert "CC-BY-NC-4.0" in " ".join(embedder.describe_query(Query(text="cat")).notes)


def test_image_occupies_576_patches_plus_newline(embedder, images) -> None:
    embedder.ensure_loaded()
    batch = embedder.prepare([EmbedInput(None, images["tall"])])
    assert batch["pixel_values"].shape == (1, 3, 336, 336)  # the global tile only
    _, pool_mask = embedder.forward_prepared(batch)
    ids = batch["input_ids"][0]  # <s> <image> \n </s>
    assert pool_mask.shape[1] == len(ids) - 1 + 577


def test_prompts_follow_the_published_templates(embedder) -> None:
    query = EmbedInput("red cat", "x.png", instruction="find picture")
    assert embedder.prompt_for(query) == "Instruct: find picture\nQuery: <image>\nred cat"
    assert embedder.prompt_for(EmbedInput("red cat", None, "find picture")) == "Instruct: find picture\nQuery: red cat"
    assert embedder.prompt_for(EmbedInput("red cat", "x.png")) == "<image>\nred cat"
    assert embedder.prompt_for(EmbedInput("red <image> cat", None)) == "red  cat"


def test_instruction_tokens_are_excluded_from_pooling(embedder) -> None:
    embedder.ensure_loaded()
    tok = embedder._tokenizer
    entry = EmbedInput("red cat on grass", None, instruction="retrieve an image that matches the given caption")
    batch = embedder.prepare([entry])
    prefix_tokens = len(
        tok("Instruct: retrieve an image that matches the given caption", add_special_tokens=False)["input_ids"]
    )
    # BOS + prefix + EOS, as the original counts it (its tokenizer appends EOS to the prefix too)
    assert int(batch["instruction_lengths"][0]) == prefix_tokens + 2
    _, pool_mask = embedder.forward_prepared(batch)
    n = int(batch["instruction_lengths"][0])
    assert pool_mask[0, :n].sum() == 0
    assert pool_mask[0, n:].sum() == len(batch["input_ids"][0]) - n
    # candidates carry no instruction: nothing is masked
    cand = embedder.prepare([EmbedInput("red cat on grass", None)])
    assert int(cand["instruction_lengths"][0]) == 0


def test_instruction_changes_query_only_through_attention(embedder) -> None:
    embedder.ensure_loaded()
    a = EmbedInput("red cat on grass", None, instruction="retrieve an image that matches the given caption")
    b = EmbedInput("red cat on grass", None, instruction="find a passage that describes the given picture")
    batch_a, batch_b = embedder.prepare([a]), embedder.prepare([b])
    assert batch_a["instruction_lengths"].tolist() == batch_b["instruction_lengths"].tolist()
    full_a, mask_a = embedder.forward_prepared(batch_a)
    full_b, _ = embedder.forward_prepared(batch_b)
    assert (full_a - full_b).abs().max() > 1e-4  # different instructions -> different query vectors

    # Same forward, but the pooled tokens cannot attend to the instruction: then the instruction is invisible.
    model = embedder._model
    n = int(batch_a["instruction_lengths"][0])

    def pooled_without_attending_instruction(batch) -> torch.Tensor:
        ids = torch.tensor(batch["input_ids"][0])
        embeds = model.language_model.embed_tokens(ids)[None]
        attention = torch.ones(1, len(ids), dtype=torch.long)
        attention[0, :n] = 0
        hidden = bidirectional_forward(model.language_model, embeds, attention)
        return model.latent_attention_model(hidden, mask_a)

    with torch.no_grad():
        torch.testing.assert_close(
            pooled_without_attending_instruction(batch_a),
            pooled_without_attending_instruction(batch_b),
            atol=1e-6,
            rtol=1e-5,
        )
    # candidates never see an instruction: the table's wording cannot move them
    items = [Item("c", text="red cat on grass")]
    before = embedder.embed_items(items)
    embedder.embed_query(Query(text="red cat", instruction="something else entirely"))
    np.testing.assert_array_equal(before, embedder.embed_items(items))


def test_query_uses_instruction_table_and_override(embedder) -> None:
    q = Query(text="red cat", target=Modality.IMAGE)
    assert embedder.describe_query(q).instruction == "Retrieve an image that matches the given caption."
    override = Query(text="red cat", target=Modality.IMAGE, instruction="find picture")
    assert embedder.describe_query(override).instruction == "find picture"
    v1, v2 = embedder.embed_query(q), embedder.embed_query(override)
    assert v1.shape == (HIDDEN,) and abs(np.linalg.norm(v1) - 1) < 1e-5
    assert np.abs(v1 - v2).max() > 1e-4
    # the query vector is not the candidate vector of the same content (instruction + prefix)
    cand = embedder.embed_items([Item("x", text="red cat")])[0]
    assert np.abs(v1 - cand).max() > 1e-4


def test_batch_equals_one_by_one(embedder, images) -> None:
    items = [
        Item("1", text="a red cat on grass"),
        Item("2", image=images["noise"]),
        Item("3", text="blue sky", image=images["tall"]),
        Item("4", text="dog"),
        Item("5", text="a green dog photo of the sky on grass", image=images["noise"]),
    ]
    batched = embedder.embed_items(items)  # batch_size 4, sorted by length internally
    single = np.stack([embedder.embed_items([it])[0] for it in items])
    np.testing.assert_allclose(batched, single, atol=2e-5)


def test_progress_is_reported(embedder) -> None:
    calls = []
    embedder.embed_items(
        [Item(str(i), text="cat " * (i + 1)) for i in range(6)], progress=lambda d, t, desc: calls.append((d, t))
    )
    assert calls[0] == (0, 6) and calls[-1] == (6, 6)


def test_loader_fails_loudly_on_missing_or_extra_weights(tiny_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(tiny_dir / "model.safetensors"))
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        (tmp_path / name).write_bytes((tiny_dir / name).read_bytes())

    missing = dict(tensors)
    del missing["latent_attention_model.latents"]
    save_file(missing, str(tmp_path / "model.safetensors"))
    EMBEDDERS.clear()
    emb = EMBEDDERS.get("mm-embed", model_id=str(tmp_path), device="cpu", force_cpu=True)
    with pytest.raises(CheckpointMismatchError, match="latent_attention_model.latents"):
        emb.embed_items([Item("a", text="cat")])

    extra = dict(tensors)
    extra["language_model.lm_head.weight"] = torch.zeros(2, 2)
    save_file(extra, str(tmp_path / "model.safetensors"))
    EMBEDDERS.clear()
    emb = EMBEDDERS.get("mm-embed", model_id=str(tmp_path), device="cpu", force_cpu=True)
    with pytest.raises(CheckpointMismatchError, match="no place for.*lm_head"):
        emb.embed_items([Item("a", text="cat")])
    EMBEDDERS.clear()


def test_every_checkpoint_weight_is_used(embedder, tiny_dir: Path) -> None:
    from safetensors.torch import load_file

    from mmembed.embedders.mm_embed import checkpoint_renamer

    embedder.ensure_loaded()
    state = embedder._model.state_dict()
    rename = checkpoint_renamer(embedder._model)
    checkpoint = load_file(str(tiny_dir / "model.safetensors"))
    for name, value in checkpoint.items():
        torch.testing.assert_close(state[rename(name)], value)
    assert set(state) == {rename(name) for name in checkpoint}  # one to one: nothing unfilled, nothing left over


def test_half_precision_path_agrees_with_float32(tiny_dir: Path, images) -> None:
    """GPUs run MM-Embed in bf16: the same code path in bf16 must give nearly the same vectors."""
    items = [Item("a", text="a red cat on grass"), Item("b", text="blue sky", image=images["noise"])]
    EMBEDDERS.clear()
    full = EMBEDDERS.get("mm-embed", model_id=str(tiny_dir), device="cpu", force_cpu=True).embed_items(items)
    half = EMBEDDERS.get("mm-embed", model_id=str(tiny_dir), device="cpu", force_cpu=True, dtype="bfloat16")
    vectors = half.embed_items(items)
    assert half._model.language_model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert (full * vectors).sum(axis=1).min() > 0.98
    EMBEDDERS.clear()


def test_published_architecture_on_the_meta_device() -> None:
    """The full-size tree (no memory used): NV-Embed-v1 widths, 576 patch tokens per 336px tile, 4096-d output,
    and weight names as nvidia/MM-Embed's safetensors spell them."""
    from transformers import CLIPVisionConfig, LlavaNextConfig

    from mmembed.embedders.mm_embed import (
        NVEMBED_V1_LATENT_CONFIG,
        NVEMBED_V1_TEXT_CONFIG,
        checkpoint_renamer,
        construct_mm_embed,
    )

    vision = CLIPVisionConfig(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                              image_size=336, patch_size=14)  # CLIP ViT-L/14-336, LLaVA-v1.6's tower
    config = LlavaNextConfig(vision_config=vision.to_dict())
    model, text_config = construct_mm_embed(config, dict(NVEMBED_V1_TEXT_CONFIG), dict(NVEMBED_V1_LATENT_CONFIG),
                                            "meta", torch.float32)
    assert (text_config.hidden_size, text_config.num_hidden_layers, text_config.sliding_window) == (4096, 32, None)
    shapes = {name: tuple(value.shape) for name, value in model.state_dict().items()}
    assert shapes["language_model.embed_tokens.weight"] == (32000, 4096)
    assert shapes["language_model.layers.31.self_attn.k_proj.weight"] == (1024, 4096)  # 8 KV heads of 128
    assert "language_model.layers.32.mlp.up_proj.weight" not in shapes
    assert shapes["language_model.layers.0.mlp.up_proj.weight"] == (14336, 4096)
    rename = checkpoint_renamer(model)  # the published (transformers 4.42) names map onto this tree
    assert shapes[rename("vision_tower.vision_model.encoder.layers.23.mlp.fc1.weight")] == (4096, 1024)
    assert shapes[rename("vision_tower.vision_model.post_layernorm.weight")] == (1024,)
    assert shapes["multi_modal_projector.linear_1.weight"] == (4096, 1024)
    assert shapes["image_newline"] == (4096,)
    assert shapes["latent_attention_model.latents"] == (512, 4096)
    assert shapes["latent_attention_model.cross_attend_blocks.0.fn.to_kv.weight"] == (2 * 8 * 4096, 4096)
    assert not any("lm_head" in name for name in shapes)  # NV-Embed has no language-model head
    assert all(not layer.self_attn.is_causal for layer in model.language_model.layers)
    with torch.no_grad():
        out = model.vision_tower(torch.empty(1, 3, 336, 336, device="meta"), output_hidden_states=True)
        patches = out.hidden_states[config.vision_feature_layer][:, 1:]
        assert patches.shape[1] == 576
        pooled = model.latent_attention_model(torch.empty(2, 7, 4096, device="meta"),
                                              torch.ones(2, 7, device="meta"))
    assert tuple(pooled.shape) == (2, 4096)
    assert EMBEDDERS.info("mm-embed").license == "CC-BY-NC-4.0"
