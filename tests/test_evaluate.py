"""Recall@k per task type and wrong-modality rates on a hand-made query set with known rankings."""

from __future__ import annotations

import json

import pytest
from fakes import KeywordEmbedder
from retrieval_helpers import VOCAB, write_corpus

from mmembed.corpus import load_mbeir_jsonl, load_queries
from mmembed.evaluate import evaluate
from mmembed.retriever import Retriever

ROWS = [
    {"qid": "q1", "query_txt": "cat", "pos_cand_list": ["i-cat"], "task": "t->i", "target_modality": "image"},
    {"qid": "q2", "query_txt": "violin", "pos_cand_list": ["i-violin"], "task": "t->i", "target_modality": "image"},
    {"qid": "q3", "query_txt": "dog", "pos_cand_list": ["t-dog"], "task": "t->t", "target_modality": "text"},
    {"qid": "q4", "query_txt": "apple", "pos_cand_list": ["i-dog", "it-apple"], "task": "t->(i,t)",
     "target_modality": "image,text"},
]


@pytest.fixture
def setup(tmp_path):
    corpus = load_mbeir_jsonl(write_corpus(tmp_path / "corpus"))
    (tmp_path / "q.jsonl").write_text("\n".join(json.dumps(r) for r in ROWS))
    retriever = Retriever(corpus, KeywordEmbedder(VOCAB, text_bias=0.8), cache_dir=tmp_path / "cache")
    return retriever, load_queries(tmp_path / "q.jsonl", corpus)


def test_recall_per_task_and_wrong_modality_natural(setup):
    retriever, queries = setup
    report = evaluate(retriever, queries, ks=(5, 1))
    # q1: i-cat ranks 3rd behind two text-bearing cat items; q2: the violin image is first;
    # q3: t-dog first; q4: t-apple (text, bias) first, it-apple second -> any positive counts at R@5.
    assert report.ks == (1, 5)
    assert report.recall["t->i"] == {1: 0.5, 5: 1.0}
    assert report.recall["t->t"] == {1: 1.0, 5: 1.0}
    assert report.recall["t->(i,t)"] == {1: 0.0, 5: 1.0}
    assert report.recall["overall"] == {1: 0.5, 5: 1.0}
    assert list(report.recall) == ["t->i", "t->t", "t->(i,t)", "overall"]
    assert report.query_counts == {"t->i": 2, "t->t": 1, "t->(i,t)": 1, "overall": 4}
    assert report.wrong_modality["image"][1] == 0.5  # q1's top hit is text, q2's is the image
    assert report.wrong_modality["image+text"][1] == 1.0
    data = json.loads(report.to_json())
    assert data["mode"] == "natural" and data["recall"]["t->i"] == {"R@1": 0.5, "R@5": 1.0}
    assert data["wrong_modality_rate"]["image"]["@1"] == 0.5 and data["queries"]["overall"] == 4
    table = report.to_markdown()
    assert "| t->i | 2 | 50.0 | 100.0 |" in table and "| overall | 4 | 50.0 | 100.0 |" in table
    assert "| image+text | 100.0% |" in table


def test_filtered_mode_has_no_wrong_modality_and_better_recall(setup):
    retriever, queries = setup
    report = evaluate(retriever, queries, ks=(1,), mode="filtered")
    assert report.recall["overall"] == {1: 1.0}
    assert all(by_k == {1: 0.0, 5: 0.0} for by_k in report.wrong_modality.values())


def test_progress_reports_each_query(setup):
    retriever, queries = setup
    seen = []
    evaluate(retriever, queries, ks=(1,), progress=lambda d, t, what: seen.append((what, d, t)))
    assert [s for s in seen if s[0] == "evaluating"] == [("evaluating", i, 4) for i in range(1, 5)]


def test_markdown_puts_a_second_stage_beside_the_first(setup):
    retriever, queries = setup
    natural = evaluate(retriever, queries, ks=(1,))
    filtered = evaluate(retriever, queries, ks=(1,), mode="filtered")
    table = natural.to_markdown(filtered)
    assert "| t->i | 2 | 50.0 → 100.0 |" in table and "| overall | 4 | 50.0 → 100.0 |" in table
    assert "| image | 50.0% → 0.0% | " in table
    assert natural.to_markdown() == natural.to_markdown(None) and " → " not in natural.to_markdown()
