"""MLLMReranker on tiny Idefics3 (SmolVLM's class) and Qwen2-VL checkpoints built here and loaded back from disk."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_vlms import build_tiny_idefics3, build_tiny_qwen2_vl  # noqa: E402

from mmembed.rerankers import RERANKERS, rerank  # noqa: E402
from mmembed.rerankers.answer_tokens import AnswerTokenError, answer_token_id, answer_token_ids  # noqa: E402
from mmembed.rerankers.mllm import MLLMReranker  # noqa: E402
from mmembed.rerankers.prompts import ANSWER_HINT, QUESTIONS  # noqa: E402
from mmembed.types import Hit, Item, MMEmbedError, Modality, Query  # noqa: E402


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from PIL import Image

    folder = tmp_path_factory.mktemp("rerank-images")
    rng = np.random.default_rng(3)
    out = {}
    for name, size in (("red", (60, 40)), ("blue", (40, 40)), ("query", (50, 70)), ("big", (900, 600))):
        out[name] = folder / f"{name}.png"
        Image.fromarray((rng.random((size[1], size[0], 3)) * 255).astype("uint8")).save(out[name])
    out["broken"] = folder / "broken.png"
    out["broken"].write_bytes(b"not a png at all")
    return out


@pytest.fixture(scope="module", params=["idefics3", "qwen2_vl"])
def reranker(request, tmp_path_factory: pytest.TempPathFactory) -> MLLMReranker:
    build = build_tiny_idefics3 if request.param == "idefics3" else build_tiny_qwen2_vl
    folder = build(tmp_path_factory.mktemp(f"tiny-{request.param}"))
    return MLLMReranker(model_id=str(folder), device="cpu", batch_size=3,
                        feature_cache_dir=tmp_path_factory.mktemp("features"))


def _items(images: dict[str, Path]) -> list[Item]:
    return [
        Item("t1", text="a red cat on the grass"),
        Item("i1", image=str(images["red"])),
        Item("it1", text="blue sky", image=str(images["blue"])),
        Item("t2", text="dog"),
        Item("i2", image=str(images["big"])),
    ]


QUERIES = {
    Modality.TEXT: Query(text="red cat"),
    Modality.IMAGE: None,  # filled with a path in the test (images fixture)
    Modality.IMAGE_TEXT: None,
}


def _query(modality: Modality, images: dict[str, Path]) -> Query:
    if modality is Modality.TEXT:
        return Query(text="red cat")
    if modality is Modality.IMAGE:
        return Query(image=str(images["query"]))
    return Query(text="make it blue", image=str(images["query"]))


@pytest.mark.parametrize("query_modality", list(Modality))
@pytest.mark.parametrize("candidate_modality", list(Modality))
def test_prompt_has_query_then_candidate_then_question(reranker, images, query_modality, candidate_modality) -> None:
    query = _query(query_modality, images)
    candidate = {Modality.TEXT: Item("c", text="blue sky"), Modality.IMAGE: Item("c", image=str(images["red"])),
                 Modality.IMAGE_TEXT: Item("c", text="blue sky", image=str(images["red"]))}[candidate_modality]
    prompt = reranker.render_prompt(query, candidate)
    image_slot = "<image>" if reranker._load().model_type == "idefics3" else "<|image_pad|>"
    q_at, c_at = prompt.index("Query:"), prompt.index("Candidate:")
    question = f"{QUESTIONS[(query_modality, candidate_modality)]} {ANSWER_HINT}"
    assert q_at < c_at < prompt.index(question)
    query_part, candidate_part = prompt[q_at:c_at], prompt[c_at : prompt.index(question)]
    assert ("make it blue" in query_part or "red cat" in query_part) == query_modality.has_text
    assert (image_slot in query_part) == query_modality.has_image
    assert ("blue sky" in candidate_part) == candidate_modality.has_text
    assert (image_slot in candidate_part) == candidate_modality.has_image
    assert prompt.count(image_slot) == int(query_modality.has_image) + int(candidate_modality.has_image)


def test_questions_differ_by_modality_pair() -> None:
    assert len(set(QUESTIONS.values())) == len(QUESTIONS) == 9
    assert "modified" in QUESTIONS[(Modality.IMAGE_TEXT, Modality.IMAGE)]


@pytest.mark.parametrize("query_modality", list(Modality))
def test_fast_path_equals_naive_path(reranker, images, query_modality) -> None:
    query, items = _query(query_modality, images), _items(images)
    fast = reranker.score(query, items)
    naive = reranker.score_naive(query, items)
    assert len(fast) == len(items)
    assert all(0.0 <= s <= 1.0 for s in fast)
    np.testing.assert_allclose(fast, naive, atol=1e-4)
    assert np.ptp(fast) > 1e-3  # the tiny model does tell candidates apart, so equality means something


def test_image_features_are_cached_and_reused(reranker, images) -> None:
    items = _items(images)
    reranker.score(Query(text="red cat"), items)
    cache = reranker.feature_cache
    hits_before, misses_before = cache.hits, cache.misses
    again = reranker.score(Query(text="a dog"), items)
    assert cache.misses == misses_before  # no corpus image encoded twice
    assert cache.hits >= hits_before + 3
    files = list(cache.directory.glob("*.safetensors"))
    assert len(files) >= 3
    # A fresh reranker on the same model reads the features from disk and scores the same.
    fresh = MLLMReranker(model_id=reranker.model_id, device="cpu", feature_cache_dir=cache.directory.parent)
    np.testing.assert_allclose(fresh.score(Query(text="a dog"), items), again, atol=1e-5)
    assert fresh.feature_cache.misses == 0


def test_one_tile_per_image(reranker, images) -> None:
    loaded = reranker._load()
    from mmembed.images import load_image
    from mmembed.rerankers.mllm import _Pair

    enc = reranker._encode(_Pair(0, reranker.render_prompt(Query(text="x"), Item("i", image=str(images["big"]))),
                                 [load_image(images["big"])], ["h"]))
    if loaded.model_type == "idefics3":
        assert tuple(enc["pixel_values"].shape[1:]) == (1, 3, 32, 32)  # one 32px tile, not split
    else:
        assert int(enc["image_grid_thw"].prod()) // 4 <= reranker.max_image_pixels // (28 * 28)


def test_broken_candidate_image_degrades_with_a_warning(reranker, images) -> None:
    items = [Item("ok", text="red cat"), Item("bad-with-text", text="red cat", image=str(images["broken"])),
             Item("bad-image-only", image=str(images["broken"]))]
    with pytest.warns(UserWarning) as caught:
        scores = reranker.score(Query(text="red cat"), items)
    messages = " ".join(str(w.message) for w in caught)
    assert "bad-with-text" in messages and "text only" in messages
    assert "bad-image-only" in messages and "0.0" in messages
    assert scores[2] == 0.0
    assert scores[1] == pytest.approx(scores[0], abs=1e-5)  # scored from its text, which equals item "ok"


def test_rerank_moves_hits_by_reranker_score(reranker, images) -> None:
    items = _items(images)
    query = Query(text="red cat")
    hits = [Hit(item=item, score=1.0 - 0.1 * i, rank=i + 1) for i, item in enumerate(items)]
    scores = reranker.score(query, items)
    out = rerank(query, hits, reranker)
    expected = sorted(range(len(items)), key=lambda i: (-scores[i], i))
    assert [h.item.id for h in out] == [items[i].id for i in expected]
    assert [h.rank for h in out] == list(range(1, len(items) + 1))
    for hit in out:
        assert hit.movement == hit.original_rank - hit.rank


def test_progress_reports_reranking(reranker, images) -> None:
    seen = []
    reranker.score(Query(text="red cat"), _items(images), progress=lambda d, t, s: seen.append((d, t, s)))
    assert seen[-1] == (5, 5, "reranking")
    assert [d for d, _, _ in seen] == sorted(d for d, _, _ in seen)


def test_empty_input_and_registry_factory(tmp_path: Path) -> None:
    reranker = RERANKERS.factory("smolvlm-256m")(info=RERANKERS.info("smolvlm-256m"))
    assert reranker.model_id == "HuggingFaceTB/SmolVLM-256M-Instruct"
    assert reranker.score(Query(text="x"), []) == []
    from mmembed.hub import WeightsNotAvailableError

    with pytest.raises(WeightsNotAvailableError, match="prefetch"):
        reranker.score(Query(text="x"), [Item("a", text="y")])


class _Vocab:
    """A tokenizer double: a fixed vocabulary and a whitespace-keeping encoder."""

    unk_token, unk_token_id = "<unk>", 0

    def __init__(self, tokens: list[str]) -> None:
        self.ids = {t: i for i, t in enumerate(["<unk>", *tokens])}

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [self.ids.get(text, 0)] if text else []

    def convert_tokens_to_ids(self, token: str) -> int:
        return self.ids.get(token, 0)


def test_answer_token_variants() -> None:
    both = _Vocab(["True", "False", " True", " False"])
    assert answer_token_ids(both, "Assistant:") == (both.ids[" True"], both.ids[" False"])
    assert answer_token_ids(both, "<|im_start|>assistant\n") == (both.ids["True"], both.ids["False"])
    bpe = _Vocab(["\u0120True", "\u0120False", "True", "False"])
    assert answer_token_id(bpe, "True", after_space=False) == bpe.ids["\u0120True"]
    piece = _Vocab(["\u2581True", "\u2581False"])
    assert answer_token_id(piece, "False", after_space=True) == piece.ids["\u2581False"]  # only spelling there
    with pytest.raises(AnswerTokenError, match="True"):
        answer_token_id(_Vocab(["Tr", "ue"]), "True", after_space=True)


def test_answer_tokens_with_a_real_byte_level_bpe() -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<unk>"])
    tok.train_from_iterator(["Answer: True", "Answer: False", "True or False", "False or True"] * 50, trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>")
    true_id, false_id = answer_token_ids(fast, "Assistant:")
    assert fast.convert_ids_to_tokens([true_id, false_id]) == ["\u0120True", "\u0120False"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert fast.convert_ids_to_tokens(list(answer_token_ids(fast, "assistant\n"))) == ["True", "False"]


def test_precompute_image_features_fills_the_cache(reranker, images, tmp_path: Path) -> None:
    fresh = MLLMReranker(model_id=reranker.model_id, device="cpu", feature_cache_dir=tmp_path)
    items = [*_items(images), Item("broken", image=str(images["broken"]))]
    assert fresh.precompute_image_features(items) == 3  # red, blue, big; the broken one is skipped
    misses = fresh.feature_cache.misses
    fresh.score(Query(text="red cat"), items[:5])
    assert fresh.feature_cache.misses == misses


def test_length_batches_limit_padding_and_size() -> None:
    from mmembed.rerankers.mllm import _length_batches

    lengths = [100, 30, 101, 31, 29, 200, 100]
    batches = _length_batches(lengths, batch_size=2)
    assert sorted(i for b in batches for i in b) == list(range(7))
    assert batches == [[4, 1], [3], [0, 6], [2], [5]]
    for batch in batches:
        longest, real = max(lengths[i] for i in batch), sum(lengths[i] for i in batch)
        assert len(batch) <= 2 and len(batch) * longest - real <= 0.1 * real


@pytest.mark.parametrize("query_modality", [Modality.TEXT, Modality.IMAGE_TEXT])
def test_score_is_softmax_of_true_against_false_at_the_answer_position(reranker, images, query_modality) -> None:
    """Computed here from the model's full next-token logits, independently of the reranker's code paths."""
    loaded = reranker._load()
    tok = loaded.processor.tokenizer
    # The tiny word-level tokenizers spell the answers "True"/"False" whether or not a space comes first.
    assert (loaded.true_id, loaded.false_id) == (tok.convert_tokens_to_ids("True"), tok.convert_tokens_to_ids("False"))
    query = _query(query_modality, images)
    items = [Item("t", text="a red cat on the grass"), Item("it", text="blue sky", image=str(images["blue"]))]
    pairs, _ = reranker._pairs(query, items)
    expected = []
    for pair in pairs:
        generation_prompt = "Assistant:" if loaded.model_type == "idefics3" else "<|im_start|>assistant\n"
        assert pair.prompt.endswith(generation_prompt)  # the next token is the answer
        with torch.no_grad():
            logits = loaded.model(**pair.encoding).logits[0, -1]
        pair_logits = torch.stack([logits[loaded.true_id], logits[loaded.false_id]])
        expected.append(float(torch.softmax(pair_logits, dim=0)[0]))
    np.testing.assert_allclose(reranker.score_naive(query, items), expected, atol=1e-6)
    np.testing.assert_allclose(reranker.score(query, items), expected, atol=1e-4)


@pytest.mark.parametrize("query_modality", list(Modality))
def test_shared_query_prefix_runs_through_the_language_model_once(reranker, images, query_modality) -> None:
    query, items = _query(query_modality, images), _items(images)
    pairs, _ = reranker._pairs(query, items)
    ids = [pair.encoding["input_ids"][0].tolist() for pair in pairs]
    prefix = 0
    while all(len(row) > prefix + 1 and row[prefix] == ids[0][prefix] for row in ids):
        prefix += 1
    assert prefix > 0
    if query_modality.has_image:  # the query image's tokens are part of the shared prefix
        image_id = reranker._load().image_token_id
        assert ids[0][:prefix].count(image_id) > 0
    calls: list[tuple[int, int, int]] = []  # (batch, tokens per row, cached tokens)

    def record(module, args, kwargs):
        cache = kwargs.get("past_key_values")
        embeds = kwargs["inputs_embeds"]
        calls.append((embeds.shape[0], embeds.shape[1], cache.get_seq_length() if cache is not None else 0))

    handle = reranker._language_model().register_forward_pre_hook(record, with_kwargs=True)
    try:
        reranker.score(query, items)
    finally:
        handle.remove()
    assert calls[0] == (1, prefix, 0)  # the prefix, once, alone
    later = calls[1:]
    assert later and all(cached == prefix for _, _, cached in later)  # every batch reuses its key/value cache
    assert sum(batch for batch, _, _ in later) == len(items)
    run = sum(batch * width for batch, width, _ in later)
    suffixes = sum(len(row) - prefix for row in ids)
    assert suffixes <= run <= 1.1 * suffixes + len(items)  # little padding; the prefix is never run again


def test_query_image_features_stay_in_memory(reranker, images, tmp_path: Path) -> None:
    fresh = MLLMReranker(model_id=reranker.model_id, device="cpu", feature_cache_dir=tmp_path)
    items = [Item("i1", image=str(images["red"])), Item("t1", text="dog")]
    fresh.score(Query(text="make it blue", image=str(images["query"])), items)
    assert len(list(fresh.feature_cache.directory.glob("*.safetensors"))) == 1  # the corpus image only
    assert len(fresh.feature_cache._memory) == 2  # query image too, for this process


def test_candidate_image_the_processor_rejects_degrades(reranker, tmp_path: Path) -> None:
    from PIL import Image

    thin = tmp_path / "thin.png"  # 1:400 - Qwen2-VL's image processor refuses ratios over 200:1
    Image.new("RGB", (1, 400), (200, 10, 10)).save(thin)
    items = [Item("ok", text="red cat"), Item("thin-with-text", text="red cat", image=str(thin)),
             Item("thin-only", image=str(thin))]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        scores = reranker.score(Query(text="red cat"), items)
    messages = " ".join(str(w.message) for w in caught)
    if reranker._load().model_type == "qwen2_vl":
        assert "thin-with-text" in messages and "aspect ratio" in messages
        assert scores[2] == 0.0 and scores[1] == pytest.approx(scores[0], abs=1e-5)
        with pytest.raises(MMEmbedError, match="query image cannot be used"):
            reranker.score(Query(image=str(thin)), items[:1])
    else:  # Idefics3 squares every image into its tile: a thin image is just another image
        assert "thin" not in messages and 0.0 < scores[2] < 1.0


def test_score_batches_stream_the_same_scores_with_a_small_first_batch(reranker, images) -> None:
    """What the demo's reranked column fills from: batch by batch, first batch capped, same scores as score()."""
    from mmembed.rerankers.base import iter_rerank

    query, items = Query(text="red cat"), _items(images)
    batches = list(reranker.score_batches(query, items, first_batch=1))
    assert len(batches[0][0]) == 1  # the first cards come after one candidate, not a whole batch
    assert sorted(i for indices, _ in batches for i in indices) == list(range(len(items)))
    assert all(len(indices) <= reranker.batch_size for indices, _ in batches)
    streamed = dict(pair for indices, values in batches for pair in zip(indices, values, strict=True))
    np.testing.assert_allclose([streamed[i] for i in range(len(items))], reranker.score(query, items), atol=1e-5)
    hits = [Hit(item, 1.0 - 0.1 * i, rank=i + 1) for i, item in enumerate(items)]
    steps = list(iter_rerank(query, hits, reranker, first_batch=1))
    assert len(steps[0]) == 1 and len(steps) == len(batches)
    assert [h.item.id for h in steps[-1]] == [h.item.id for h in rerank(query, hits, reranker)]
