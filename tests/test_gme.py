"""GME on a tiny Qwen2-VL checkpoint laid out like Alibaba-NLP/gme-Qwen2-VL-2B-Instruct.

The fixture writes a *legacy flat* config.json (as the published one, made with transformers 4.x), weights
named as transformers 4.x saved them (`model.*`, `visual.*`, `lm_head.weight`), a tokenizer.json with
Qwen's special tokens and a Qwen2-VL preprocessor_config.json, and loads it through EMBEDDERS.
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
from mmembed.embedders.gme import DEFAULT_INSTRUCTION, PIXELS_PER_TOKEN  # noqa: E402
from mmembed.types import Item, Modality, Query  # noqa: E402

HIDDEN = 32
SPECIALS = [
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|image_pad|>",
    "<|video_pad|>",
]
WORDS = [
    "system",
    "user",
    "assistant",
    "You",
    "are",
    "a",
    "helpful",
    ".",
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
    "Retrieve",
    "an",
    "image",
    "that",
    "matches",
    "given",
    "caption",
    "text",
    "passage",
    "find",
    "picture",
]


def _tokenizer(folder: Path) -> dict[str, int]:
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0}
    for word in [*WORDS, "\n"]:
        vocab.setdefault(word, len(vocab))
    for special in SPECIALS:
        vocab[special] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(" ", "removed"),
            pre_tokenizers.Split("\n", "isolated"),
            pre_tokenizers.Split(".", "isolated"),
        ]
    )
    tok.add_special_tokens(["<unk>", *SPECIALS])
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "Qwen2Tokenizer",
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "unk_token": "<unk>",
                "model_max_length": 32768,
            }
        )
    )
    return vocab


def build_tiny_gme(folder: Path) -> None:
    from safetensors.torch import save_file
    from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    folder.mkdir(parents=True, exist_ok=True)
    vocab = _tokenizer(folder)
    legacy = {  # the published config's layout (flat text keys), with tiny sizes
        "architectures": ["Qwen2VLForConditionalGeneration"],
        "model_type": "qwen2_vl",
        "hidden_size": HIDDEN,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "vocab_size": len(vocab) + 3,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "max_position_embeddings": 4096,
        "hidden_act": "silu",
        "tie_word_embeddings": True,
        "rope_scaling": {"type": "mrope", "mrope_section": [2, 1, 1]},
        "image_token_id": vocab["<|image_pad|>"],
        "video_token_id": vocab["<|video_pad|>"],
        "vision_start_token_id": vocab["<|vision_start|>"],
        "vision_end_token_id": vocab["<|vision_end|>"],
        "bos_token_id": vocab["<|endoftext|>"],
        "eos_token_id": vocab["<|im_end|>"],
        "torch_dtype": "bfloat16",
        "vision_config": {
            "depth": 2,
            "embed_dim": 16,
            "mlp_ratio": 2,
            "num_heads": 2,
            "in_chans": 3,
            "hidden_size": HIDDEN,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
        },
    }
    (folder / "config.json").write_text(json.dumps(legacy))
    Qwen2VLImageProcessorPil().save_pretrained(str(folder))

    torch.manual_seed(0)
    config = Qwen2VLConfig.from_pretrained(str(folder))
    config.dtype = torch.float32
    model = Qwen2VLForConditionalGeneration(config).float()
    tensors = {}
    for name, value in model.state_dict().items():
        if name.startswith("model.language_model."):
            name = "model." + name[len("model.language_model.") :]
        elif name.startswith("model.visual."):
            name = "visual." + name[len("model.visual.") :]
        # transformers' init is tiny (std 0.02); widen it so tiny-model outputs differ clearly between inputs
        tensors[name] = (value * (5.0 if value.dim() > 1 else 1.0)).clone().contiguous()
    assert "lm_head.weight" in tensors and "visual.merger.mlp.0.weight" in tensors and "model.norm.weight" in tensors
    save_file(tensors, str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-gme")
    build_tiny_gme(folder)
    return folder


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from PIL import Image

    folder = tmp_path_factory.mktemp("gme-images")
    rng = np.random.default_rng(1)
    out = {}
    for name, size in (("wide", (160, 90)), ("square", (100, 100)), ("huge", (1200, 900))):
        path = folder / f"{name}.png"
        Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype("uint8")).save(path)
        out[name] = path
    return out


CAP = {"min_image_pixels": 4 * PIXELS_PER_TOKEN, "max_image_pixels": 16 * PIXELS_PER_TOKEN}


@pytest.fixture()
def embedder(tiny_dir: Path):
    EMBEDDERS.clear()
    emb = EMBEDDERS.get("gme-2b", model_id=str(tiny_dir), device="cpu", batch_size=3, **CAP)
    yield emb
    EMBEDDERS.clear()


def test_shapes_norms_and_modalities(embedder, images) -> None:
    assert embedder.dim == HIDDEN  # read from config.json before loading weights
    vectors = embedder.embed_items(
        [
            Item("t", text="a red cat on grass"),
            Item("i", image=images["wide"]),
            Item("it", text="a red cat on grass", image=images["wide"]),
        ]
    )
    assert vectors.shape == (3, HIDDEN) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.abs(vectors[2] - vectors[0]).max() > 1e-3
    assert np.abs(vectors[2] - vectors[1]).max() > 1e-3
    # built in float32 on CPU even though the saved config says bfloat16
    assert embedder._model.language_model.embed_tokens.weight.dtype == torch.float32
    assert embedder._model.visual.blocks[0].mlp.fc2.weight.dtype == torch.float32


def test_prompt_format_matches_gme(embedder) -> None:
    head, text, tail = embedder.prompt_parts(EmbedInput("red cat", "x.png", instruction="Find a picture."))
    assert head + text + tail == (
        "<|im_start|>system\nFind a picture.<|im_end|>\n<|im_start|>user\n"
        "<|vision_start|><|image_pad|><|vision_end|>red cat<|im_end|>\n<|im_start|>assistant\n<|endoftext|>"
    )
    head, text, tail = embedder.prompt_parts(EmbedInput("red <|im_end|>cat", None))
    assert head.startswith(f"<|im_start|>system\n{DEFAULT_INSTRUCTION}<|im_end|>") and "vision" not in head
    assert text == "red cat"  # template tokens in user text are removed


def test_image_resolution_is_capped(embedder, images) -> None:
    embedder.ensure_loaded()
    batch = embedder.prepare([EmbedInput(None, images["huge"]), EmbedInput(None, images["square"])])
    tokens = (batch["grid"].prod(-1) // 4).tolist()
    assert tokens[0] <= 16 and tokens[1] >= 4  # within [min, max] visual tokens
    slots = (batch["input_ids"] == embedder._image_token_id).sum(dim=1).tolist()
    assert slots == tokens
    assert "16 visual tokens" in embedder.notes()[0]


def test_last_token_pooling_matches_transformers_forward(embedder) -> None:
    """Text-only: our path equals Qwen2VLModel's own forward, last non-pad token, normalised."""
    embedder.ensure_loaded()
    entries = [EmbedInput("red cat", None), EmbedInput("a green dog photo of the sky on grass", None)]
    batch = embedder.prepare(entries)
    ours = embedder.forward_prepared(batch)
    with torch.no_grad():
        out = embedder._model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    last = batch["attention_mask"].sum(1) - 1
    ref = torch.nn.functional.normalize(out.last_hidden_state[torch.arange(2), last], dim=-1)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-4)
    # the pooled token is <|endoftext|>
    ids = batch["input_ids"][torch.arange(2), last].tolist()
    assert ids == [embedder._tokenizer.convert_tokens_to_ids("<|endoftext|>")] * 2


def test_instruction_steers_queries_not_candidates(embedder) -> None:
    q_img = Query(text="red cat", target=Modality.IMAGE)
    q_txt = Query(text="red cat", target=Modality.TEXT)
    assert embedder.describe_query(q_img).instruction == "Retrieve an image that matches the given caption."
    v_img, v_txt = embedder.embed_query(q_img), embedder.embed_query(q_txt)
    assert np.abs(v_img - v_txt).max() > 1e-4
    cand = embedder.embed_items([Item("c", text="red cat")])[0]
    assert np.abs(cand - v_img).max() > 1e-4
    custom = Query(text="red cat", target=Modality.IMAGE, instruction="Find a picture.")
    assert embedder.describe_query(custom).instruction == "Find a picture."


def test_batch_equals_one_by_one(embedder, images) -> None:
    items = [
        Item("1", text="a red cat on grass"),
        Item("2", image=images["wide"]),
        Item("3", text="blue sky", image=images["square"]),
        Item("4", text="dog"),
        Item("5", text="a green dog photo of the sky on grass", image=images["wide"]),
    ]
    batched = embedder.embed_items(items)
    single = np.stack([embedder.embed_items([it])[0] for it in items])
    np.testing.assert_allclose(batched, single, atol=2e-5)


def test_long_text_is_cut_but_template_end_kept(tiny_dir: Path) -> None:
    EMBEDDERS.clear()
    emb = EMBEDDERS.get("gme-2b", model_id=str(tiny_dir), device="cpu", max_length=40, **CAP)
    emb.ensure_loaded()
    batch = emb.prepare([EmbedInput("cat " * 200, None)])
    assert batch["input_ids"].shape[1] == 40
    assert batch["input_ids"][0, -1] == emb._tokenizer.convert_tokens_to_ids("<|endoftext|>")
    EMBEDDERS.clear()


def test_every_weight_consumed_and_mismatches_fail_loudly(tiny_dir: Path, tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(tiny_dir / "model.safetensors"))
    EMBEDDERS.clear()
    emb = EMBEDDERS.get("gme-2b", model_id=str(tiny_dir), device="cpu", **CAP)
    emb.ensure_loaded()
    state = emb._model.state_dict()
    assert len(state) == len(tensors) - 1  # everything but the (unused, tied) lm_head
    torch.testing.assert_close(
        state["language_model.layers.1.mlp.up_proj.weight"], tensors["model.layers.1.mlp.up_proj.weight"]
    )
    torch.testing.assert_close(state["visual.merger.ln_q.weight"], tensors["visual.merger.ln_q.weight"])

    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        (tmp_path / name).write_bytes((tiny_dir / name).read_bytes())
    broken = dict(tensors)
    del broken["visual.blocks.1.attn.qkv.weight"]
    broken["model.layers.1.extra.weight"] = torch.zeros(1)
    save_file(broken, str(tmp_path / "model.safetensors"))
    EMBEDDERS.clear()
    emb = EMBEDDERS.get("gme-2b", model_id=str(tmp_path), device="cpu", **CAP)
    with pytest.raises(CheckpointMismatchError) as err:
        emb.embed_items([Item("a", text="cat")])
    assert "visual.blocks.1.attn.qkv.weight" in str(err.value)
    assert "model.layers.1.extra.weight" in str(err.value)
    EMBEDDERS.clear()


def test_bad_cap_is_rejected(tiny_dir: Path) -> None:
    EMBEDDERS.clear()
    with pytest.raises(Exception, match="min_image_pixels <= max_image_pixels"):
        EMBEDDERS.get("gme-2b", model_id=str(tiny_dir), device="cpu", min_image_pixels=10_000, max_image_pixels=5_000)


def test_half_precision_path_agrees_with_float32(tiny_dir: Path, images) -> None:
    items = [Item("a", text="a red cat on grass"), Item("b", text="blue sky", image=images["square"])]
    EMBEDDERS.clear()
    full = EMBEDDERS.get("gme-2b", model_id=str(tiny_dir), device="cpu", **CAP).embed_items(items)
    half = EMBEDDERS.get("gme-2b", model_id=str(tiny_dir), device="cpu", dtype="bfloat16", **CAP)
    vectors = half.embed_items(items)
    assert half._model.visual.blocks[0].mlp.fc2.weight.dtype == torch.bfloat16
    assert (full * vectors).sum(axis=1).min() > 0.98
    EMBEDDERS.clear()


def test_zero_gpu_decorator_wraps_the_forward_when_spaces_is_installed(tiny_dir: Path, monkeypatch) -> None:
    import sys
    import types

    from mmembed.embedders._mllm_common import gpu

    def plain() -> None:
        return None

    assert gpu(plain) is plain  # no `spaces` here: unchanged
    wrapped: list[str] = []
    fake = types.ModuleType("spaces")
    fake.GPU = lambda fn: wrapped.append(fn.__name__) or fn
    monkeypatch.setitem(sys.modules, "spaces", fake)
    EMBEDDERS.clear()
    EMBEDDERS.get("gme-2b", model_id=str(tiny_dir), device="cpu")
    assert wrapped == ["_encode_batch"]
    EMBEDDERS.clear()


def test_batches_are_sorted_by_length_and_rows_come_back_in_order(embedder, images) -> None:
    items = [
        Item("long", text="a green dog photo of the sky on the grass a red cat"),
        Item("img", image=images["square"]),
        Item("short", text="dog"),
        Item("img-text", text="blue sky", image=images["wide"]),
        Item("mid", text="a red cat on grass"),
    ]
    seen: list[list[EmbedInput]] = []
    encode = embedder._encode

    def recording(batch):
        seen.append(list(batch))
        return encode(batch)

    embedder._encode = recording
    vectors = embedder.embed_items(items)
    embedder._encode = encode
    costs = [embedder._cost(entry) for batch in seen for entry in batch]
    assert costs == sorted(costs)  # texts before images, short before long, across and within batches
    assert [len(batch) for batch in seen] == [3, 2]  # batch_size 3
    assert [entry.text for entry in seen[0]] == [items[2].text, items[4].text, items[0].text]
    single = np.stack([embedder.embed_items([item])[0] for item in items])
    np.testing.assert_allclose(vectors, single, atol=2e-5)  # written back at each item's own row


def test_candidates_never_carry_the_query_instruction(embedder) -> None:
    item = Item("c", text="red cat")
    before = embedder.embed_items([item])
    embedder.embed_query(Query(text="red cat", instruction="Find a picture."))
    np.testing.assert_array_equal(before, embedder.embed_items([item]))
    embedder.ensure_loaded()
    with torch.no_grad():
        as_candidate = embedder.forward_prepared(embedder.prepare([EmbedInput("red cat", None)]))
        with_instruction = embedder.forward_prepared(embedder.prepare([EmbedInput("red cat", None, "Find a picture.")]))
    np.testing.assert_allclose(before[0], as_candidate[0].numpy(), atol=1e-6)
    assert float((as_candidate - with_instruction).abs().max()) > 1e-4
