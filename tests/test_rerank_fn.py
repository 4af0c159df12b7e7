"""rerank(): new order, ranks, movements, fusion weight, ties, top_k, empty input and bad rerankers."""

from __future__ import annotations

import pytest
from fakes import FakeReranker

from mmembed.rerankers import rerank
from mmembed.types import Hit, Item, Query, ValidationError


def _hits(texts: list[str], scores: list[float] | None = None) -> list[Hit]:
    scores = scores or [0.9 - 0.1 * i for i in range(len(texts))]
    pairs = enumerate(zip(texts, scores, strict=True))
    return [Hit(item=Item(f"d{i}", text=t), score=s, rank=i + 1) for i, (t, s) in pairs]


class FixedReranker:
    name = "fixed"

    def __init__(self, scores: list[float]) -> None:
        self.scores = scores
        self.seen: list[str] = []

    def score(self, query, items, *, progress=None):
        self.seen = [item.id for item in items]
        return list(self.scores[: len(items)]) if len(self.scores) >= len(items) else list(self.scores)


def test_rank_movements() -> None:
    hits = _hits(["dog", "red", "red cat", "cat"])
    out = rerank(Query(text="red cat"), hits, FakeReranker())
    assert [h.item.id for h in out] == ["d2", "d1", "d3", "d0"]  # 1.0, then 0.5 (tie: first-stage order), 0.0
    assert [h.rank for h in out] == [1, 2, 3, 4]
    assert [h.original_rank for h in out] == [3, 2, 4, 1]
    assert [h.movement for h in out] == [2, 0, 1, -3]
    assert [h.score for h in out] == [1.0, 0.5, 0.5, 0.0]
    assert [h.first_stage_score for h in out] == pytest.approx([0.7, 0.8, 0.6, 0.9])


def test_ties_keep_first_stage_order() -> None:
    out = rerank(Query(text="x"), _hits(["a", "b", "c"]), FixedReranker([0.3, 0.3, 0.3]))
    assert [h.item.id for h in out] == ["d0", "d1", "d2"]
    assert all(h.movement == 0 for h in out)


def test_fusion_weight() -> None:
    hits = _hits(["a", "b"], scores=[1.0, -1.0])  # first stage mapped to [0, 1]: 1.0 and 0.0
    reranker = FixedReranker([0.2, 0.6])
    pure = rerank(Query(text="x"), hits, reranker)
    assert [h.item.id for h in pure] == ["d1", "d0"]
    half = rerank(Query(text="x"), hits, reranker, fusion_weight=0.5)
    assert [h.item.id for h in half] == ["d0", "d1"]
    assert [h.score for h in half] == pytest.approx([0.5 * 1.0 + 0.5 * 0.2, 0.5 * 0.0 + 0.5 * 0.6])
    only_first = rerank(Query(text="x"), hits, reranker, fusion_weight=1.0)
    assert [h.score for h in only_first] == pytest.approx([1.0, 0.0])
    for bad in (-0.1, 1.5):
        with pytest.raises(ValidationError, match="fusion_weight"):
            rerank(Query(text="x"), hits, reranker, fusion_weight=bad)


def test_top_k_and_empty_input() -> None:
    reranker = FixedReranker([0.1, 0.9, 0.5])
    out = rerank(Query(text="x"), _hits(["a", "b", "c", "d", "e"]), reranker, top_k=3)
    assert reranker.seen == ["d0", "d1", "d2"]
    assert [h.item.id for h in out] == ["d1", "d2", "d0"]
    assert rerank(Query(text="x"), [], reranker) == []
    assert rerank(Query(text="x"), _hits(["a"]), reranker, top_k=0) == []


def test_score_count_mismatch_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="returned 1 scores for 3 items"):
        rerank(Query(text="x"), _hits(["a", "b", "c"]), FixedReranker([0.5]))


def test_a_rerankers_own_fusion_weight_is_the_default():
    from mmembed.rerankers.base import rerank as rerank_
    from mmembed.types import Hit, Item, Query

    class Opinionated:
        name = "opinionated"
        fusion_weight = 0.9  # trusts the first stage a lot

        def score(self, query, items, *, progress=None):
            return [1.0 if item.id == "b" else 0.0 for item in items]

    hits = [Hit(Item("a", text="a"), 0.9, 1), Hit(Item("b", text="b"), 0.5, 2)]
    query = Query(text="x")
    # fused: a = 0.9 * 0.95 + 0.1 * 0 = 0.855; b = 0.9 * 0.75 + 0.1 * 1 = 0.775 -> the first stage's order holds
    assert [h.item.id for h in rerank_(query, hits, Opinionated())] == ["a", "b"]
    assert [h.item.id for h in rerank_(query, hits, Opinionated(), fusion_weight=0.0)] == ["b", "a"]
    with pytest.raises(ValueError, match="fusion_weight must be in"):
        rerank_(query, hits, Opinionated(), fusion_weight=1.5)
