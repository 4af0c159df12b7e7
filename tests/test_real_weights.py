"""The published checkpoints, where a developer has them in the hub cache: `slow`, skipped otherwise.

    .venv/bin/python -m mmembed prefetch --all-defaults          # on a machine with network
    .venv/bin/python -m pytest -m slow tests/test_real_weights.py

The rest of the suite proves the code paths on tiny checkpoints; these check that the real weights load
through the same loaders and rank the sample corpus far better than chance. Nothing here ran on the
project's build machines (no hub access there); the thresholds are deliberately loose.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from mmembed.config import SAMPLE_CORPUS_DIR
from mmembed.types import Modality

pytestmark = pytest.mark.slow


def cached_snapshot(repo_id: str) -> Path | None:
    """The newest snapshot folder of `repo_id` in the developer's hub cache (see conftest), or None."""
    root = Path(os.environ["MMEMBED_TEST_REAL_HUB_CACHE"]) / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    found = sorted(root.glob("*/config.json"), key=lambda p: p.stat().st_mtime) if root.is_dir() else []
    return found[-1].parent if found else None


def require(repo_id: str) -> Path:
    folder = cached_snapshot(repo_id)
    if folder is None:
        pytest.skip(f"{repo_id} is not in the hub cache (python -m mmembed prefetch ...)")
    return folder


def gpu_or_skip() -> None:
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a GPU")


@pytest.fixture(scope="module")
def sample():
    from mmembed.corpus import load_corpus, load_queries

    corpus = load_corpus(SAMPLE_CORPUS_DIR / "corpus.jsonl")
    return corpus, load_queries(SAMPLE_CORPUS_DIR / "queries.jsonl", corpus)


def filtered_recall_at_10(embedder, sample) -> float:
    from mmembed.evaluate import evaluate
    from mmembed.retriever import Retriever

    corpus, queries = sample
    report = evaluate(Retriever(corpus, embedder), queries, ks=(10,), mode="filtered")
    return report.recall["overall"][10]


@pytest.mark.parametrize(("name", "repo_id"), [("clip-b32", "openai/clip-vit-base-patch32"),
                                               ("siglip-b16", "google/siglip-base-patch16-224")])
def test_clip_family_ranks_the_sample_corpus(name, repo_id, sample):
    from mmembed.embedders import EMBEDDERS

    embedder = EMBEDDERS.factory(name)(EMBEDDERS.info(name), model_id=str(require(repo_id)), device="cpu")
    # Chance in filtered mode is about 10 / 150 per query; a real CLIP is far above it.
    assert filtered_recall_at_10(embedder, sample) >= 0.3


def test_gme_ranks_the_sample_corpus(sample):
    gpu_or_skip()
    from mmembed.embedders import EMBEDDERS

    folder = require("Alibaba-NLP/gme-Qwen2-VL-2B-Instruct")
    embedder = EMBEDDERS.factory("gme-2b")(EMBEDDERS.info("gme-2b"), model_id=str(folder))
    assert filtered_recall_at_10(embedder, sample) >= 0.3


def test_mm_embed_loads_and_embeds():
    gpu_or_skip()
    from mmembed.embedders import EMBEDDERS
    from mmembed.types import Item, Query

    folder = require("nvidia/MM-Embed")
    embedder = EMBEDDERS.factory("mm-embed")(EMBEDDERS.info("mm-embed"), model_id=str(folder))
    items = [Item("dog", text="A dog is a domesticated carnivore kept as a pet."),
             Item("car", text="A car is a motor vehicle with four wheels.")]
    vectors = embedder.embed_items(items)
    query = embedder.embed_query(Query(text="a loyal pet animal", target=Modality.TEXT))
    assert vectors.shape == (2, 4096)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-3)
    assert float(vectors[0] @ query) > float(vectors[1] @ query)


def test_smolvlm_prefers_the_matching_candidate(sample):
    from mmembed.rerankers import RERANKERS
    from mmembed.types import Query

    folder = require("HuggingFaceTB/SmolVLM-256M-Instruct")
    reranker = RERANKERS.factory("smolvlm-256m")(RERANKERS.info("smolvlm-256m"), model_id=str(folder), device="cpu")
    corpus, queries = sample
    by_id = {item.id: item for item in corpus.items}
    ranks = []
    for query in [q for q in queries if q.task == "t->(i,t)"][:6]:
        positive = by_id[query.positives[0]]
        # four candidates of the target modality that are not positives, from the start of the pool
        others = [i for i in corpus.items if i.modality == Modality.IMAGE_TEXT and i.id not in query.positives][:4]
        scores = reranker.score(Query(text=query.query.text, target=query.query.target), [positive, *others])
        assert all(0.0 <= s <= 1.0 for s in scores)
        ranks.append(1 + sum(s > scores[0] for s in scores[1:]))
    assert np.mean(ranks) < 2.5  # random order would give 3.0 on average
