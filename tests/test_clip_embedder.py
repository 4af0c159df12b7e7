"""The CLIP-family embedder, on tiny CLIP and SigLIP models built here and loaded like real checkpoints (on the CPU,
in float32, so the tolerances hold on GPU machines too).

The models are real transformers classes with random weights (2 layers, width 32, 32 px images),
saved with save_pretrained to a temp dir and loaded back through `EMBEDDERS.get(name, model_id=dir)`,
the same path a user's hub checkpoint takes. The SigLIP tokenizer is a sentencepiece model trained
here on a few sentences (SiglipTokenizer needs `sentencepiece` and `protobuf`); the SigLIP 2 one is
a byte-fallback BPE (Siglip2Tokenizer, on `tokenizers`) with the NaFlex Siglip2Model, and the fixed-resolution
SigLIP 2 layout (SiglipModel + a Gemma tokenizer, like google/siglip2-base-patch16-224) is built too.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from mmembed.embedders import EMBEDDERS
from mmembed.hub import WeightsNotAvailableError
from mmembed.images import ImageLoadError
from mmembed.types import Item, MMEmbedError, Modality, Query

CLIP_CONTEXT = 77
SIGLIP_CONTEXT = 16
TINY_TOWER = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2)


def _byte_alphabet() -> list[str]:
    """GPT-2/CLIP byte-level alphabet: one printable character per byte value."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes, extra = list(printable), 0
    for byte in range(256):
        if byte not in printable:
            codes.append(256 + extra)
            extra += 1
    return [chr(code) for code in codes]


def _build_clip(root: Path) -> Path:
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor, CLIPTokenizer

    chars = _byte_alphabet()
    vocab: dict[str, int] = {}
    for token in [*chars, *(c + "</w>" for c in chars)]:
        vocab[token] = len(vocab)
    merges = ["t h", "th e</w>", "c a", "ca t</w>"]
    for merge in merges:
        vocab["".join(merge.split())] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = CLIPTokenizer(vocab=str(root / "vocab.json"), merges=str(root / "merges.txt"))
    text = dict(
        TINY_TOWER,
        vocab_size=len(vocab),
        max_position_embeddings=CLIP_CONTEXT,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    vision = dict(TINY_TOWER, image_size=32, patch_size=8)
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=24)
    images = CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})
    out = root / "tiny-clip"
    CLIPModel(config).save_pretrained(out)
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(out)
    return out


def _build_siglip(root: Path) -> Path:
    import sentencepiece as spm
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor, SiglipTokenizer

    sentences = ["a photo of a cat", "a red apple on a table", "the dog runs in the park", "boats on the sea"]
    (root / "sp.txt").write_text("\n".join(sentences * 20))
    spm.SentencePieceTrainer.train(
        input=str(root / "sp.txt"), model_prefix=str(root / "spiece"), vocab_size=40, model_type="unigram",
        hard_vocab_limit=False, pad_id=0, eos_id=1, unk_id=2, bos_id=-1, minloglevel=2,
    )
    tokenizer = SiglipTokenizer(vocab_file=str(root / "spiece.model"))
    text = dict(
        TINY_TOWER,
        vocab_size=tokenizer.vocab_size,
        max_position_embeddings=SIGLIP_CONTEXT,
        bos_token_id=None,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    config = SiglipConfig(text_config=text, vision_config=dict(TINY_TOWER, image_size=32, patch_size=8))
    out = root / "tiny-siglip"
    SiglipModel(config).save_pretrained(out)
    SiglipProcessor(image_processor=SiglipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
                    ).save_pretrained(out)
    return out


def _build_siglip2(root: Path) -> Path:
    """SigLIP 2 NaFlex (Siglip2Model): images as variable patch grids with a patch mask, Gemma-style BPE text."""
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model, Siglip2Processor
    from transformers.models.siglip2.tokenization_siglip2 import Siglip2Tokenizer

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for byte in range(256):  # byte fallback covers any text
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for word in ["▁a", "▁photo", "▁of", "▁cat", "▁red", "▁apple", "▁"]:
        vocab[word] = len(vocab)
    tokenizer = Siglip2Tokenizer(vocab=vocab, merges=[])
    text = dict(TINY_TOWER, vocab_size=len(vocab), max_position_embeddings=SIGLIP_CONTEXT, bos_token_id=2,
                eos_token_id=1, pad_token_id=0)
    config = Siglip2Config(text_config=text, vision_config=dict(TINY_TOWER, patch_size=8, num_patches=16))
    out = root / "tiny-siglip2"
    Siglip2Model(config).save_pretrained(out)
    Siglip2Processor(image_processor=Siglip2ImageProcessor(patch_size=8, max_num_patches=16), tokenizer=tokenizer
                     ).save_pretrained(out)
    return out


def _build_siglip2_fixed_resolution(root: Path) -> Path:
    """Like google/siglip2-base-patch16-224: a SiglipModel whose tokenizer is a Gemma one (no lower-casing)."""
    from transformers import GemmaTokenizer, SiglipConfig, SiglipImageProcessor, SiglipModel, SiglipProcessor

    vocab = {"<pad>": 0, "<eos>": 1, "<bos>": 2, "<unk>": 3, "<mask>": 4}
    for byte in range(256):
        vocab[f"<0x{byte:02X}>"] = len(vocab)
    for word in ["▁a", "▁red", "▁apple", "▁A", "▁Red", "▁APPLE", "▁"]:
        vocab[word] = len(vocab)
    tokenizer = GemmaTokenizer(vocab=vocab, merges=[])
    assert tokenizer("A Red")["input_ids"] != tokenizer("a red")["input_ids"]  # it does not lower-case itself
    text = dict(TINY_TOWER, vocab_size=len(vocab), max_position_embeddings=SIGLIP_CONTEXT, bos_token_id=2,
                eos_token_id=1, pad_token_id=0)
    config = SiglipConfig(text_config=text, vision_config=dict(TINY_TOWER, image_size=32, patch_size=8))
    out = root / "tiny-siglip2-fixres"
    SiglipModel(config).save_pretrained(out)
    SiglipProcessor(image_processor=SiglipImageProcessor(size={"height": 32, "width": 32}), tokenizer=tokenizer
                    ).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {
        "clip-b32": _build_clip(root),
        "siglip-b16": _build_siglip(root),
        "siglip2-b16": _build_siglip2_fixed_resolution(root),
        "siglip2-naflex": _build_siglip2(root),
    }


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i, size in enumerate([(40, 30), (64, 64), (20, 50)]):
        path = root / f"img{i}.png"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture(autouse=True)
def _fresh_registry():
    EMBEDDERS.clear()
    yield
    EMBEDDERS.clear()


@pytest.fixture(scope="module", params=["clip-b32", "siglip-b16", "siglip2-b16", "siglip2-naflex"])
def embedder(request: pytest.FixtureRequest, models: dict[str, Path]):
    """One loaded embedder per model for the read-only tests (tests of loading itself build their own)."""
    backend = "siglip2-b16" if request.param == "siglip2-naflex" else request.param
    return EMBEDDERS.get(backend, model_id=str(models[request.param]), batch_size=2, device="cpu")


def _items(images: list[Path]) -> list[Item]:
    return [
        Item("t1", text="the cat sat on the mat"),
        Item("i1", image=images[0]),
        Item("it1", text="a red apple", image=images[1]),
        Item("t2", text="boats on the sea"),
        Item("i2", image=images[2]),
    ]


def test_embeddings_are_unit_float32_rows_of_the_model_dim(embedder, images):
    vectors = embedder.embed_items(_items(images))
    expected_dim = 24 if embedder.name == "clip-b32" else 32  # CLIP: projection_dim; SigLIP: text hidden size
    assert embedder.dim == expected_dim
    assert vectors.shape == (5, expected_dim)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert np.linalg.matrix_rank(vectors) == 5  # five different inputs, five different vectors


def test_image_text_item_is_clip_sf_fusion_of_its_parts(embedder, images):
    fused, text_only, image_only = embedder.embed_items(
        [Item("it", text="a red apple", image=images[1]), Item("t", text="a red apple"), Item("i", image=images[1])]
    )
    expected = text_only + image_only
    np.testing.assert_allclose(fused, expected / np.linalg.norm(expected), atol=1e-5)
    # and a fused query is the same vector as the fused item
    np.testing.assert_allclose(embedder.embed_query(Query(text="a red apple", image=images[1])), fused, atol=1e-5)


def test_batched_equals_one_by_one(embedder, images):
    items = _items(images)
    batched = embedder.embed_items(items)  # batch_size=2: batches of mixed modalities and text lengths
    single = np.stack([embedder.embed_items([item])[0] for item in items])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_progress_reports_each_batch(embedder, images):
    calls: list[tuple[int, int]] = []
    embedder.embed_items(_items(images), progress=lambda done, total, desc: calls.append((done, total)))
    assert calls == [(0, 5), (2, 5), (4, 5), (5, 5)]


def test_long_text_is_truncated_with_a_note_not_an_error(embedder):
    context = CLIP_CONTEXT if embedder.name == "clip-b32" else SIGLIP_CONTEXT
    long_text = " ".join(["apple"] * 300)
    query = Query(text=long_text)
    info = embedder.describe_query(query)
    assert info.instruction is None
    assert len(info.notes) == 1 and info.notes[0].startswith(f"text truncated to {context} tokens")
    vector = embedder.embed_query(query)
    assert vector.shape == (embedder.dim,) and np.isfinite(vector).all()
    # What the model reads is the first `context` tokens: more text past the cut changes nothing.
    np.testing.assert_allclose(vector, embedder.embed_query(Query(text=long_text + " cat dog sea")), atol=1e-5)
    assert embedder.describe_query(Query(text="a red apple")).notes == ()


def test_siglip_family_reads_text_in_lower_case_as_trained(models):
    embedder = EMBEDDERS.get("siglip2-b16", model_id=str(models["siglip2-b16"]), device="cpu")
    np.testing.assert_allclose(
        embedder.embed_query(Query(text="A Red APPLE")), embedder.embed_query(Query(text="a red apple")), atol=1e-6
    )
    clip = EMBEDDERS.get("clip-b32", model_id=str(models["clip-b32"]), device="cpu")
    assert clip._prepare_text("A Red") == "A Red"  # CLIP's own tokenizer handles case; we leave it alone


def test_clip_models_ignore_instructions_and_targets(embedder):
    plain = embedder.embed_query(Query(text="a red apple"))
    steered = Query(text="a red apple", target=Modality.IMAGE, instruction="Find an image of this.")
    np.testing.assert_allclose(embedder.embed_query(steered), plain, atol=1e-6)
    info = embedder.describe_query(steered)
    assert info.instruction is None
    assert any("instruction was ignored" in note for note in info.notes)


def test_pil_image_query_equals_path_query(embedder, images):
    from PIL import Image

    with Image.open(images[0]) as opened:
        pil = opened.copy()
    np.testing.assert_allclose(
        embedder.embed_query(Query(image=pil)), embedder.embed_query(Query(image=images[0])), atol=1e-6
    )


def test_model_loads_once_even_from_many_threads(models, images, monkeypatch):
    import transformers

    calls: list[str] = []
    original = transformers.AutoModel.from_pretrained.__func__

    def counting(cls, *args, **kwargs):
        calls.append(str(args[0]))
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", classmethod(counting))
    embedder = EMBEDDERS.get("clip-b32", model_id=str(models["clip-b32"]), device="cpu")
    assert calls == []  # creating the backend loads nothing
    results: list[np.ndarray] = []
    def work() -> None:
        results.append(embedder.embed_query(Query(text="cat")))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    embedder.embed_items([Item("x", image=images[0])])
    assert calls == [str(models["clip-b32"])]
    assert len(results) == 4 and all(np.allclose(r, results[0], atol=1e-6) for r in results)
    assert EMBEDDERS.get("clip-b32", model_id=str(models["clip-b32"]), device="cpu") is embedder


def test_fingerprint_names_model_revision_and_dim(models):
    embedder = EMBEDDERS.get("clip-b32", model_id=str(models["clip-b32"]), device="cpu")
    fingerprint = embedder.fingerprint
    assert fingerprint.startswith(f"{models['clip-b32']}@local-")
    assert "|clip|dim=24|ctx=77|" in fingerprint
    # a local folder is identified by its content, whatever revision label comes with it
    pinned = EMBEDDERS.get("clip-b32", model_id=str(models["clip-b32"]), revision="abc123", device="cpu")
    assert pinned.fingerprint == fingerprint


def test_retrained_local_model_rebuilds_the_index(models, tmp_path):
    """Issue 10: retraining into the same folder must not reuse the old model's index."""
    import shutil

    import torch
    from retrieval_helpers import write_corpus
    from transformers import CLIPModel

    from mmembed.corpus import load_mbeir_jsonl
    from mmembed.retriever import Retriever

    folder = tmp_path / "my-clip"
    shutil.copytree(models["clip-b32"], folder)
    corpus = load_mbeir_jsonl(write_corpus(tmp_path / "corpus"))
    cache = tmp_path / "cache"

    def index_folders() -> list[Path]:
        return sorted((cache / "indexes").glob("*/*"))

    def search() -> dict[str, float]:
        EMBEDDERS.clear()  # a new process: nothing loaded yet
        embedder = EMBEDDERS.get("clip-b32", model_id=str(folder), device="cpu")
        retriever = Retriever(corpus, embedder, cache_dir=cache)
        return {hit.item.id: hit.score for hit in retriever.search(Query(text="the cat"), k=len(corpus)).hits}

    before = search()
    assert len(index_folders()) == 1
    assert search() == before and len(index_folders()) == 1  # same weights: the cached index is reused
    model = CLIPModel.from_pretrained(str(folder))
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(torch.randn_like(parameter) * 0.5)
    model.save_pretrained(str(folder))  # "retrained": same folder, same config, new weights
    after = search()
    assert len(index_folders()) == 2  # a new fingerprint, so a new index
    fresh = EMBEDDERS.get("clip-b32", model_id=str(folder), device="cpu")
    vectors = fresh.embed_items(list(corpus))
    expected = vectors @ fresh.embed_query(Query(text="the cat"))  # the index holds the new model's vectors
    np.testing.assert_allclose([after[item.id] for item in corpus], expected, atol=1e-4)
    assert not np.allclose([before[item.id] for item in corpus], expected, atol=1e-3)


def test_offline_and_not_cached_names_the_prefetch_command():
    embedder = EMBEDDERS.get("clip-b32", model_id="mmembed-tests/no-such-model")  # creating is lazy: no error
    with pytest.raises(WeightsNotAvailableError) as caught:
        embedder.embed_query(Query(text="a cat"))
    message = str(caught.value)
    assert "mmembed-tests/no-such-model" in message
    assert "python -m mmembed prefetch --embedder clip-b32" in message


def test_unreadable_item_image_names_the_item(models, tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    embedder = EMBEDDERS.get("clip-b32", model_id=str(models["clip-b32"]), device="cpu")
    with pytest.raises(ImageLoadError, match="item 'pic-7': broken.png"):
        embedder.embed_items([Item("ok", text="fine"), Item("pic-7", image=bad)])


def test_empty_item_list_gives_an_empty_matrix(models):
    embedder = EMBEDDERS.get("clip-b32", model_id=str(models["clip-b32"]), device="cpu")
    assert embedder.embed_items([]).shape == (0, 24)


def test_hub_id_resolves_from_the_offline_hf_cache_with_its_commit(models):
    """The user's path: a hub id, HF_HUB_OFFLINE=1, files prefetched earlier into the HF cache."""
    import shutil

    from huggingface_hub import constants

    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = Path(constants.HF_HUB_CACHE) / "models--mmembed-tests--tiny-clip"
    snapshot = repo / "snapshots" / commit
    shutil.copytree(models["clip-b32"], snapshot)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    try:
        embedder = EMBEDDERS.get("clip-b32", model_id="mmembed-tests/tiny-clip", device="cpu")
        assert embedder.fingerprint.startswith(f"mmembed-tests/tiny-clip@{commit}|clip|dim=24|")
        local = EMBEDDERS.get("clip-b32", model_id=str(models["clip-b32"]), device="cpu")
        query = Query(text="the cat")
        np.testing.assert_allclose(embedder.embed_query(query), local.embed_query(query), atol=1e-6)
    finally:
        shutil.rmtree(repo)


def test_int8_dynamic_quantisation_stays_close_to_float32(models, images):
    items = _items(images)
    exact = EMBEDDERS.get("clip-b32", model_id=str(models["clip-b32"]), device="cpu").embed_items(items)
    int8 = EMBEDDERS.get("clip-b32", model_id=str(models["clip-b32"]), device="cpu", dtype="int8")
    quantised = int8.embed_items(items)
    assert quantised.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(quantised, axis=1), 1.0, atol=1e-5)
    cosines = (exact * quantised).sum(axis=1)
    assert cosines.min() > 0.95 and not np.allclose(quantised, exact, atol=1e-6)  # close, but really quantised
    assert "|dtype=int8-dynamic|" in int8.fingerprint  # never mixed with float32 vectors in a cache
    gpu = EMBEDDERS.get("clip-b32", model_id=str(models["clip-b32"]), device="cuda", dtype="int8")
    with pytest.raises(MMEmbedError, match="runs on the CPU only"):
        gpu.embed_query(Query(text="cat"))


@pytest.mark.parametrize("backend", ["clip-b32", "siglip-b16"])
def test_prepacked_linear_weights_give_the_same_vectors(models, images, backend):
    """(SigLIP 2 NaFlex, whose patch embedding is a Linear left unpacked, runs packed in the tests above.)"""
    import torch

    from mmembed.packed_linear import PackedLinear, available

    if not available():
        pytest.skip("this torch build has no oneDNN linear ops")
    items = _items(images)
    packed = EMBEDDERS.get(backend, model_id=str(models[backend]), device="cpu")
    plain = EMBEDDERS.get(backend, model_id=str(models[backend]), device="cpu", prepack=False)
    np.testing.assert_allclose(packed.embed_items(items), plain.embed_items(items), atol=1e-5)
    np.testing.assert_allclose(packed.embed_query(Query(text="the cat")), plain.embed_query(Query(text="the cat")),
                               atol=1e-5)
    layers = [type(m) for m in packed._get_model().modules()]
    assert PackedLinear in layers and torch.nn.Linear not in layers  # every float32 Linear really packed
    assert PackedLinear not in [type(m) for m in plain._get_model().modules()]
    assert packed.fingerprint == plain.fingerprint  # the same vectors: one index cache serves both
