"""The on-disk index cache against damage an operator's soak found (issue 9, items 5-7):

5. an index whose dimension, count, metric or type is not its fingerprint's is rebuilt, not trusted;
6. readable damage (other vectors of the same shape, permuted rows, random bytes under a valid header,
   a zeroed embedding shard, edited metadata) is caught by checksums and rebuilt with a warning;
7. a cache folder that cannot be written gives one warning and an in-memory index, loaded once.
"""

from __future__ import annotations

import errno
import json
import warnings

import numpy as np
import pytest
from fakes import KeywordEmbedder
from retrieval_helpers import VOCAB, write_corpus

from mmembed.checksums import file_record
from mmembed.corpus import load_mbeir_jsonl
from mmembed.index import (
    CacheNotWritableWarning,
    IndexCacheWarning,
    cache_folder,
    load_or_build_index,
    make_faiss_index,
    metadata_checksum,
)
from mmembed.retriever import Retriever
from mmembed.types import Query

QUERIES = ["violin", "rocket boat dog", "apple"]


@pytest.fixture(autouse=True)
def _one_faiss_thread():
    import faiss

    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    yield
    faiss.omp_set_num_threads(before)


@pytest.fixture
def corpus(tmp_path):
    return load_mbeir_jsonl(write_corpus(tmp_path / "corpus"))


@pytest.fixture
def built(corpus, tmp_path):
    """A cache with a good flat index, its folder, and the top hit of each query (the right answers)."""
    cache = tmp_path / "cache"
    embedder = KeywordEmbedder(VOCAB)
    index = load_or_build_index(corpus, embedder, cache)
    folder = cache_folder(cache, corpus.name, embedder.name, embedder.fingerprint)
    return cache, folder, _answers(index, embedder)


def _answers(index, embedder):
    return [index.ids[int(index.search(embedder.embed_query(Query(text=q)), 1)[1][0][0])] for q in QUERIES]


def _vectors(folder):
    import faiss

    index = faiss.read_index(str(folder / "index-flat.faiss"))
    return index.reconstruct_n(0, index.ntotal)


def _write_index(folder, index):
    import faiss

    faiss.write_index(index, str(folder / "index-flat.faiss"))


def _reseal(folder):
    """Make the metadata agree with whatever index file is there now (size, checksum, self-checksum), so only
    the structural checks stand between it and the queries."""
    path = folder / "index-flat.json"
    meta = json.loads(path.read_text())
    meta.pop("checksum")
    meta["files"]["index-flat.faiss"] = file_record(folder / "index-flat.faiss")
    path.write_text(json.dumps({**meta, "checksum": metadata_checksum(meta)}))


def _unit(rows, dim, seed):
    vectors = np.random.default_rng(seed).standard_normal((rows, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


# --- 5. structure against the fingerprint -----------------------------------------------------------------

@pytest.mark.parametrize(("swap", "message"), [
    ("dimension", "has dimension 3, but the embedder gives 7"),
    ("count", "holds 5 vectors, but the corpus has 8 items"),
    ("metric", "does not use the inner-product metric"),
    ("type", "is a IndexHNSWFlat, not a flat index"),
])
def test_an_index_unlike_its_fingerprint_is_rebuilt(corpus, built, swap, message):
    import faiss

    cache, folder, answers = built
    if swap == "dimension":
        other = make_faiss_index(_unit(8, 3, 0), "flat")
    elif swap == "count":
        other = make_faiss_index(_vectors(folder)[:5], "flat")
    elif swap == "metric":
        other = faiss.IndexFlatL2(7)
        other.add(_vectors(folder))
    else:
        other = make_faiss_index(_vectors(folder), "hnsw")
    _write_index(folder, other)
    _reseal(folder)
    embedder = KeywordEmbedder(VOCAB)
    with pytest.warns(IndexCacheWarning, match=f"{message}; rebuilding"):
        index = load_or_build_index(corpus, embedder, cache, verify="size")
    assert _answers(index, embedder) == answers
    with warnings.catch_warnings():
        warnings.simplefilter("error", IndexCacheWarning)  # repaired on disk: quiet from now on
        load_or_build_index(corpus, embedder, cache, verify="sync")


# --- 6. readable damage ---------------------------------------------------------------------------------

def _damage(folder, how):
    path = folder / "index-flat.faiss"
    if how == "other-vectors":
        _write_index(folder, make_faiss_index(_unit(8, 7, 1), "flat"))
    elif how == "permuted-rows":
        _write_index(folder, make_faiss_index(_vectors(folder)[::-1].copy(), "flat"))
    elif how == "random-under-header":
        data = path.read_bytes()
        payload = 8 * 7 * 4  # the vectors are the file's tail; header and sizes stay valid
        path.write_bytes(data[:-payload] + np.random.default_rng(2).bytes(payload))
    else:
        raise ValueError(how)
    return path


@pytest.mark.parametrize("how", ["other-vectors", "permuted-rows", "random-under-header"])
def test_same_size_damage_is_caught_by_the_checksum(corpus, built, how):
    cache, folder, answers = built
    size = (folder / "index-flat.faiss").stat().st_size
    _damage(folder, how)
    assert (folder / "index-flat.faiss").stat().st_size == size  # the fast size check alone cannot see it
    embedder = KeywordEmbedder(VOCAB)
    damaged = r"is corrupt \(does not match the checksum recorded when it was saved\); rebuilding"
    with pytest.warns(IndexCacheWarning, match=damaged):
        index = load_or_build_index(corpus, embedder, cache, verify="sync")
    assert _answers(index, embedder) == answers
    assert embedder.calls["items"] == 0  # the shards were sound: only the index was rebuilt from them


@pytest.mark.parametrize("how", ["other-vectors", "random-under-header"])
def test_a_retriever_rebuilds_when_the_background_check_fails(corpus, built, how):
    cache, folder, answers = built
    _damage(folder, how)
    embedder = KeywordEmbedder(VOCAB)
    retriever = Retriever(corpus, embedder, cache_dir=cache)
    retriever.ensure_index()  # returns at once: the checksum runs in the background
    check = retriever._index.check  # (not .index: that would already act on the finished check)
    assert check is not None and check.wait(30) == "does not match the checksum recorded when it was saved"
    with pytest.warns(IndexCacheWarning, match="does not match the checksum"):
        hits = [retriever.search(Query(text=q), k=1).hits[0].item.id for q in QUERIES]
    assert hits == answers
    assert retriever.index.check is None  # the rebuilt index is this run's own
    assert any("does not match the checksum" in note for note in retriever.cache_notes)


def test_a_sound_cache_passes_the_background_check_quietly(corpus, built):
    cache, _, answers = built
    with warnings.catch_warnings():
        warnings.simplefilter("error", IndexCacheWarning)
        retriever = Retriever(corpus, KeywordEmbedder(VOCAB), cache_dir=cache)
        retriever.ensure_index()
        assert retriever._index.check.wait(30) is None
        assert [retriever.search(Query(text=q), k=1).hits[0].item.id for q in QUERIES] == answers
    assert retriever.cache_notes == [] and retriever.embedder.calls["items"] == 0


def test_edited_metadata_is_caught_by_its_own_checksum(corpus, built):
    cache, folder, answers = built
    path = folder / "index-flat.json"
    meta = json.loads(path.read_text())
    meta["modalities"] = meta["modalities"][::-1]  # still valid JSON, still the right length
    path.write_text(json.dumps(meta))
    embedder = KeywordEmbedder(VOCAB)
    with pytest.warns(IndexCacheWarning, match="has metadata that does not match its checksum"):
        index = load_or_build_index(corpus, embedder, cache)
    assert _answers(index, embedder) == answers
    assert [int(code) for code in index.modalities] == json.loads(path.read_text())["modalities"] != meta["modalities"]


def test_a_zeroed_embedding_shard_is_re_embedded(corpus, built):
    cache, folder, answers = built
    (folder / "index-flat.faiss").unlink()  # the index must be rebuilt from the shards
    (folder / "index-flat.json").unlink()
    shard = folder / "embeddings" / "shard-00000.npy"
    np.save(shard, np.zeros_like(np.load(shard)))
    embedder = KeywordEmbedder(VOCAB)
    with pytest.warns(IndexCacheWarning, match="shard-00000.npy does not match the checksum"):
        index = load_or_build_index(corpus, embedder, cache)
    assert embedder.calls["items"] == 1 and _answers(index, embedder) == answers
    assert np.allclose(np.linalg.norm(np.load(shard), axis=1), 1.0)


def test_a_shard_cached_before_checksums_is_kept_only_if_its_rows_are_unit_vectors(corpus, built):
    cache, folder, answers = built
    for name in ("index-flat.faiss", "index-flat.json", "embeddings/shard-00000.json"):
        (folder / name).unlink()
    embedder = KeywordEmbedder(VOCAB)
    with warnings.catch_warnings():
        warnings.simplefilter("error", IndexCacheWarning)
        load_or_build_index(corpus, embedder, cache)
    assert embedder.calls["items"] == 0  # sound legacy shard: reused
    assert not (folder / "embeddings/shard-00000.json").exists()  # and still unchecked: no checksum made up
    for name in ("index-flat.faiss", "index-flat.json"):
        (folder / name).unlink()
    shard = folder / "embeddings" / "shard-00000.npy"
    np.save(shard, np.zeros_like(np.load(shard)))
    with pytest.warns(IndexCacheWarning, match="has no checksum in its metadata; re-embedding it"):
        index = load_or_build_index(corpus, embedder, cache)
    assert embedder.calls["items"] == 1 and _answers(index, embedder) == answers


# --- 7. a cache folder that cannot be written -----------------------------------------------------------

@pytest.fixture
def read_only(monkeypatch):
    """Every write under the given folder fails as on a read-only mount (root ignores chmod, so not chmod)."""
    import mmembed.storage as storage

    real = storage.tempfile.mkstemp
    blocked: list = []

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and any(str(dir).startswith(str(b)) for b in blocked):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(storage.tempfile, "mkstemp", mkstemp)
    return blocked.append


@pytest.mark.parametrize("state", ["corrupt", "missing"])
def test_a_read_only_cache_falls_back_to_memory_with_one_warning(corpus, built, read_only, state):
    cache, folder, answers = built
    if state == "corrupt":
        (folder / "index-flat.faiss").write_bytes(b"garbage")
    else:
        (folder / "index-flat.faiss").unlink()
        (folder / "embeddings" / "shard-00000.npy").unlink()
    read_only(cache)
    embedder = KeywordEmbedder(VOCAB)
    retriever = Retriever(corpus, embedder, cache_dir=cache)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hits = [retriever.search(Query(text=q), k=1).hits[0].item.id for q in QUERIES]
    assert hits == answers
    not_writable = [w for w in caught if issubclass(w.category, CacheNotWritableWarning)]
    assert len(not_writable) == 1
    assert "cannot be written (Read-only file system); the index is built in memory for this run" in str(
        not_writable[0].message)
    assert retriever.in_memory_only
    assert embedder.calls["items"] == (1 if state == "missing" else 0)  # loaded once, not on every query
    assert (folder / "index-flat.faiss").read_bytes() == b"garbage" if state == "corrupt" else True


def test_the_page_says_the_index_is_in_memory_without_naming_a_path(tmp_path, read_only):
    from ui_helpers import make_state

    from mmembed.ui import handlers as h

    state = make_state(tmp_path)
    read_only(tmp_path / "cache")
    out = h.search(state, "cat", None, "image", "natural", 3, False, "keyword", "fake-reranker")
    assert out["notes"] == [h.IN_MEMORY_NOTE]
    assert str(tmp_path) not in json.dumps(out)
    assert [hit["id"] for hit in out["first_stage"]["hits"]][:1] == ["t-cat"]


def test_the_cli_says_it_in_one_line(tmp_path, monkeypatch, capsys, read_only):
    from mmembed.cli import main
    from mmembed.embedders import EMBEDDERS

    corpus_path = write_corpus(tmp_path / "corpus")
    monkeypatch.setattr(EMBEDDERS, "get", lambda name, **options: KeywordEmbedder(VOCAB, name="mmembed-mini"))
    monkeypatch.setenv("MMEMBED_CORPUS", str(corpus_path))
    read_only(tmp_path / "cache")
    code = main(["search", "violin", "--target", "image", "-k", "1", "--embedder", "mmembed-mini", "--json",
                 "--cache-dir", str(tmp_path / "cache")])
    captured = capsys.readouterr()
    assert code == 0 and json.loads(captured.out)["first_stage"]["hits"][0]["id"] == "i-violin"
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"warning: the index cache {tmp_path / 'cache'}")
    assert "Read-only file system" in lines[0] and "Traceback" not in captured.err
