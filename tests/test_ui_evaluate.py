"""The Evaluate tab's handlers with the keyword fakes: the failure list is exactly the queries the fake gets wrong,
a failure opens in the Search tab with its positives marked, and a search answers during a long evaluation."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest
from fakes import DebiasedKeywordEmbedder, KeywordEmbedder, ModalityReranker
from retrieval_helpers import VOCAB, write_corpus
from test_workbench import ROWS
from ui_helpers import registry

from mmembed.config import Settings
from mmembed.corpus import load_mbeir_jsonl
from mmembed.types import MMEmbedError
from mmembed.ui import evaluate_handlers as eh
from mmembed.ui import handlers as h
from mmembed.ui.state import DemoState
from mmembed.workbench import EvaluationCancelled


class SlowKeywordEmbedder(KeywordEmbedder):
    """The biased fake, 50 ms per query: an evaluation of 40 queries takes about two seconds."""

    def embed_query(self, query):
        time.sleep(0.05)
        return super().embed_query(query)


@pytest.fixture
def state(tmp_path):
    corpus_path = write_corpus(tmp_path / "corpus")
    queries = tmp_path / "corpus" / "queries.jsonl"
    queries.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    settings = Settings(corpus=corpus_path, queries=queries, cache_dir=tmp_path / "cache", embedder="biased",
                        reranker="modality-reranker", fallback_embedder="biased")
    embedders = registry("embedder", biased=KeywordEmbedder(VOCAB, text_bias=0.8, name="biased"),
                         debiased=DebiasedKeywordEmbedder(VOCAB, text_bias=0.8, name="debiased"),
                         slow=SlowKeywordEmbedder(VOCAB, text_bias=0.8, name="slow"))
    return DemoState(settings, corpus=load_mbeir_jsonl(corpus_path), embedders=embedders,
                     rerankers=registry("reranker", **{"modality-reranker": ModalityReranker()}))


def evaluate(state, upload=None, embedder="biased", compare=eh.NO_COMPARE, rerank_on=False, k=5, cancel=None):
    request = eh.parse_eval_request(state, upload, embedder, compare, "natural", rerank_on, "modality-reranker", 3, k)
    return eh.run_evaluation(state, request, None, cancel)


def test_failures_are_exactly_what_the_fake_gets_wrong_and_compare_adds_the_second_model(state):
    report, query_set = evaluate(state)
    assert [(f.qid, f.kinds) for f in report.failures()] == [
        ("q5", ("missed",)), ("q1", ("wrong-modality",)), ("q4", ("wrong-modality",))]
    assert query_set.name == "queries.jsonl" and len(query_set.queries) == 5
    both, _ = evaluate(state, compare="debiased")
    assert [run.name for run in both.models] == ["biased", "debiased"]
    assert {f.qid for f in eh.filter_failures(both, "all", "all", "debiased")} == {"q3", "q5"}
    assert [f.qid for f in eh.filter_failures(both, "t->t", "missed", "all")] == ["q5", "q5"]
    assert [f.qid for f in eh.filter_failures(both, "t->i", "wrong-modality", "biased")] == ["q1"]


def test_bad_requests_and_uploads_get_one_clear_message(state, tmp_path):
    with pytest.raises(MMEmbedError, match="different second embedder"):
        evaluate(state, compare="biased")
    with pytest.raises(MMEmbedError, match="unknown embedder 'nope'"):
        evaluate(state, embedder="nope")
    upload = tmp_path / "mine.jsonl"
    upload.write_text(json.dumps(ROWS[0]) + "\n" + json.dumps({**ROWS[1], "pos_cand_list": ["sc-9"]}) + "\n")
    with pytest.raises(MMEmbedError) as info:
        evaluate(state, upload=str(upload))
    assert str(info.value) == "mine.jsonl: line 2 (qid 'q2'): positives not in the corpus: sc-9"


def test_a_failure_opens_in_the_search_tab_with_its_positives_marked(state, tmp_path):
    report, query_set = evaluate(state, rerank_on=True)
    found = eh.failure_search(state, report, query_set, "q1", "biased")
    assert (found["text"], found["target"], found["embedder"], found["reranker"], found["positives"]) == (
        "cat", "image", "biased", "modality-reranker", ["i-cat"])
    request = h.parse_request(found["text"], found["image"], found["target"], found["mode"], 5, found["embedder"],
                              found["depth"], state=state)
    first = h.first_stage(state, request)
    final = h.second_stage(state, first, "modality-reranker", True)
    payload = h.api_payload(state, final)
    assert payload["ground_truth"] == {"qid": "q1", "positives": ["i-cat"], "query_set": "queries.jsonl"}
    first_marks = [(hit["id"], hit["positive"]) for hit in payload["first_stage"]["hits"]]
    assert first_marks[:3] == [("t-cat", False), ("it-cat", False), ("i-cat", True)]
    assert [hit["id"] for hit in payload["reranked"]["hits"] if hit["positive"]] == ["i-cat"]
    assert payload["reranked"]["hits"][0]["id"] == "i-cat"  # the reranker pulled the image to the top
    details = h.item_details(state, final, "i-cat")
    assert details["positive_of"] == "q1"


def test_an_image_query_opened_from_a_failure_is_recognised_by_its_bytes(state, tmp_path):
    image = state.corpus["i-dog"].image
    copy = eh.copy_for_upload(str(image), tmp_path / "exports")
    assert Path(copy).name.endswith("dog.png") and Path(copy).parent == tmp_path / "exports" / "queries"
    assert hashlib.sha256(Path(copy).read_bytes()).digest() == hashlib.sha256(Path(image).read_bytes()).digest()


def test_cancel_stops_the_run_and_a_search_answers_during_a_long_evaluation(state):
    tokens = eh.CancelTokens()
    token, event = tokens.start()
    event.set()
    with pytest.raises(EvaluationCancelled):
        evaluate(state, cancel=tokens.event(token))
    many = [{**ROWS[i % 5], "qid": f"m{i}"} for i in range(40)]
    path = Path(state.settings.queries).with_name("many.jsonl")
    path.write_text("".join(json.dumps(row) + "\n" for row in many))
    state.pipeline("slow")  # index built before timing
    timings = {}

    def long_evaluation():
        started = time.perf_counter()
        evaluate(state, upload=str(path), embedder="slow")
        timings["evaluation"] = (started, time.perf_counter())

    worker = threading.Thread(target=long_evaluation)
    worker.start()
    time.sleep(0.3)  # the evaluation is under way
    asked = time.perf_counter()
    request = h.parse_request("violin", None, "image", "natural", 3, "slow", 3, state=state)
    report = h.first_stage(state, request)
    answered = time.perf_counter()
    worker.join()
    assert report.first_stage[0].item.id == "i-violin"
    assert answered < timings["evaluation"][1]  # answered while the evaluation was still running
    assert answered - asked < 1.0  # about one query's turn, not the evaluation's two seconds
