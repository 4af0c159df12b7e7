"""`python -m mmembed eval --failures FILE --compare EMBEDDER` on the workbench's known-ranking corpus."""

from __future__ import annotations

import csv
import json

import pytest
from fakes import DebiasedKeywordEmbedder, KeywordEmbedder
from retrieval_helpers import VOCAB, write_corpus
from test_workbench import ROWS

from mmembed.cli import main
from mmembed.embedders import EMBEDDERS


@pytest.fixture
def eval_env(tmp_path, monkeypatch):
    corpus_path = write_corpus(tmp_path / "corpus")
    queries = tmp_path / "corpus/queries.jsonl"
    queries.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    fakes = {"biased": KeywordEmbedder(VOCAB, text_bias=0.8, name="biased"),
             "debiased": DebiasedKeywordEmbedder(VOCAB, text_bias=0.8, name="debiased")}

    def get(name, **options):
        return fakes[name] if name in fakes else EMBEDDERS.info(name)  # unknown names raise as for real

    monkeypatch.setattr(EMBEDDERS, "get", get)
    monkeypatch.setenv("MMEMBED_CORPUS", str(corpus_path))
    monkeypatch.setenv("MMEMBED_QUERIES", str(queries))
    monkeypatch.setenv("MMEMBED_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def test_failures_file_holds_one_record_per_failing_query(eval_env, capsys):
    out_file = eval_env / "out" / "failures.jsonl"
    assert main(["eval", "--embedder", "biased", "--failures", str(out_file), "--failure-k", "5"]) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [(r["qid"], r["task"], r["model"], r["kinds"], r["stages"]["first"]["first_positive_rank"])
            for r in records] == [("q5", "t->t", "biased", ["missed"], 6),
                                  ("q1", "t->i", "biased", ["wrong-modality"], 3),
                                  ("q4", "t->(i,t)", "biased", ["wrong-modality"], 2)]
    assert records[1]["stages"]["first"]["rank1_modality"] == "text"
    assert "failures (missed in the top 5 or wrong modality at rank 1): 3" in captured.out
    assert "| overall | 5 | 40.0 | 80.0 | 100.0 |" in captured.out
    assert f"3 failure record(s) written to {out_file}" in captured.err


def test_compare_names_both_models_and_their_difference(eval_env, capsys):
    csv_file = eval_env / "failures.csv"
    assert main(["eval", "--embedder", "biased", "--compare", "debiased", "--failures", str(csv_file),
                 "--failure-k", "5"]) == 0
    out = capsys.readouterr().out
    assert "5 queries, biased, mode natural" in out and "5 queries, debiased, mode natural" in out
    assert "difference in recall, debiased minus biased (points)" in out
    assert "| overall | +20.0 | +0.0 | +0.0 |" in out
    rows = list(csv.DictReader(csv_file.open()))
    assert sorted((row["model"], row["qid"]) for row in rows) == [
        ("biased", "q1"), ("biased", "q4"), ("biased", "q5"), ("debiased", "q3"), ("debiased", "q5")]
    assert main(["eval", "--embedder", "biased", "--compare", "debiased", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["embedder"] == "biased" and data["recall"]["overall"]["R@1"] == 0.4  # the keys eval always had
    assert data["compare"]["embedder"] == "debiased" and data["compare"]["recall"]["overall"]["R@1"] == 0.6
    assert data["compare"]["recall_difference"]["overall"]["R@1"] == 0.2
    assert data["compare"]["difference_is"] == "debiased minus biased"


def test_compare_with_an_unknown_embedder_is_one_line(eval_env, capsys):
    assert main(["eval", "--embedder", "biased", "--compare", "nope"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: unknown embedder 'nope'") and "Traceback" not in err
