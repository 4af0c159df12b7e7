"""The on-disk IVF-PQ index: recall against exact search, filtered search, resume after a killed build,
stale or damaged folders rebuilt with a warning, and a folder that can be moved."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

faiss = pytest.importorskip("faiss")

from mmembed.disk_index import (  # noqa: E402
    DiskIndexWarning,
    build_disk_index,
    default_nlist,
    open_disk_index,
    sample_rows,
)

COUNT, DIM, SHARD = 2400, 16, 500
NLIST = 16


@pytest.fixture(scope="module")
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    centres = rng.standard_normal((40, DIM)).astype(np.float32)
    vectors = centres[rng.integers(40, size=COUNT)] + 0.4 * rng.standard_normal((COUNT, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = vectors[rng.choice(COUNT, 30, replace=False)] + 0.05 * rng.standard_normal((30, DIM)).astype(np.float32)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    modalities = (np.arange(COUNT) % 5 == 0).astype(np.int8)  # code 1 is rare: one row in five
    return vectors.astype(np.float32), queries.astype(np.float32), modalities


def build(folder: Path, vectors: np.ndarray, modalities: np.ndarray, read_shard=None, fingerprint=None):
    faiss.omp_set_num_threads(1)
    return build_disk_index(folder, count=len(vectors), dim=DIM, shard_size=SHARD,
                            read_shard=read_shard or (lambda s: vectors[s * SHARD:(s + 1) * SHARD]),
                            modalities=modalities, fingerprint=fingerprint or {"model": "synthetic"},
                            train_size=COUNT, nlist=NLIST)


@pytest.fixture(scope="module")
def built(data, tmp_path_factory) -> Path:
    vectors, _, modalities = data
    folder = tmp_path_factory.mktemp("disk") / "index"
    build(folder, vectors, modalities)
    return folder


def exact_top(vectors: np.ndarray, queries: np.ndarray, k: int, mask: np.ndarray | None = None) -> np.ndarray:
    scores = queries @ vectors.T
    if mask is not None:
        scores[:, ~mask] = -np.inf
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def test_recall_against_exact_search_and_exact_scores(data, built):
    vectors, queries, _ = data
    index = open_disk_index(built)
    assert len(index) == COUNT and index.dim == DIM
    scores, rows = index.search(queries, 10)
    truth = exact_top(vectors, queries, 10)
    recall = np.mean([len(set(r) & set(t)) / 10 for r, t in zip(rows, truth, strict=True)])
    assert recall >= 0.9
    # the returned scores are the exact (float16-stored) inner products, sorted best first
    recomputed = np.einsum("qd,qkd->qk", queries, vectors[rows].astype(np.float16).astype(np.float32))
    np.testing.assert_allclose(scores, recomputed, atol=1e-5)
    assert np.all(np.diff(scores, axis=1) <= 1e-7)


def test_rescoring_reads_rows_without_mapping_the_vectors_file(data, built):
    """The float16 rows come in by positioned reads: a memory map of the (pool-sized) vectors file grew the
    resident size by gigabytes of mapped file pages at 10M vectors (the kernel maps neighbours per fault)."""
    from mmembed.disk_index import RowFile

    vectors, queries, _ = data
    index = open_disk_index(built)
    index.search(queries, 10)
    maps = Path("/proc/self/maps")
    if maps.exists():
        assert "vectors.f16" not in maps.read_text()
    rows = RowFile(built / "vectors.f16", COUNT, DIM)
    picked = np.array([0, 7, COUNT - 1, 7])
    np.testing.assert_array_equal(rows[picked], vectors[picked].astype(np.float16))
    with pytest.raises(IndexError):
        rows[np.array([COUNT])]
    with pytest.raises(ValueError, match="expected"):
        RowFile(built / "vectors.f16", COUNT + 1, DIM)


def test_filtered_search_returns_only_the_modality_and_k_rows(data, built):
    vectors, queries, modalities = data
    index = open_disk_index(built)
    index.nprobe = 1  # a rare modality is missing from most single lists: the search must widen by itself
    _, rows = index.search(queries, 10, only=1)
    assert (rows >= 0).all()
    assert (modalities[rows] == 1).all()
    truth = exact_top(vectors, queries, 10, mask=modalities == 1)
    recall = np.mean([len(set(r) & set(t)) / 10 for r, t in zip(rows, truth, strict=True)])
    assert recall >= 0.8


def test_killed_build_resumes_at_the_first_missing_shard(data, tmp_path, built):
    vectors, queries, modalities = data
    calls: list[int] = []

    def dies_at_shard_3(shard: int) -> np.ndarray:
        calls.append(shard)
        if shard == 3 and len(calls) > 5:  # training reads all 5 shards first; encoding then dies at 3
            raise KeyboardInterrupt("killed")
        return vectors[shard * SHARD:(shard + 1) * SHARD]

    folder = tmp_path / "index"
    with pytest.raises(KeyboardInterrupt):
        build(folder, vectors, modalities, read_shard=dies_at_shard_3)
    assert sorted(p.name for p in (folder / "shards").iterdir()) == [f"shard-{s:05d}.faiss" for s in range(3)]

    calls.clear()

    def counting(shard: int) -> np.ndarray:
        calls.append(shard)
        return vectors[shard * SHARD:(shard + 1) * SHARD]

    resumed = build(folder, vectors, modalities, read_shard=counting)
    assert calls == [3, 4]  # the trained quantizer and shards 0-2 were reused
    assert not (folder / "shards").exists()
    _, rows = resumed.search(queries, 10)
    np.testing.assert_array_equal(rows, open_disk_index(built).search(queries, 10)[1])


def test_other_fingerprint_rebuilds_with_a_warning(data, tmp_path):
    vectors, _, modalities = data
    folder = tmp_path / "index"
    build(folder, vectors, modalities)
    with pytest.warns(DiskIndexWarning, match="built for other vectors"):
        build(folder, vectors[::-1].copy(), modalities, fingerprint={"model": "another"})


def test_damaged_lists_file_is_rebuilt_with_a_warning_and_folder_can_move(data, tmp_path, built):
    vectors, queries, modalities = data
    folder = tmp_path / "moved"
    shutil.copytree(built, folder)
    expected = open_disk_index(built).search(queries, 5)[1]
    np.testing.assert_array_equal(open_disk_index(folder).search(queries, 5)[1], expected)  # moved: still reads
    (folder / "lists.faiss").write_bytes(b"not an index")
    with pytest.warns(DiskIndexWarning, match="damaged"):
        rebuilt = build(folder, vectors, modalities)
    np.testing.assert_array_equal(rebuilt.search(queries, 5)[1], expected)


def test_wrong_query_dimension_is_a_clear_error(built):
    from mmembed.types import MMEmbedError

    with pytest.raises(MMEmbedError, match="dimension 3 but the index has 16"):
        open_disk_index(built).search(np.ones((1, 3), dtype=np.float32), 5)


def test_sizing_helpers():
    assert default_nlist(10_000_000) == 4096 and default_nlist(1) == 1
    rows = sample_rows(1000, 100)
    assert rows.size == 100 and np.all(np.diff(rows) > 0) and rows.max() < 1000
    np.testing.assert_array_equal(sample_rows(10, 50), np.arange(10))


def test_retriever_on_a_disk_index_answers_like_the_exact_index(tmp_path):
    """index_type ivfpq-disk through the same Retriever the app uses: natural and filtered search."""
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from fakes import KeywordEmbedder

    from mmembed.corpus import Corpus
    from mmembed.retriever import Retriever
    from mmembed.types import Item, Modality, Query

    words = ["cat", "dog", "apple", "car", "tree", "house", "boat", "moon"]
    items = []
    for i in range(1200):
        text = f"a {words[i % 8]} near a {words[(i * 5 + 3) % 8]}"
        image = None
        if i % 3 == 0:  # the keyword fake reads an image's keywords from its file name
            image = tmp_path / f"{words[(i * 3) % 8]}_{i}.png"
            image.write_bytes(b"")
        items.append(Item(f"d{i}", text=None if image is not None and i % 2 else text, image=image))
    corpus = Corpus(tuple(items), name="synthetic")
    embedder = KeywordEmbedder(words)
    disk = Retriever(corpus, embedder, cache_dir=tmp_path / "cache", index_type="ivfpq-disk")
    exact = Retriever(corpus, embedder, cache_dir=tmp_path / "cache", index_type="flat")
    assert disk.index.index_type == "ivfpq-disk" and len(disk.index) == 1200
    assert disk.index.ids == [item.id for item in corpus]
    for query, target, mode in [(Query(text="cat"), None, "natural"), (Query(text="moon"), "image", "filtered")]:
        got = disk.search(query, k=8, target=target, mode=mode)
        want = exact.search(query, k=8, target=target, mode=mode)
        np.testing.assert_allclose([h.score for h in got.hits], [h.score for h in want.hits], atol=2e-3)
        if mode == "filtered":
            assert {h.item.modality for h in got.hits} == {Modality.IMAGE}
