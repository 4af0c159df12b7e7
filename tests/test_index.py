"""The FAISS index and its on-disk cache: roundtrip, fingerprints, corruption, resumable embedding, ANN recall."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fakes import KeywordEmbedder
from retrieval_helpers import VOCAB, write_corpus

from mmembed.corpus import load_mbeir_jsonl
from mmembed.index import IndexCacheWarning, VectorIndex, cache_folder, embed_corpus, load_or_build_index
from mmembed.types import Modality, Query, ValidationError


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    """FAISS's OpenMP training collapses (30x slower) when the few CPU cores are shared; tests use one."""
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture
def corpus(tmp_path):
    return load_mbeir_jsonl(write_corpus(tmp_path / "corpus"))


def _folder(cache, corpus, embedder):
    return cache_folder(cache, corpus.name, embedder.name, embedder.fingerprint)


def test_save_load_roundtrip_reuses_the_cached_index(corpus, tmp_path):
    cache = tmp_path / "cache"
    embedder = KeywordEmbedder(VOCAB)
    built = load_or_build_index(corpus, embedder, cache)
    assert embedder.calls["items"] == 1
    folder = _folder(cache, corpus, embedder)
    meta = json.loads((folder / "index-flat.json").read_text())
    assert meta["ids"] == [item.id for item in corpus]
    assert meta["fingerprint"] == {"format_version": 1, "embedder": embedder.fingerprint, "corpus": "corpus",
                                   "corpus_hash": corpus.content_hash, "dim": 7, "count": 8, "index_type": "flat"}
    assert sorted(p.name for p in (folder / "embeddings").iterdir()) == ["fingerprint.json", "shard-00000.json",
                                                                         "shard-00000.npy"]  # + its checksum
    assert not list(folder.glob(".*.tmp"))  # atomic writes leave no temp files behind
    loaded = load_or_build_index(corpus, embedder, cache)
    assert embedder.calls["items"] == 1  # loaded from disk, corpus not re-embedded
    query = embedder.embed_query(Query(text="violin"))
    np.testing.assert_array_equal(built.search(query, 8)[1], loaded.search(query, 8)[1])
    assert loaded.ids[int(loaded.search(query, 1)[1][0][0])] == "i-violin"


def test_fingerprint_mismatch_rebuilds_with_a_warning(corpus, tmp_path):
    cache = tmp_path / "cache"
    embedder = KeywordEmbedder(VOCAB)
    load_or_build_index(corpus, embedder, cache)
    folder = _folder(cache, corpus, embedder)
    meta = json.loads((folder / "index-flat.json").read_text())
    meta["fingerprint"]["corpus_hash"] = "something-else"
    (folder / "index-flat.json").write_text(json.dumps(meta))
    with pytest.warns(IndexCacheWarning, match="was built for another model or corpus version; rebuilding"):
        index = load_or_build_index(corpus, embedder, cache)
    assert len(index) == len(corpus)
    assert json.loads((folder / "index-flat.json").read_text())["fingerprint"]["corpus_hash"] == corpus.content_hash
    assert embedder.calls["items"] == 1  # the embedding shards were still valid: only the index was rebuilt


def test_changed_embedder_never_reuses_old_vectors(corpus, tmp_path):
    cache = tmp_path / "cache"
    load_or_build_index(corpus, KeywordEmbedder(VOCAB), cache)
    other = KeywordEmbedder(VOCAB, text_bias=0.5)  # same name, other fingerprint -> its own cache folder
    load_or_build_index(corpus, other, cache)
    assert other.calls["items"] == 1
    stale = _folder(cache, corpus, other) / "embeddings/fingerprint.json"
    data = json.loads(stale.read_text())
    data["dim"] = 99
    stale.write_text(json.dumps(data))
    (_folder(cache, corpus, other) / "index-flat.json").unlink()
    (_folder(cache, corpus, other) / "index-flat.faiss").unlink()
    with pytest.warns(IndexCacheWarning, match="made by another model or corpus version; re-embedding"):
        load_or_build_index(corpus, other, cache)
    assert other.calls["items"] == 2


@pytest.mark.parametrize("damage", ["garbage", "truncated", "bad-json"])
def test_corrupt_index_file_rebuilds_with_a_warning(corpus, tmp_path, damage):
    cache = tmp_path / "cache"
    embedder = KeywordEmbedder(VOCAB)
    load_or_build_index(corpus, embedder, cache)
    folder = _folder(cache, corpus, embedder)
    index_file = folder / "index-flat.faiss"
    if damage == "garbage":
        index_file.write_bytes(b"garbage")
    elif damage == "truncated":
        index_file.write_bytes(index_file.read_bytes()[: index_file.stat().st_size // 2])
    else:
        (folder / "index-flat.json").write_text('{"fingerprint": ')
    expected = "is unreadable; rebuilding" if damage == "bad-json" else "is corrupt"
    with pytest.warns(IndexCacheWarning, match=expected):
        index = load_or_build_index(corpus, embedder, cache)
    _, rows = index.search(embedder.embed_query(Query(text="rocket boat dog")), 1)
    assert index.ids[int(rows[0][0])] == "t-dog"
    load_or_build_index(corpus, embedder, cache)  # repaired on disk: no warning the second time


class FlakyEmbedder(KeywordEmbedder):
    """Fails on its `fail_on`-th call to embed_items, like a build killed half-way."""

    def __init__(self, fail_on: int | None) -> None:
        super().__init__(VOCAB)
        self.fail_on = fail_on
        self.sizes: list[int] = []

    def embed_items(self, items, *, progress=None):
        if self.calls["items"] + 1 == self.fail_on:
            self.calls["items"] += 1
            raise KeyboardInterrupt
        self.sizes.append(len(items))
        return super().embed_items(items, progress=progress)


def test_interrupted_embedding_resumes_at_the_first_missing_shard(corpus, tmp_path):
    folder = tmp_path / "cache" / "run"
    flaky = FlakyEmbedder(fail_on=3)
    with pytest.raises(KeyboardInterrupt):
        embed_corpus(corpus, flaky, folder, shard_size=3)  # shards of 3 items: 0-2, 3-5, 6-7
    assert sorted(p.name for p in (folder / "embeddings").glob("shard-*.npy")) == ["shard-00000.npy",
                                                                                     "shard-00001.npy"]
    resumed = FlakyEmbedder(fail_on=None)
    seen = []
    vectors = embed_corpus(corpus, resumed, folder, shard_size=3, progress=lambda d, t, s: seen.append((d, t)))
    assert resumed.calls["items"] == 1 and resumed.sizes == [2]  # only the last shard was embedded
    assert seen == [(0, 8), (3, 8), (6, 8), (8, 8)]
    np.testing.assert_allclose(vectors, KeywordEmbedder(VOCAB).embed_items(corpus.items), atol=1e-6)


def test_an_image_that_fails_while_embedding_names_the_items_and_keeps_finished_shards(corpus, tmp_path):
    from mmembed.images import ImageLoadError

    class Picky(KeywordEmbedder):
        def embed_items(self, items, *, progress=None):
            if any(item.id == "i-violin" for item in items):
                raise ImageLoadError("violin.png could not be read as an image (broken data stream)")
            return super().embed_items(items, progress=progress)

    folder = tmp_path / "cache" / "run"
    with pytest.raises(ValidationError) as caught:
        embed_corpus(corpus, Picky(VOCAB), folder, shard_size=4)
    assert str(caught.value) == (
        "corpus 'corpus', items 5-8 (i-dog .. it-cat): violin.png could not be read as an image "
        "(broken data stream); the 1 finished shard(s) are kept and a rerun resumes here")
    assert [p.name for p in (folder / "embeddings").glob("shard-*.npy")] == ["shard-00000.npy"]


def test_corrupt_shard_is_re_embedded_with_a_warning(corpus, tmp_path):
    folder = tmp_path / "cache" / "run"
    embed_corpus(corpus, KeywordEmbedder(VOCAB), folder, shard_size=4)
    (folder / "embeddings/shard-00001.npy").write_bytes(b"\x93NUMPY broken")
    again = KeywordEmbedder(VOCAB)
    with pytest.warns(IndexCacheWarning, match="shard-00001.npy is unreadable"):
        embed_corpus(corpus, again, folder, shard_size=4)
    assert again.calls["items"] == 1


def test_pickled_shard_is_refused(corpus, tmp_path):
    folder = tmp_path / "cache" / "run"
    embed_corpus(corpus, KeywordEmbedder(VOCAB), folder, shard_size=4)
    np.save(folder / "embeddings/shard-00000.npy", np.array([{"evil": 1}] * 4, dtype=object), allow_pickle=True)
    with pytest.warns(IndexCacheWarning, match="shard-00000.npy is unreadable"):
        embed_corpus(corpus, KeywordEmbedder(VOCAB), folder, shard_size=4)


def _clustered(n=4000, dim=32, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((50, dim)).astype(np.float32)
    vectors = centres[rng.integers(0, 50, n)] + 0.3 * rng.standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.mark.parametrize("index_type", ["hnsw", "ivfpq"])
def test_approximate_indexes_agree_with_exact_search(index_type):
    vectors = _clustered()
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
    assert only_images.shape == (40, 10)
    assert {int(row) % 3 for row in only_images.ravel()} == {1}
    _, exact_images = exact.search(queries, 10, only=Modality.IMAGE)
    filtered_recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(exact_images, only_images, strict=True)])
    assert filtered_recall >= 0.85


def test_ivfpq_on_a_tiny_pool_uses_exact_search_with_a_warning(corpus, tmp_path):
    with pytest.warns(UserWarning, match="ivfpq needs at least 1000 items to train; the 8-item pool uses exact"):
        index = load_or_build_index(corpus, KeywordEmbedder(VOCAB), tmp_path, index_type="ivfpq")
    assert index.index_type == "flat" and len(index) == 8


@pytest.mark.parametrize("index_type", ["flat", "hnsw"])
def test_every_index_type_roundtrips_through_the_cache(corpus, tmp_path, index_type):
    embedder = KeywordEmbedder(VOCAB)
    first = load_or_build_index(corpus, embedder, tmp_path, index_type=index_type)
    again = load_or_build_index(corpus, embedder, tmp_path, index_type=index_type)
    assert embedder.calls["items"] == 1 and again.index_type == index_type and len(again) == len(first) == 8
    query = embedder.embed_query(Query(text="apple"))
    _, rows = again.search(query, 8, only=Modality.TEXT)
    found = [again.ids[int(r)] for r in rows[0] if r >= 0]
    assert found[0] == "t-apple" and set(found) == {"t-apple", "t-cat", "t-dog"}


def test_filtered_search_is_exact_and_capped_by_what_exists():
    vectors = np.eye(4, dtype=np.float32)
    index = VectorIndex.build(vectors, ["a", "b", "c", "d"],
                              [Modality.TEXT, Modality.IMAGE, Modality.TEXT, Modality.TEXT], "flat")
    scores, rows = index.search(vectors[1], 3, only=Modality.TEXT)
    assert sorted(rows[0].tolist()) == [0, 2, 3] and np.allclose(scores, 0.0)
    scores, rows = index.search(vectors[0], 10, only=Modality.IMAGE)
    assert rows.tolist() == [[1]]
    assert index.search(vectors[0], 5, only=Modality.IMAGE_TEXT)[1].shape == (1, 0)
    with pytest.raises(Exception, match="query has dimension 3 but the index has 4"):
        index.search(np.ones(3, dtype=np.float32), 1)


def test_unknown_index_type(corpus, tmp_path):
    with pytest.raises(ValidationError, match="unknown index type 'annoy'"):
        load_or_build_index(corpus, KeywordEmbedder(VOCAB), tmp_path, index_type="annoy")


@pytest.mark.parametrize("index_type", ["hnsw", "ivfpq"])
def test_filtered_search_finds_a_rare_modality_on_approximate_indexes(index_type):
    vectors = _clustered(3000, 32, seed=1)
    modalities = [Modality.TEXT] * len(vectors)
    rare = [3, 1000, 2999]
    for row in rare:
        modalities[row] = Modality.IMAGE_TEXT
    index = VectorIndex.build(vectors, [str(i) for i in range(len(vectors))], modalities, index_type)
    scores, rows = index.search(vectors[:5], 10, only=Modality.IMAGE_TEXT)
    assert rows.shape == (5, 3) and all(sorted(r) == rare for r in rows.tolist())
    np.testing.assert_allclose(scores, np.sort(vectors[:5] @ vectors[rare].T, axis=1)[:, ::-1], atol=1e-5)


@pytest.mark.parametrize("index_type", ["hnsw", "ivfpq"])
def test_filtered_search_through_the_faiss_selector_on_a_large_subset(index_type, monkeypatch):
    import mmembed.index

    monkeypatch.setattr(mmembed.index, "SUBSET_EXACT_MAX", 0)  # force the IDSelector path
    vectors = _clustered(4000, 32, seed=2)
    modalities = [list(Modality)[i % 2] for i in range(len(vectors))]  # text and image, half each
    ids = [str(i) for i in range(len(vectors))]
    exact = VectorIndex.build(vectors, ids, modalities, "flat")
    approx = VectorIndex.build(vectors, ids, modalities, index_type)
    _, truth = exact.search(vectors[:40], 10, only=Modality.IMAGE)
    _, found = approx.search(vectors[:40], 10, only=Modality.IMAGE)
    assert {int(row) % 2 for row in found.ravel()} == {1}
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(truth, found, strict=True)]) >= 0.85
