"""Corpus loading, index cache, retriever modes, bias metrics and evaluation, with the keyword fake embedder."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from fakes import KeywordEmbedder
from PIL import Image

from mmembed.bias import modality_mix, wrong_modality_rate
from mmembed.corpus import CorpusValidationError, load_corpus, load_hf_dataset, load_mbeir_jsonl, load_queries
from mmembed.evaluate import evaluate
from mmembed.index import IndexCacheWarning, VectorIndex, cache_folder, embed_corpus, load_or_build_index
from mmembed.retriever import Retriever
from mmembed.types import Hit, Item, Modality, Query, ValidationError

VOCAB = ["cat", "dog", "apple", "violin", "rocket", "boat"]


def _png(path: Path, colour=(200, 30, 30)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path.name


def write_corpus(folder: Path) -> Path:
    """Texts, images and image+text items about cats, dogs, apples and violins (file names carry keywords)."""
    rows = [
        {"did": "t-cat", "txt": "The cat is a small domesticated carnivore.", "img_path": None, "modality": "text"},
        {"did": "t-dog", "txt": "The dog is a loyal domesticated animal.", "img_path": None, "modality": "text"},
        {"did": "t-apple", "txt": "An apple is the round fruit of a tree.", "img_path": None, "modality": "text"},
        {"did": "i-cat", "txt": None, "img_path": "images/" + _png(folder / "images/cat.png"), "modality": "image"},
        {"did": "i-dog", "txt": None, "img_path": "images/" + _png(folder / "images/dog.png"), "modality": "image"},
        {"did": "i-violin", "txt": None, "img_path": "images/" + _png(folder / "images/violin.png"),
         "modality": "image"},
        {"did": "it-apple", "txt": "A red apple.", "img_path": "images/" + _png(folder / "images/apple.png"),
         "modality": "image,text", "license": "CC0", "source": "test:apple"},
        {"did": "it-cat", "txt": "A sleeping cat.", "img_path": "images/" + _png(folder / "images/cat_2.png"),
         "modality": "image,text"},
    ]
    path = folder / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path


@pytest.fixture
def corpus(tmp_path):
    return load_mbeir_jsonl(write_corpus(tmp_path / "corpus"))


@pytest.fixture
def biased_retriever(corpus, tmp_path):
    # text_bias makes every text-bearing item closer to a text query: modality bias on demand.
    return Retriever(corpus, KeywordEmbedder(VOCAB, text_bias=0.8), cache_dir=tmp_path / "cache")


# --- corpus ------------------------------------------------------------------------------------------

def test_mbeir_loader_resolves_images_and_keeps_extras(corpus, tmp_path):
    assert len(corpus) == 8
    item = corpus["it-apple"]
    assert item.modality is Modality.IMAGE_TEXT
    assert item.image == (tmp_path / "corpus/images/apple.png").resolve()
    assert item.meta == {"license": "CC0", "source": "test:apple"}
    assert corpus.modality_counts() == {Modality.TEXT: 3, Modality.IMAGE: 3, Modality.IMAGE_TEXT: 2}
    assert load_corpus(tmp_path / "corpus").content_hash == corpus.content_hash


def test_content_hash_changes_when_an_image_changes(corpus, tmp_path):
    _png(tmp_path / "corpus/images/dog.png", colour=(0, 0, 255))
    assert load_mbeir_jsonl(tmp_path / "corpus/corpus.jsonl").content_hash != corpus.content_hash


def test_validation_reports_every_problem_with_its_line(tmp_path):
    (tmp_path / "broken.png").write_text("not an image")
    rows = [
        '{"did": "a", "txt": "fine", "modality": "text"}',
        '{"did": "a", "txt": "again", "modality": "text"}',
        '{"did": "b", "img_path": "missing.png", "modality": "image"}',
        '{"did": "c", "img_path": "broken.png", "modality": "image"}',
        '{"did": "d", "txt": "words", "modality": "image"}',
        '{"did": "e", "txt": "   "}',
        "{not json",
    ]
    (tmp_path / "c.jsonl").write_text("\n".join(rows))
    with pytest.raises(CorpusValidationError) as caught:
        load_mbeir_jsonl(tmp_path / "c.jsonl")
    problems = caught.value.problems
    assert len(problems) == 6
    assert problems[0] == "line 2 (did 'a'): duplicate id, first seen on line 1"
    assert problems[1].startswith("line 3 (did 'b'): image file not found")
    assert problems[2].startswith("line 4 (did 'c'): unreadable image broken.png")
    assert problems[3] == "line 5 (did 'd'): modality 'image' does not match the fields present ('text')"
    assert problems[4] == "line 6 (did 'e'): empty text and no image"
    assert problems[5].startswith("line 7: not valid JSON")
    assert "6 problem(s)" in str(caught.value)


def test_missing_corpus_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus file not found"):
        load_mbeir_jsonl(tmp_path / "nope.jsonl")


def test_hf_dataset_loader_with_configurable_columns(tmp_path):
    import datasets

    images = [Image.new("RGB", (4, 4), (i * 40, 0, 0)) for i in range(3)]
    dataset = datasets.Dataset.from_dict(
        {"picture": images, "caption": ["a cat", "", "a dog"], "key": ["x", "y", "z"]},
        features=datasets.Features({"picture": datasets.Image(), "caption": datasets.Value("string"),
                                    "key": datasets.Value("string")}),
    )
    dataset.save_to_disk(str(tmp_path / "ds"))
    corpus = load_hf_dataset(tmp_path / "ds", image_column="picture", text_column="caption", id_column="key")
    assert [item.modality for item in corpus] == [Modality.IMAGE_TEXT, Modality.IMAGE, Modality.IMAGE_TEXT]
    assert corpus["z"].text == "a dog"
    with pytest.raises(ValidationError, match="no text column 'text'; columns are: caption, key, picture"):
        load_hf_dataset(tmp_path / "ds", image_column="picture")


def test_queries_loader_checks_positives_and_modality(tmp_path, corpus):
    good = {"qid": "q1", "query_txt": "a cat", "query_img_path": None, "query_modality": "text",
            "pos_cand_list": ["i-cat"], "task": "t->i", "target_modality": "image"}
    bad = {"qid": "q2", "query_txt": "x", "query_modality": "image", "pos_cand_list": ["nope"]}
    (tmp_path / "q.jsonl").write_text(json.dumps(good) + "\n")
    [query] = load_queries(tmp_path / "q.jsonl", corpus)
    assert query.query.target is Modality.IMAGE and query.task == "t->i" and query.positives == ("i-cat",)
    (tmp_path / "bad.jsonl").write_text(json.dumps(bad) + "\n")
    with pytest.raises(CorpusValidationError, match="positives not in the corpus: nope"):
        load_queries(tmp_path / "bad.jsonl", corpus)


# --- retriever ---------------------------------------------------------------------------------------

def test_natural_mode_shows_bias_and_filtered_mode_removes_it(biased_retriever):
    query = Query(text="cat", target="image")
    natural = biased_retriever.search(query, k=3)
    # The text-biased model ranks the cat passage and the captioned cat above the plain cat image.
    assert [hit.item.id for hit in natural.hits] == ["t-cat", "it-cat", "i-cat"]
    assert natural.target is Modality.IMAGE and natural.mode == "natural"
    filtered = biased_retriever.search(query, k=3, mode="filtered")
    assert [hit.item.modality for hit in filtered.hits] == [Modality.IMAGE] * 3
    assert filtered.hits[0].item.id == "i-cat"
    assert [hit.rank for hit in filtered.hits] == [1, 2, 3]


def test_without_bias_the_image_query_finds_images_of_the_same_thing(corpus, tmp_path):
    retriever = Retriever(corpus, KeywordEmbedder(VOCAB), cache_dir=tmp_path / "cache")
    result = retriever.search(Query(image=tmp_path / "corpus/images/dog.png"), k=2, target="text", mode="filtered")
    assert [hit.item.id for hit in result.hits] == ["t-dog", "t-cat"]
    assert [round(hit.score, 5) for hit in result.hits] == [1.0, 0.0]


def test_k_beyond_pool_and_filtered_without_target(biased_retriever):
    assert len(biased_retriever.search(Query(text="cat"), k=50).hits) == 8
    assert len(biased_retriever.search(Query(text="cat"), k=50, target="image,text", mode="filtered").hits) == 2
    with pytest.raises(ValidationError, match="filtered mode needs a target modality"):
        biased_retriever.search(Query(text="cat"), mode="filtered")
    with pytest.raises(ValidationError, match="unknown mode 'fuzzy'"):
        biased_retriever.search(Query(text="cat"), mode="fuzzy")


def test_index_is_cached_and_reused(corpus, tmp_path):
    embedder = KeywordEmbedder(VOCAB)
    Retriever(corpus, embedder, cache_dir=tmp_path / "cache").ensure_index()
    assert embedder.calls["items"] == 1
    second = Retriever(corpus, embedder, cache_dir=tmp_path / "cache")
    second.ensure_index()
    assert embedder.calls["items"] == 1  # loaded from disk, corpus not re-embedded
    assert [h.item.id for h in second.search(Query(text="violin"), k=1).hits] == ["i-violin"]


def test_fingerprint_mismatch_rebuilds_with_a_warning(corpus, tmp_path):
    cache = tmp_path / "cache"
    embedder = KeywordEmbedder(VOCAB)
    load_or_build_index(corpus, embedder, cache)
    folder = cache_folder(cache, corpus.name, embedder.name, embedder.fingerprint)
    meta = json.loads((folder / "index-flat.json").read_text())
    meta["fingerprint"]["corpus_hash"] = "something-else"
    (folder / "index-flat.json").write_text(json.dumps(meta))
    with pytest.warns(IndexCacheWarning, match="was built for another model or corpus version; rebuilding"):
        index = load_or_build_index(corpus, embedder, cache)
    assert len(index) == len(corpus)
    assert json.loads((folder / "index-flat.json").read_text())["fingerprint"]["corpus_hash"] == corpus.content_hash


def test_corrupt_index_file_rebuilds_with_a_warning(corpus, tmp_path):
    cache = tmp_path / "cache"
    embedder = KeywordEmbedder(VOCAB)
    load_or_build_index(corpus, embedder, cache)
    folder = cache_folder(cache, corpus.name, embedder.name, embedder.fingerprint)
    (folder / "index-flat.faiss").write_bytes(b"garbage")
    with pytest.warns(IndexCacheWarning, match="is corrupt"):
        index = load_or_build_index(corpus, embedder, cache)
    _, rows = index.search(embedder.embed_query(Query(text="rocket boat dog")), 1)
    assert index.ids[int(rows[0][0])] == "t-dog"


class FlakyEmbedder(KeywordEmbedder):
    """Fails on its `fail_on`-th call to embed_items, like a build killed half-way."""

    def __init__(self, fail_on: int | None) -> None:
        super().__init__(VOCAB)
        self.fail_on = fail_on

    def embed_items(self, items, *, progress=None):
        if self.calls["items"] + 1 == self.fail_on:
            self.calls["items"] += 1
            raise KeyboardInterrupt
        return super().embed_items(items, progress=progress)


def test_interrupted_embedding_resumes_at_the_first_missing_shard(corpus, tmp_path):
    folder = tmp_path / "cache" / "run"
    flaky = FlakyEmbedder(fail_on=3)
    with pytest.raises(KeyboardInterrupt):
        embed_corpus(corpus, flaky, folder, shard_size=3)  # shards of 3 items: 0-2, 3-5, 6-7
    assert sorted(p.name for p in (folder / "embeddings").glob("shard-*.npy")) == ["shard-00000.npy",
                                                                                     "shard-00001.npy"]
    resumed = FlakyEmbedder(fail_on=None)
    vectors = embed_corpus(corpus, resumed, folder, shard_size=3)
    assert resumed.calls["items"] == 1  # only the last shard was embedded
    np.testing.assert_allclose(vectors, KeywordEmbedder(VOCAB).embed_items(corpus.items), atol=1e-6)


def test_corrupt_shard_is_re_embedded_with_a_warning(corpus, tmp_path):
    folder = tmp_path / "cache" / "run"
    embed_corpus(corpus, KeywordEmbedder(VOCAB), folder, shard_size=4)
    (folder / "embeddings/shard-00001.npy").write_bytes(b"\x93NUMPY broken")
    again = KeywordEmbedder(VOCAB)
    with pytest.warns(IndexCacheWarning, match="shard-00001.npy is unreadable"):
        embed_corpus(corpus, again, folder, shard_size=4)
    assert again.calls["items"] == 1


@pytest.mark.parametrize("index_type", ["hnsw", "ivfpq"])
def test_approximate_indexes_agree_with_exact_search(index_type):
    rng = np.random.default_rng(0)
    centres = rng.standard_normal((50, 32)).astype(np.float32)
    vectors = centres[rng.integers(0, 50, 4000)] + 0.3 * rng.standard_normal((4000, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = [str(i) for i in range(len(vectors))]
    modalities = [list(Modality)[i % 3] for i in range(len(vectors))]
    exact = VectorIndex.build(vectors, ids, modalities, "flat")
    approx = VectorIndex.build(vectors, ids, modalities, index_type)
    queries = vectors[:40]
    _, truth = exact.search(queries, 10)
    _, found = approx.search(queries, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found, strict=True)])
    assert recall >= 0.9
    _, only_images = approx.search(queries, 10, only=Modality.IMAGE)
    assert {int(row) % 3 for row in only_images.ravel()} == {1}


def test_unknown_index_type(corpus, tmp_path):
    with pytest.raises(ValidationError, match="unknown index type 'annoy'"):
        load_or_build_index(corpus, KeywordEmbedder(VOCAB), tmp_path, index_type="annoy")


# --- bias and evaluation -----------------------------------------------------------------------------

def _hits(*modalities: str) -> list[Hit]:
    fields = {"text": {"text": "t"}, "image": {"image": "x.png"}, "image,text": {"text": "t", "image": "x.png"}}
    return [Hit(Item(f"id{i}", **fields[m]), 1.0 - i / 10, rank=i + 1) for i, m in enumerate(modalities)]


def test_modality_mix_shares_and_skew():
    hits = _hits("text", "text", "image", "text")
    pool = [hit.item for hit in _hits("text", "image", "image", "image,text")]
    mix = modality_mix(hits, pool).set_index("modality")
    assert mix.loc["text", "count"] == 3 and mix.loc["text", "share"] == 0.75
    assert mix.loc["text", "pool_share"] == 0.25 and mix.loc["text", "skew"] == 3.0
    assert mix.loc["image", "skew"] == pytest.approx(0.5)
    assert mix.loc["image,text", "label"] == "image+text" and mix.loc["image,text", "share"] == 0.0
    assert math.isnan(modality_mix(hits).loc[0, "pool_share"])


def test_wrong_modality_rate():
    hits = _hits("text", "image", "text", "text")
    assert wrong_modality_rate(hits, Modality.IMAGE) == 0.75
    assert wrong_modality_rate(hits, Modality.IMAGE, k=2) == 0.5
    assert wrong_modality_rate(hits, None) is None
    assert wrong_modality_rate([], Modality.TEXT) is None


def test_evaluate_recall_and_wrong_modality(tmp_path, corpus, biased_retriever):
    rows = [
        {"qid": "q1", "query_txt": "cat", "pos_cand_list": ["i-cat"], "task": "t->i", "target_modality": "image"},
        {"qid": "q2", "query_txt": "violin", "pos_cand_list": ["i-violin"], "task": "t->i",
         "target_modality": "image"},
        {"qid": "q3", "query_txt": "dog", "pos_cand_list": ["t-dog"], "task": "t->t", "target_modality": "text"},
    ]
    (tmp_path / "q.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    report = evaluate(biased_retriever, load_queries(tmp_path / "q.jsonl", corpus), ks=(1, 5))
    # q1: i-cat ranks 3rd behind two text-bearing cat items; q2: the violin image is first; q3: t-dog first.
    assert report.recall["t->i"] == {1: 0.5, 5: 1.0}
    assert report.recall["t->t"] == {1: 1.0, 5: 1.0}
    assert report.recall["overall"][1] == pytest.approx(2 / 3)
    assert report.wrong_modality["image"][1] == 0.5
    assert json.loads(report.to_json())["recall"]["t->i"]["R@1"] == 0.5
    assert "| t->i | 2 | 50.0 | 100.0 |" in report.to_markdown()
