"""Distributed corpus embedding under torchrun (2 gloo processes on the CPU): the result equals the
one-process build, a killed rank's work resumes instead of restarting, and each rank reports its split."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmembed.corpus import load_corpus
from mmembed.distributed import DistContext, context_from_env, shards_of_rank
from mmembed.index import SHARD_SIZE, cache_folder, load_or_build_index

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
N_ITEMS = 3 * SHARD_SIZE + 17  # four shards: two per rank, the last one short
WORDS = ["cat", "dog", "apple", "car", "tree", "house", "boat", "moon"]


@pytest.fixture(scope="module")
def corpus_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("dist") / "corpus.jsonl"
    rows = [{"did": f"d{i:05d}", "txt": f"a {WORDS[i % 8]} and a {WORDS[(i * 3 + 1) % 8]} number {i}",
             "img_path": None, "modality": "text"} for i in range(N_ITEMS)]
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def torchrun(corpus: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               str(HERE / "dist_worker.py"), str(corpus), str(cache), *extra]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, cwd=PROJECT)


def single_process_index(corpus_file: Path, cache: Path):
    sys.path.insert(0, str(HERE))
    from dist_worker import VOCABULARY
    from fakes import KeywordEmbedder

    embedder = KeywordEmbedder(VOCABULARY)
    return load_or_build_index(load_corpus(corpus_file), embedder, cache), embedder


def shard_files(cache: Path) -> dict[str, np.ndarray]:
    return {p.name: np.load(p) for p in sorted(cache.glob("indexes/*/*/embeddings/shard-*.npy"))}


def test_context_and_split():
    assert context_from_env({"WORLD_SIZE": "1"}) is None
    ctx = context_from_env({"WORLD_SIZE": "3", "RANK": "2", "LOCAL_RANK": "0"})
    assert ctx == DistContext(rank=2, world_size=3, local_rank=0) and not ctx.is_main
    splits = [shards_of_rank(8, DistContext(r, 3, r)) for r in range(3)]
    assert splits == [[0, 3, 6], [1, 4, 7], [2, 5]]
    assert sorted(s for split in splits for s in split) == list(range(8))


def test_two_ranks_equal_one_process_and_report_their_split(corpus_file, tmp_path):
    dist_cache, single_cache = tmp_path / "dist", tmp_path / "single"
    run = torchrun(corpus_file, dist_cache)
    assert run.returncode == 0, run.stderr[-3000:]
    lines = sorted(re.findall(r"rank (\d)/2: embedded (\d+) of (\d+) items", run.stdout))
    assert lines == [("0", str(2 * SHARD_SIZE), str(N_ITEMS)), ("1", str(SHARD_SIZE + 17), str(N_ITEMS))]
    assert "rank 0 calls=2 index=yes" in run.stdout and "rank 1 calls=2 index=no" in run.stdout

    single, embedder = single_process_index(corpus_file, single_cache)
    dist_shards, one_shards = shard_files(dist_cache), shard_files(single_cache)
    assert list(dist_shards) == list(one_shards) == [f"shard-{s:05d}.npy" for s in range(4)]
    for name in one_shards:
        np.testing.assert_allclose(dist_shards[name], one_shards[name], atol=1e-6)
    # the index rank 0 saved is the one-process index: same ids in the same order, same answers
    corpus = load_corpus(corpus_file)
    from_dist = load_or_build_index(corpus, embedder, dist_cache)
    assert from_dist.ids == single.ids == [item.id for item in corpus]
    assert embedder.calls["items"] == 4  # only the single-process build embedded; the dist index was loaded
    queries = np.eye(from_dist.dim, dtype=np.float32)[:4]
    np.testing.assert_array_equal(from_dist.search(queries, 10)[1], single.search(queries, 10)[1])
    assert cache_folder(dist_cache, corpus.name, embedder.name, embedder.fingerprint).is_dir()


def test_a_killed_rank_resumes_where_it_stopped(corpus_file, tmp_path):
    cache = tmp_path / "cache"
    died = torchrun(corpus_file, cache, "--die-on-rank", "1")
    assert died.returncode != 0
    # rank 1 wrote shard 1 and died before shard 3; rank 0 (shards 0 and 2) may have been stopped midway
    left = set(shard_files(cache))
    assert "shard-00001.npy" in left and "shard-00003.npy" not in left
    resumed = torchrun(corpus_file, cache)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    calls = {int(rank): int(n) for rank, n in re.findall(r"rank (\d) calls=(\d+)", resumed.stdout)}
    # only the missing shards are embedded again: rank 1 just shard 3, rank 0 whichever of 0 and 2 it lacked
    assert calls[1] == 1
    assert calls[0] == len({"shard-00000.npy", "shard-00002.npy"} - left)
    assert len(shard_files(cache)) == 4
