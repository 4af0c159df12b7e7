"""The page's event methods (DemoEvents) called directly: the reranked column fills batch by batch."""

from __future__ import annotations

import inspect

import pytest
from ui_helpers import TargetAwareReranker, make_state

gr = pytest.importorskip("gradio")

from mmembed.pipeline import SearchReport  # noqa: E402
from mmembed.ui import build_demo  # noqa: E402
from mmembed.ui.events import DemoEvents, as_function  # noqa: E402
from mmembed.ui.scratch import Scratch  # noqa: E402


class BatchedReranker(TargetAwareReranker):
    """Reports its scores batch by batch like MLLMReranker.score_batches: `first_batch`, then twos."""

    name = "batched"

    def score_batches(self, query, items, *, progress=None, first_batch=None):
        scores = self.score(query, items)
        start, size = 0, first_batch or 2
        while start < len(items):
            indices = list(range(start, min(start + size, len(items))))
            yield indices, [scores[i] for i in indices]
            start, size = indices[-1] + 1, 2


@pytest.fixture
def events(tmp_path):
    state = make_state(tmp_path)
    state.rerankers.register_instance("batched", BatchedReranker())
    return DemoEvents(state, Scratch(tmp_path / "scratch", 2**20))


def test_reranked_column_fills_batch_by_batch_then_shows_the_final_order(events):
    first = events.first("cat", None, "image", "natural", 4, "keyword", 6, progress=None)
    report = first[0]
    assert isinstance(report, SearchReport) and report.reranked.status == "pending"
    assert "Reranking…" in first[2]  # the second column waits while the first is shown
    steps = list(events.rerank(report, True, "batched", progress=None))
    assert len(steps) == 3  # batches of 2 (Pipeline.first_batch), 2, 2: after 2, after 4, then done
    partial = steps[0]
    # session, first column, plot, summary, status, list, JSON and export stay as they are until the end
    # (and the compare switch's M_rand report, column and box)
    assert [value == gr.skip() for value in partial] == [True, True, False, *[True] * 9]
    assert "Reranking… 2 of 6 candidates scored" in partial[2]
    assert partial[2].count('class="mm-card') == 2
    assert steps[1][2].count('class="mm-card') == 4 and "4 of 6" in steps[1][2]
    final = steps[-1]
    assert isinstance(final[0], SearchReport) and final[0].reranked.status == "done"
    assert [hit.item.id for hit in final[0].reranked.hits] == ["i-cat", "i-cat-mat", "t-cat", "it-cat"]
    assert final[2].count('class="mm-card') == 4 and "Reranking…" not in final[2]
    assert final[7]["reranked"]["status"] == "done"  # the JSON view gets the finished report only


def test_rerank_events_are_generators_and_the_api_answer_is_unchanged(events, tmp_path):
    assert inspect.isgeneratorfunction(as_function(events.rerank))
    fns = {fn.api_name: fn for fn in build_demo(events.state, examples=[]).fns.values()}
    assert inspect.isgeneratorfunction(fns["rerank"].fn) and inspect.isgeneratorfunction(fns["rerank_example"].fn)
    assert not inspect.isgeneratorfunction(fns["search"].fn)  # one JSON answer, the final order
    api = events.search_api("cat", None, "image", "natural", 4, True, "keyword", "batched", 6, progress=None)
    assert api["reranked"]["status"] == "done" and "scored" not in api["reranked"]
    assert [hit["id"] for hit in api["reranked"]["hits"]] == ["i-cat", "i-cat-mat", "t-cat", "it-cat"]


def test_a_cached_rerank_is_one_step(events):
    report = events.first("cat", None, "image", "natural", 4, "keyword", 6, progress=None)[0]
    list(events.rerank(report, True, "batched", progress=None))
    again = list(events.rerank(report, True, "batched", progress=None))
    assert len(again) == 1 and again[0][0].cached is True
    off = list(events.rerank(report, False, "batched", progress=None))
    assert len(off) == 1 and off[0][0].reranked.status == "off"
