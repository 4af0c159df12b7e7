"""The Evaluate tab's HTML: figures, confusion shares and failure rows come from the report, escaped."""

from __future__ import annotations

import json
import re

import pytest
from fakes import DebiasedKeywordEmbedder, KeywordEmbedder
from retrieval_helpers import VOCAB, write_corpus
from test_workbench import ROWS

from mmembed.corpus import load_mbeir_jsonl
from mmembed.retriever import Retriever
from mmembed.ui.workbench_view import render_confusion, render_failures, render_summary
from mmembed.workbench import load_query_set, run_workbench


@pytest.fixture
def report_and_corpus(tmp_path):
    corpus = load_mbeir_jsonl(write_corpus(tmp_path / "corpus"))
    path = tmp_path / "corpus/queries.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in ROWS))
    retrievers = [Retriever(corpus, KeywordEmbedder(VOCAB, text_bias=0.8, name="biased<b>"), cache_dir=tmp_path),
                  Retriever(corpus, DebiasedKeywordEmbedder(VOCAB, text_bias=0.8, name="debiased"), cache_dir=tmp_path)]
    return run_workbench(load_query_set(path, corpus), retrievers, k=5), corpus


def test_summary_shows_both_models_and_the_difference(report_and_corpus):
    report, _ = report_and_corpus
    page = render_summary(report)
    assert "biased&lt;b&gt;" in page and "biased<b>" not in page  # model names are escaped
    overall = re.search(r'<tr class="mm-wb-overall">(.*?)</tr>', page).group(1)
    cells = re.findall(r"<td[^>]*>([^<]*)</td>", overall)
    # task, n, biased R@1/5/10, debiased R@1/5/10, delta R@1/5/10
    assert cells == ["overall", "5", "40.0", "80.0", "100.0", "60.0", "80.0", "100.0", "+20.0", "+0.0", "+0.0"]
    assert 'class="mm-delta mm-delta-up">+20.0' in page
    assert render_summary(None).startswith('<div class="mm-wb-summary mm-muted"')


def test_confusion_grid_holds_the_shares(report_and_corpus):
    report, _ = report_and_corpus
    page = render_confusion(report)
    grid = re.search(r'<table class="mm-wb-grid" data-model="biased&lt;b&gt;" data-stage="first" data-k="1">'
                     r"(.*?)</table>", page).group(1)
    image_row = re.search(r"<tr><th>image</th>(.*?)</tr>", grid).group(1)
    # the two image queries: rank 1 was text once (t-cat) and image once (i-violin)
    assert re.findall(r'data-share="([0-9.]+)"', image_row) == ["0.500", "0.500", "0.000"]
    assert "mm-wb-right" in image_row.split("</td>")[1]  # the asked-for column is marked


def test_failure_rows_carry_ids_and_thumbnails(report_and_corpus):
    report, corpus = report_and_corpus
    page = render_failures(report, corpus, report.failures(model="biased<b>"))
    qids = re.findall(r'class="mm-wb-row" data-qid="([^"]+)" data-model="biased&lt;b&gt;"', page)
    assert qids == ["q5", "q1", "q4"]
    q1 = page[page.index('data-qid="q1"'):page.index('data-qid="q4"')]
    assert 'data-id="t-cat"' in q1 and 'data-id="i-cat"' in q1  # first wrong result, first positive
    assert q1.count("data:image/jpeg;base64,") == 1  # i-cat's picture; t-cat is text
    assert "first stage: #3" in q1
    assert "No failure matches" in render_failures(report, corpus, [])
