"""Pipeline: retrieval + reranking + bias metrics as one typed report, with the keyword fake embedder."""

from __future__ import annotations

import json

import pytest
from fakes import FakeReranker, KeywordEmbedder
from retrieval_helpers import VOCAB, write_corpus

from mmembed.corpus import load_mbeir_jsonl
from mmembed.pipeline import SNIPPET_CHARS, Pipeline, SearchReport, StageReport, movement_label, snippet
from mmembed.retriever import Retriever
from mmembed.types import Hit, Item, Query, ValidationError


class TargetAware(FakeReranker):
    """Keyword overlap, halved for candidates of the wrong modality (what a good MLLM reranker does)."""

    name = "target-aware"

    def score(self, query, items, *, progress=None):
        base = super().score(query, items, progress=progress)
        return [s if item.modality is query.target else s / 2 for s, item in zip(base, items, strict=True)]


class Streaming(TargetAware):
    """Scores in batches of two, reporting each (the MLLMReranker's `score_batches` protocol)."""

    name = "streaming"

    def __init__(self):
        super().__init__()
        self.first_batches = []

    def score_batches(self, query, items, *, progress=None, first_batch=None):
        self.first_batches.append(first_batch)
        scores = self.score(query, items)
        size = first_batch or 2
        start = 0
        while start < len(items):
            indices = list(range(start, min(start + size, len(items))))
            yield indices, [scores[i] for i in indices]
            start, size = indices[-1] + 1, 2


@pytest.fixture
def pipeline(tmp_path):
    corpus = load_mbeir_jsonl(write_corpus(tmp_path / "corpus"))
    retriever = Retriever(corpus, KeywordEmbedder(VOCAB, text_bias=0.8), cache_dir=tmp_path / "cache")
    return Pipeline(retriever, TargetAware())


def ids(hits):
    return [hit.item.id for hit in hits]


def test_search_reranks_and_lowers_the_wrong_modality_rate(pipeline):
    report = pipeline.search(Query(text="cat", target="image"), k=3, depth=5)
    assert isinstance(report, SearchReport)
    # text_bias puts the cat texts first; the reranker lifts the cat image asked for
    assert ids(report.first_stage) == ["t-cat", "it-cat", "i-cat"]
    assert len(report.candidates) == 5 and report.depth == 5
    assert report.reranked.status == "done" and report.reranked.reranker == "target-aware"
    assert ids(report.reranked.hits) == ["i-cat", "t-cat", "it-cat"]
    assert [hit.movement for hit in report.reranked.hits] == [2, -1, -1]
    assert report.wrong_modality_rate("first_stage") == pytest.approx(2 / 3)
    assert report.wrong_modality_rate("reranked") == pytest.approx(2 / 3)
    assert set(report.timings_ms) == {"first_stage", "rerank"}


def test_to_dict_is_the_api_shape_and_plain_json(pipeline):
    report = pipeline.search(Query(text="cat", target="image"), k=3, depth=5)
    data = report.to_dict(image_url=lambda item: f"/files/{item.id}" if item.image else None)
    json.dumps(data, allow_nan=False)  # NaN shares (modalities missing from the top-k) become numbers or null
    assert set(data) == {"query", "embedder", "instruction", "notes", "pool", "first_stage", "reranked", "cached",
                         "timings_ms"}
    assert data["query"] == {"text": "cat", "image": None, "modality": "text", "modality_label": "text",
                             "target": "image", "target_label": "image", "mode": "natural", "top_k": 3,
                             "rerank_depth": 5}
    assert data["embedder"] == {"requested": "keyword", "name": "keyword", "note": None}
    first, reranked = data["first_stage"], data["reranked"]
    assert [hit["id"] for hit in first["hits"]] == ["t-cat", "it-cat", "i-cat"]
    assert [hit["matches_target"] for hit in first["hits"]] == [False, False, True]
    assert first["hits"][2]["image"] == "images/cat.png" and first["hits"][2]["image_url"] == "/files/i-cat"
    assert first["hits"][0]["image_url"] is None and first["status"] == "done"
    assert [hit["movement_label"] for hit in reranked["hits"]] == ["↑2", "↓1", "↓1"]
    assert [hit["first_stage_rank"] for hit in reranked["hits"]] == [3, 1, 2]
    mix = {row["label"]: row for row in first["modality_mix"]}
    assert mix["image"]["count"] == 1 and mix["image"]["pool_share"] == pytest.approx(3 / 8)
    assert data["pool"] == {"name": "corpus", "size": 8, "mix": [
        {"modality": "text", "label": "text", "pool_share": 3 / 8},
        {"modality": "image", "label": "image", "pool_share": 3 / 8},
        {"modality": "image,text", "label": "image+text", "pool_share": 2 / 8}]}
    plain = report.to_dict()["first_stage"]["hits"]
    assert "image_url" not in plain[0] and plain[2]["image"] == "images/cat.png"
    named = report.to_dict(image_path=lambda item: "x/" + item.id if item.image else None)["first_stage"]["hits"]
    assert [hit["image"] for hit in named] == [None, "x/it-cat", "x/i-cat"]
    assert not any("image_file" in hit for hit in data["first_stage"]["hits"])  # no absolute path by default


def test_rerank_off_and_filtered_mode(pipeline):
    report = pipeline.search(Query(text="cat", target="image"), k=2, mode="filtered", rerank=False)
    assert ids(report.first_stage) == ["i-cat", "i-dog"]
    assert {hit.item.modality.value for hit in report.first_stage} == {"image"}
    assert report.reranked.status == "off" and report.reranked.hits == ()
    assert report.to_dict()["reranked"]["wrong_modality_rate"] is None
    plain = Pipeline(pipeline.retriever).search(Query(text="cat", target="image"), k=2)
    assert plain.reranked.status == "off" and plain.reranked.message == "No reranker was given."


def test_a_reranker_given_per_query_and_a_failing_one(pipeline):
    report = pipeline.search(Query(text="cat mat", target="image"), k=3, rerank=FakeReranker())
    assert report.reranked.reranker == "fake-reranker"

    class Broken(FakeReranker):
        name = "broken"

        def score(self, query, items, *, progress=None):
            raise RuntimeError("out of memory")

    failed = pipeline.search(Query(text="cat", target="image"), k=2, rerank=Broken())
    assert ids(failed.first_stage) == ["t-cat", "it-cat"]  # the first stage survives
    assert failed.reranked.status == "error" and failed.reranked.hits == ()
    assert failed.reranked.message == "Reranker 'broken' could not run: out of memory. The first stage is unaffected."


def test_rerank_steps_fill_the_column_batch_by_batch(pipeline):
    streaming = Streaming()
    first = pipeline.retrieve(Query(text="cat", target="image"), k=3, depth=5)
    assert first.reranked.status == "pending" and first.reranked.candidates == 5
    steps = list(pipeline.rerank_steps(first, streaming, first_batch=1))
    assert streaming.first_batches == [1]
    assert [step.reranked.status for step in steps] == ["running", "running", "done"]
    assert [step.reranked.scored for step in steps] == [1, 3, 5]
    # each step ranks the candidates scored so far among themselves; the cards never show an unscored one
    assert ids(steps[0].reranked.hits) == ["t-cat"]
    assert ids(steps[1].reranked.hits) == ["i-cat", "t-cat", "it-cat"]  # the first three candidates, reranked
    assert [hit.score for hit in steps[1].reranked.hits] == [1.0, 0.5, 0.5]
    assert [hit.rank for hit in steps[1].reranked.hits] == [1, 2, 3]
    assert steps[0].to_dict()["reranked"]["message"] == "Reranking… 1 of 5 candidates scored"
    assert steps[0].to_dict()["reranked"]["scored"] == 1
    final = steps[-1]
    assert ids(final.reranked.hits) == ids(pipeline.rerank(first).reranked.hits) == ["i-cat", "t-cat", "it-cat"]
    assert "scored" not in final.to_dict()["reranked"] and final.reranked.message is None
    assert ids(final.first_stage) == ids(first.first_stage)  # the first column never changes


def test_bad_arguments_are_refused(pipeline):
    with pytest.raises(ValidationError, match="k must be a positive integer, got 0"):
        pipeline.search(Query(text="cat"), k=0)
    with pytest.raises(ValidationError, match="unknown mode 'both'"):
        pipeline.search(Query(text="cat"), mode="both")
    with pytest.raises(ValidationError, match="unknown stage status 'maybe'"):
        StageReport("maybe")


def test_snippet_and_movement_labels():
    assert snippet("x" * SNIPPET_CHARS) == "x" * SNIPPET_CHARS
    assert snippet("word " * 100).endswith("…") and len(snippet("word " * 100)) <= SNIPPET_CHARS
    assert snippet(None) == ""
    item = Item("a", text="a")
    assert movement_label(Hit(item, 1.0, rank=1, original_rank=4), shown=3) == "new"
    assert movement_label(Hit(item, 1.0, rank=1, original_rank=3), shown=3) == "↑2"
    assert movement_label(Hit(item, 1.0, rank=3, original_rank=1), shown=3) == "↓2"
    assert movement_label(Hit(item, 1.0, rank=2, original_rank=2), shown=3) == "="
