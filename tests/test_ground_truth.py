"""Recognising an evaluation query by content: typed, picked from the examples, or a copy of its image."""

from __future__ import annotations

import shutil

from mmembed.corpus import EvalQuery
from mmembed.types import Query
from mmembed.ui.ground_truth import index_queries, lookup


def test_known_by_text_image_bytes_and_target(tmp_path):
    from retrieval_helpers import png

    png(tmp_path / "cat.png", (10, 20, 30))
    png(tmp_path / "dog.png", (200, 20, 30))
    queries = [EvalQuery("q1", Query(text="A red  Apple", target="image"), ("i-apple",), "t->i"),
               EvalQuery("q2", Query(image=tmp_path / "cat.png", target="text"), ("t-cat", "it-cat"), "i->t")]
    known = index_queries(queries, "queries.jsonl")
    assert lookup("a red apple", None, "image", known).positives == ("i-apple",)
    assert lookup("a red apple", None, "text", known) is None  # another target is another query
    copy = tmp_path / "upload" / "renamed.png"  # what Gradio hands the handler: a copy under another name
    copy.parent.mkdir()
    shutil.copy(tmp_path / "cat.png", copy)
    found = lookup(None, str(copy), "text", known)
    assert found.qid == "q2" and found.to_dict() == {"qid": "q2", "positives": ["t-cat", "it-cat"],
                                                      "query_set": "queries.jsonl"}
    assert lookup(None, str(tmp_path / "dog.png"), "text", known) is None  # other bytes
    session = index_queries([EvalQuery("mine", Query(text="a red apple", target="image"), ("x",), "t->i")], "up")
    assert lookup("a red apple", None, "image", session, known).qid == "mine"  # the session's set first
    assert lookup("a red apple", None, "image", None, known).qid == "q1"


def test_mark_payload_flags_positives_in_every_column_and_leaves_the_input_alone():
    from mmembed.ui.ground_truth import KnownQuery, mark_payload

    payload = {"query": {"text": "cat"}, "first_stage": {"hits": [{"id": "a"}, {"id": "b"}]},
               "reranked": {"status": "off", "hits": []}, "compare": {"hits": [{"id": "b"}]}}
    marked = mark_payload(payload, KnownQuery("q9", ("b",), "queries.jsonl"))
    assert [h["positive"] for h in marked["first_stage"]["hits"]] == [False, True]
    assert marked["compare"]["hits"][0]["positive"] is True and marked["reranked"]["hits"] == []
    assert marked["ground_truth"] == {"qid": "q9", "positives": ["b"], "query_set": "queries.jsonl"}
    assert "positive" not in payload["first_stage"]["hits"][0] and "ground_truth" not in payload
    unknown = mark_payload(payload, None)
    assert unknown["ground_truth"] is None and unknown["first_stage"]["hits"][1]["positive"] is False
