"""The error-inspection workbench on a corpus whose rankings are known: the failure list is exactly the
queries the keyword fake gets wrong, and the figures agree with mmembed.evaluate."""

from __future__ import annotations

import csv
import io
import json
import threading

import pytest
from fakes import DebiasedKeywordEmbedder, KeywordEmbedder, ModalityReranker
from retrieval_helpers import VOCAB, write_corpus

from mmembed.corpus import load_mbeir_jsonl, load_queries
from mmembed.evaluate import evaluate
from mmembed.retriever import Retriever
from mmembed.workbench import (
    EvaluationCancelled,
    QueryFileError,
    ReportCache,
    WorkbenchReport,
    load_query_set,
    run_workbench,
)

# The biased fake (text_bias 0.8) puts text first for every text query. Hand-derived first stages:
#   q1 cat->image:        t-cat, it-cat, i-cat ...   rank-1 text: wrong modality; positive at 3
#   q2 violin->image:     i-violin first             correct
#   q3 dog->text:         t-dog first                correct
#   q4 apple->image+text: t-apple, it-apple ...      wrong modality; positive at 2
#   q5 "apple cat"->text, positive t-dog (no shared keyword): t-apple, t-cat, it-cat, it-apple, i-cat, t-dog
#                         rank-1 is text as asked, but the positive is 6th: missed at k=5
ROWS = [
    {"qid": "q1", "query_txt": "cat", "pos_cand_list": ["i-cat"], "task": "t->i", "target_modality": "image"},
    {"qid": "q2", "query_txt": "violin", "pos_cand_list": ["i-violin"], "task": "t->i", "target_modality": "image"},
    {"qid": "q3", "query_txt": "dog", "pos_cand_list": ["t-dog"], "task": "t->t", "target_modality": "text"},
    {"qid": "q4", "query_txt": "apple", "pos_cand_list": ["it-apple"], "task": "t->(i,t)",
     "target_modality": "image,text"},
    {"qid": "q5", "query_txt": "apple cat", "pos_cand_list": ["t-dog"], "task": "t->t", "target_modality": "text"},
]


@pytest.fixture
def bench(tmp_path):
    corpus = load_mbeir_jsonl(write_corpus(tmp_path / "corpus"))
    path = tmp_path / "corpus/queries.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    biased = Retriever(corpus, KeywordEmbedder(VOCAB, text_bias=0.8, name="biased"), cache_dir=tmp_path / "cache")
    debiased = Retriever(corpus, DebiasedKeywordEmbedder(VOCAB, text_bias=0.8, name="debiased"),
                         cache_dir=tmp_path / "cache")
    return load_query_set(path, corpus), biased, debiased, path, corpus


def ranks(report: WorkbenchReport, model: str, stage: str = "first") -> dict[str, tuple[tuple[str, ...], int | None]]:
    return {f.qid: (f.stages[stage].kinds, f.stages[stage].first_positive_rank) for f in report.failures(model=model)}


def test_failures_are_exactly_the_queries_the_fake_gets_wrong(bench):
    query_set, biased, _, _, _ = bench
    report = run_workbench(query_set, [biased], k=5)
    assert ranks(report, "biased") == {"q1": (("wrong-modality",), 3), "q4": (("wrong-modality",), 2),
                                       "q5": (("missed",), 6)}
    # worst first: the positive furthest down comes first
    assert [f.qid for f in report.failures()] == ["q5", "q1", "q4"]
    q1 = next(f for f in report.failures() if f.qid == "q1")
    outcome = q1.stages["first"]
    assert (outcome.rank1_id, outcome.rank1_modality, outcome.first_wrong_id, outcome.first_positive_id) == (
        "t-cat", "text", "t-cat", "i-cat")
    assert q1.target == "image" and q1.query_text == "cat" and q1.positives == ("i-cat",)
    assert [f.qid for f in report.failures(kind="missed")] == ["q5"]
    assert [f.qid for f in report.failures(task="t->(i,t)")] == ["q4"]
    assert report.stages == ("first",) and report.reranker is None


def test_figures_match_evaluate_and_the_confusion_counts_rank1_and_top5(bench):
    query_set, biased, _, _, _ = bench
    report = run_workbench(query_set, [biased], k=5)
    reference = evaluate(biased, list(query_set.queries), ks=(1, 5, 10))
    first = report.models[0].stages["first"]
    assert first.recall == reference.recall and first.wrong_modality == reference.wrong_modality
    assert first.recall["overall"] == {1: 0.4, 5: 0.8, 10: 1.0}
    confusion = report.models[0].confusion["first"]
    # rank 1: both image queries -> t-cat (text) and i-violin (image); text queries -> text; image+text -> text
    assert confusion[1] == {"text": {"text": 2, "image": 0, "image+text": 0},
                            "image": {"text": 1, "image": 1, "image+text": 0},
                            "image+text": {"text": 1, "image": 0, "image+text": 0}}
    # top 5 of q4 (apple -> image+text): t-apple, it-apple, t-dog, t-cat, it-cat
    assert confusion[5]["image+text"] == {"text": 3, "image": 0, "image+text": 2}
    assert sum(confusion[5]["image"].values()) == 10


def test_two_models_side_by_side_with_difference(bench):
    query_set, biased, debiased, _, _ = bench
    report = run_workbench(query_set, [biased, debiased], k=5)
    assert [m.name for m in report.models] == ["biased", "debiased"]
    # the debiased fake fixes q1 and q4 but puts the dog image first for "dog" -> text; q5 stays missed
    # (t-dog ties at score 0 with two images, ranks 6-8) and now starts with the cat image
    got = ranks(report, "debiased")
    assert set(got) == {"q3", "q5"} and got["q3"] == (("wrong-modality",), 2)
    assert got["q5"][0] == ("missed", "wrong-modality") and got["q5"][1] >= 6
    diff = report.difference()["first"]
    expected = evaluate(debiased, list(query_set.queries)).recall
    for task, by_k in report.models[0].stages["first"].recall.items():
        assert diff[task] == {k: pytest.approx(expected[task][k] - v) for k, v in by_k.items()}
    assert diff["overall"][1] == pytest.approx(0.2)  # 0.6 - 0.4
    data = json.loads(report.to_json())
    assert data["difference"]["models"] == ["debiased", "biased"]
    assert data["difference"]["first"]["overall"]["R@1"] == 0.2
    assert WorkbenchReport.from_dict(data).to_dict() == data


def test_reranked_stage_has_its_own_ranks_and_failures(bench):
    query_set, biased, _, _, _ = bench
    report = run_workbench(query_set, [biased], reranker=ModalityReranker(), depth=3, k=5)
    assert report.stages == ("first", "reranked") and report.depth == 3
    # images are pulled up within the top 3: q1 and q4 are fixed, q3's dog image overtakes t-dog,
    # q5's top 3 gains it-cat at rank 1 (image+text for a text query); t-dog stays 6th (beyond the depth)
    assert ranks(report, "biased", "reranked") == {"q1": ((), 1), "q3": (("wrong-modality",), 2),
                                                   "q4": ((), 1), "q5": (("missed", "wrong-modality"), 6)}
    assert {f.qid: f.kinds for f in report.failures()} == {
        "q1": ("wrong-modality",), "q3": ("wrong-modality",), "q4": ("wrong-modality",),
        "q5": ("missed", "wrong-modality")}
    run = report.models[0]
    assert run.stages["first"].recall["overall"][1] == 0.4 and run.stages["reranked"].recall["overall"][1] == 0.6


def test_csv_and_jsonl_exports(bench):
    query_set, biased, _, _, _ = bench
    report = run_workbench(query_set, [biased], reranker=ModalityReranker(), depth=3, k=5)
    rows = list(csv.DictReader(io.StringIO(report.failures_csv())))
    # worst final (reranked) rank first; ties broken by the first stage's rank (q1 was 3rd, q4 2nd)
    assert [row["qid"] for row in rows] == ["q5", "q3", "q1", "q4"]
    q1 = rows[2]
    assert (q1["task"], q1["model"], q1["kinds"], q1["first_first_positive_rank"], q1["reranked_first_positive_rank"],
            q1["first_rank1_modality"], q1["reranked_rank1_id"], q1["positives"]) == (
        "t->i", "biased", "wrong-modality", "3", "1", "text", "i-cat", "i-cat")
    lines = [json.loads(line) for line in report.failures_jsonl().splitlines()]
    assert lines[0]["qid"] == "q5" and lines[0]["kinds"] == ["missed", "wrong-modality"]
    assert lines[0]["stages"]["first"]["first_positive_rank"] == 6


def test_cached_per_query_file_models_mode_and_reranker(bench):
    query_set, biased, debiased, _, _ = bench
    cache = ReportCache()
    first = run_workbench(query_set, [biased], k=5, cache=cache)
    calls = biased.embedder.calls["queries"]
    again = run_workbench(query_set, [biased], k=5, cache=cache)
    assert biased.embedder.calls["queries"] == calls and again.to_dict() == first.to_dict()
    run_workbench(query_set, [biased], k=5, mode="filtered", cache=cache)  # another mode: computed
    assert biased.embedder.calls["queries"] == calls + len(ROWS)
    run_workbench(query_set, [biased], k=5, reranker=ModalityReranker(), depth=3, cache=cache)
    assert biased.embedder.calls["queries"] == calls + 2 * len(ROWS)
    run_workbench(query_set, [biased, debiased], k=5, cache=cache)  # another model set: computed
    assert debiased.embedder.calls["queries"] == len(ROWS)
    calls = biased.embedder.calls["queries"]
    # the same content under another name: cached, and the report carries the new name, not the first one's
    renamed = run_workbench(type(query_set)("mine.jsonl", query_set.digest, query_set.queries), [biased], k=5,
                            cache=cache)
    assert renamed.query_set == "mine.jsonl" and biased.embedder.calls["queries"] == calls


def test_progress_and_cancel(bench):
    query_set, biased, debiased, _, _ = bench
    seen = []
    run_workbench(query_set, [biased, debiased], progress=lambda d, t, what: seen.append((d, t, what)))
    steps = [s for s in seen if s[2].startswith("evaluating")]
    assert steps[0] == (1, 10, "evaluating biased") and steps[-1] == (10, 10, "evaluating debiased")
    stop = threading.Event()
    done = []

    def progress(d, t, what):
        done.append(d)
        if d == 2:
            stop.set()

    with pytest.raises(EvaluationCancelled):
        run_workbench(query_set, [biased], progress=progress, cancel=stop.is_set, cache=(cache := ReportCache()))
    assert max(done) == 2  # stopped after the second query
    assert not cache._data  # nothing partial is cached


def test_two_models_must_differ(bench):
    query_set, biased, _, _, _ = bench
    with pytest.raises(ValueError, match="two different embedders"):
        run_workbench(query_set, [biased, biased])


@pytest.mark.parametrize(("content", "message"), [
    (b"", "q.jsonl: the file is empty"),
    (b'{"qid": "a", "query_txt": "cat", "pos_cand_list": ["i-cat"]}\n{"qid": "b", "query_txt": "dog", '
     b'"pos_cand_list": ["nope"]}\n', "q.jsonl: line 2 (qid 'b'): positives not in the corpus: nope"),
    (b'{"qid": "a", "query_txt": "cat", "pos_cand_list": ["i-cat"]}\nnot json\n{"qid": "c"}\n',
     "q.jsonl: line 2: not valid JSON (Expecting value) (and 1 more problem)"),
    (b'{"qid": "a", "query_img_path": "../../../etc/passwd", "pos_cand_list": ["i-cat"]}\n',
     "q.jsonl: line 1: query_img_path '../../../etc/passwd' is outside the corpus folder"),
    (b'{"qid": "a", "query_img_path": "/etc/hostname", "pos_cand_list": ["i-cat"]}\n',
     "q.jsonl: line 1: query_img_path '/etc/hostname' is outside the corpus folder"),
    (b'{"qid": "a", "query_img_path": "images/none.png", "pos_cand_list": ["i-cat"]}\n',
     "q.jsonl: line 1 (qid 'a'): image file not found: images/none.png"),
    (b'{"qid": "a", "query_txt": "caf\xe9", "pos_cand_list": ["i-cat"]}\n', "q.jsonl: line 1: not UTF-8 text"),
])
def test_uploaded_query_file_gets_one_message_naming_the_line(bench, tmp_path, content, message):
    _, _, _, _, corpus = bench
    upload = tmp_path / "upload-tmp-123.jsonl"
    upload.write_bytes(content)
    with pytest.raises(QueryFileError) as info:
        load_query_set(upload, corpus, name="q.jsonl", max_bytes=5 * 2**20)
    assert str(info.value).startswith(message)
    assert str(tmp_path) not in str(info.value)  # no server path reaches the visitor


def test_uploaded_query_file_size_cap_and_images_relative_to_the_corpus(bench, tmp_path):
    _, biased, _, _, corpus = bench
    big = tmp_path / "big.jsonl"
    big.write_bytes(b" " * (5 * 2**20 + 1))
    with pytest.raises(QueryFileError, match=r"big.jsonl: 5.0 MB; query files are limited to 5 MB"):
        load_query_set(big, corpus, max_bytes=5 * 2**20)
    upload = tmp_path / "elsewhere" / "u.jsonl"
    upload.parent.mkdir()
    upload.write_text(json.dumps({"qid": "img", "query_img_path": "images/dog.png", "pos_cand_list": ["i-dog"],
                                  "task": "i->i", "target_modality": "image"}) + "\n")
    query_set = load_query_set(upload, corpus, name="u.jsonl", max_bytes=5 * 2**20)
    assert query_set.queries[0].query.image == corpus.root / "images/dog.png"
    report = run_workbench(query_set, [biased])
    assert report.failures() == [] and report.models[0].stages["first"].recall["i->i"][1] == 1.0


def test_query_set_digest_is_the_file_content(bench, tmp_path):
    query_set, _, _, path, corpus = bench
    copy = tmp_path / "copy.jsonl"
    copy.write_bytes(path.read_bytes())
    assert load_query_set(copy, corpus).digest == query_set.digest
    copy.write_bytes(path.read_bytes() + b"\n")
    assert load_query_set(copy, corpus).digest != query_set.digest
    assert len(load_queries(path, corpus)) == len(query_set.queries) == 5


def test_models_are_used_one_query_per_turn(bench):
    query_set, biased, _, _, _ = bench
    turns = []

    class Turn:
        def __enter__(self):
            turns.append(biased.embedder.calls["queries"])

        def __exit__(self, *exc):
            turns[-1] = biased.embedder.calls["queries"] - turns[-1]

    run_workbench(query_set, [biased], reranker=ModalityReranker(), depth=3, turn=Turn())
    assert turns == [1] * len(ROWS)  # one turn per query, each embedding exactly one query
