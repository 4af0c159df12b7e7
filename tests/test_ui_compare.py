"""The page's compare switch: the same query through the embedder's M_rand (declared in the registry), as a
column beside the first stage, with both models' wrong-modality rates in the modality-mix plot.

"fair" (the keyword fake without the query's text-ness term) declares the biased keyword fake as its M_rand, as
mmembed-mini declares mmembed-mini-rand: for "cat" -> image the M_rand puts the cat texts first, "fair" the image.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
from fakes import DebiasedKeywordEmbedder
from PIL import Image
from ui_helpers import VOCAB, TargetAwareReranker, make_state

gr = pytest.importorskip("gradio")

from mmembed.ui import build_demo  # noqa: E402
from mmembed.ui import handlers as h  # noqa: E402
from mmembed.ui.compare import twin_stage  # noqa: E402
from mmembed.ui.events import DemoEvents  # noqa: E402
from mmembed.ui.examples import load_examples  # noqa: E402
from mmembed.ui.plot import mix_frame, render_mix_chart  # noqa: E402
from mmembed.ui.scratch import Scratch  # noqa: E402

# DemoEvents.outputs: session, first, second, plot, bias, status, pick, JSON, export, M_rand report, its column, box
SESSION, FIRST, SECOND, PLOT, BIAS, TWIN, TWIN_COLUMN, TWIN_BOX = 0, 1, 2, 3, 4, 9, 10, 11


@pytest.fixture
def state(tmp_path):
    state = make_state(tmp_path)
    state.embedders.register_instance("fair", DebiasedKeywordEmbedder(VOCAB, text_bias=0.8, name="fair"),
                                      "debiased fake", random_negatives="keyword")
    state.rerankers.register_instance("target-aware", TargetAwareReranker())
    return state


@pytest.fixture
def events(state, tmp_path):
    return DemoEvents(state, Scratch(tmp_path / "scratch", 2**20))


def ids(column_html: str) -> list[str]:
    return re.findall(r'class="mm-card[^"]*" data-id="([^"]+)"', column_html)


def expected(state, embedder: str, image: str | None = None) -> dict:
    request = h.parse_request("cat", image, "image", "natural", 4, embedder, 4, state=state)
    return h.api_payload(state, h.first_stage(state, request))


def test_the_m_rand_twin_is_declared_in_the_registry_and_must_be_usable(state):
    assert state.random_negatives_of("fair") == "keyword"
    assert state.random_negatives_of("keyword") is None  # declares none
    assert state.random_negatives_of("nope") is None and state.random_negatives_of(None) is None
    state.embedders.register_instance("orphan", DebiasedKeywordEmbedder(VOCAB), random_negatives="not-registered")
    assert state.random_negatives_of("orphan") is None


def test_the_shipped_mmembed_mini_declares_its_m_rand():
    from mmembed.embedders import EMBEDDERS

    assert EMBEDDERS.info("mmembed-mini").random_negatives == "mmembed-mini-rand"
    assert EMBEDDERS.info("mmembed-mini-rand").random_negatives is None
    assert EMBEDDERS.info("clip-b32").random_negatives is None


def test_compare_on_shows_the_m_rand_column_and_both_rates(events, state):
    out = events.first("cat", None, "image", "natural", 4, "fair", 4, None, True, progress=None)
    fair, rand = expected(state, "fair"), expected(state, "keyword")
    assert out[TWIN].embedder == "keyword" and out[TWIN].reranked.status == "off"
    assert ids(out[TWIN_COLUMN]) == [hit["id"] for hit in rand["first_stage"]["hits"]]
    assert ids(out[FIRST]) == [hit["id"] for hit in fair["first_stage"]["hits"]]
    assert "M_rand (keyword) — trained with random negatives" in out[TWIN_COLUMN]
    assert "fair — modality-aware hard negatives" in out[FIRST]
    assert out[TWIN_BOX].visible is True
    rand_rate, fair_rate = rand["first_stage"]["wrong_modality_rate"], fair["first_stage"]["wrong_modality_rate"]
    assert rand_rate > fair_rate  # the fakes reproduce the bias the switch is there to show
    assert f"wrong modality: M_rand (keyword) {rand_rate:.0%} vs fair {fair_rate:.0%}" in out[PLOT]
    stages = re.findall(r'data-stage="([^"]+)"', out[PLOT])
    assert stages == ["Asked for", "Corpus pool", "M_rand first stage", "First stage"]  # reranking: pending
    assert "<span>M_rand first stage</span>" in out[BIAS] and f"{rand_rate:.0%}</b>" in out[BIAS]


def test_compare_off_leaves_the_page_as_it_was(events, state):
    on = events.first("cat", None, "image", "natural", 4, "fair", 4, None, True, progress=None)
    off = events.first("cat", None, "image", "natural", 4, "fair", 4, None, False, progress=None)
    payload = h.api_payload(state, off[SESSION])
    assert off[TWIN] is None and off[TWIN_BOX].visible is False
    assert off[PLOT] == render_mix_chart(payload) and "M_rand" not in off[PLOT] + off[BIAS] + off[FIRST]
    assert ids(off[FIRST]) == ids(on[FIRST])
    # an embedder with no M_rand: the switch changes nothing
    plain = events.first("cat", None, "image", "natural", 4, "keyword", 4, None, True, progress=None)
    assert plain[TWIN] is None and plain[TWIN_BOX].visible is False and "M_rand" not in plain[PLOT]


def test_the_reranked_page_keeps_the_m_rand_column_and_bar(events):
    first = events.first("cat", None, "image", "natural", 4, "fair", 4, None, True, progress=None)
    steps = list(events.rerank(first[SESSION], True, "target-aware", None, first[TWIN], progress=None))
    final = steps[-1]
    assert final[SESSION].reranked.status == "done" and final[TWIN] is first[TWIN]
    assert ids(final[TWIN_COLUMN]) == ids(first[TWIN_COLUMN])
    assert re.findall(r'data-stage="([^"]+)"', final[PLOT]) == ["Asked for", "Corpus pool", "M_rand first stage",
                                                                 "First stage", "After reranking"]
    for partial in steps[:-1]:  # batch by batch, only the reranked column changes
        assert partial[TWIN:] == (gr.skip(),) * 3


def test_flipping_the_switch_after_a_search_fills_or_drops_the_column(events, state):
    report = events.first("cat", None, "image", "natural", 4, "fair", 4, None, False, progress=None)[SESSION]
    twin, column, box, plot, bias, first = events.toggle_compare(report, True, None, progress=None)
    assert twin.embedder == "keyword" and box.visible is True
    assert ids(column) == [hit["id"] for hit in expected(state, "keyword")["first_stage"]["hits"]]
    assert "M_rand (keyword)" in plot and "M_rand first stage" in bias and "modality-aware" in first
    twin, column, box, plot, bias, first = events.toggle_compare(report, False, None, progress=None)
    assert twin is None and box.visible is False and "M_rand" not in plot + bias + first
    before = events.toggle_compare(None, True, None, progress=None)  # no search yet: the placeholder shows
    assert before[0] is None and before[2].visible is True and "Tick" in before[1]
    assert before[3:] == (gr.skip(),) * 3


def test_the_m_rand_column_shares_the_cache_but_not_the_visitors_file_name(state, tmp_path):
    alice = tmp_path / "alice-private" / "cat.png"
    alice.parent.mkdir()
    Image.new("RGB", (20, 20), (200, 120, 40)).save(alice)
    bob = tmp_path / "bob" / "cat.png"
    bob.parent.mkdir()
    shutil.copy(alice, bob)
    reports, runs = [], []
    for path in (alice, bob):
        request = h.parse_request("cat", str(path), "image", "natural", 4, "fair", 4, state=state)
        reports.append(h.first_stage(state, request))
        runs.append(twin_stage(state, reports[-1], True))
    assert runs[1].cached is True and runs[1].query.image == str(bob)
    assert "alice" not in json.dumps(h.api_payload(state, runs[1]))
    assert [hit.item.id for hit in runs[1].first_stage] == [hit.item.id for hit in runs[0].first_stage]
    bob.unlink()  # removed by the disk cap meanwhile: the visitor reads why
    with pytest.raises(h.UserInputError, match="upload it again"):
        twin_stage(state, reports[1], True)


def test_the_switch_shows_only_for_an_embedder_with_an_m_rand(state, events):
    demo = build_demo(state, examples=[])
    switch = next(c["props"] for c in demo.config["components"] if c["props"].get("elem_id") == "compare")
    assert switch["visible"] is False and switch["value"] is False  # the default "keyword" declares none
    assert events.compare_switch("fair").visible is True
    assert "keyword, trained with random negatives" in events.compare_switch("fair").info
    assert events.compare_switch("keyword").visible is False
    deps = {dep["api_name"]: dep for dep in demo.config["dependencies"]}
    ids_ = {c["props"].get("elem_id"): c["id"] for c in demo.config["components"]}
    assert deps["compare"]["targets"] == [(ids_["compare"], "input")]  # not "change": examples set it too
    fns = {fn.api_name: fn for fn in demo.fns.values()}
    assert (fns["compare"].concurrency_id, fns["compare"].concurrency_limit) == ("model", 1)


def test_the_compare_example_ticks_the_switch(state, tmp_path):
    rows = [{"qid": "a", "query_txt": "a cat", "query_modality": "text", "pos_cand_list": ["x"], "task": "t->i",
             "target_modality": "image"},
            {"qid": "b", "query_txt": "a dog", "query_modality": "text", "pos_cand_list": ["x"], "task": "t->i",
             "target_modality": "image"}]
    path = tmp_path / "queries.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    examples = load_examples(path, compare_qids=("b",))
    assert [(e.label, e.compare) for e in examples] == [("t→i: a cat", False),
                                                       ("t→i: a dog · M_rand vs mini", True)]
    assert examples[1].row() == ["a dog", None, "image", "natural", True]
    # a page whose embedder has no M_rand does not offer it
    demo = build_demo(state, examples=examples)
    labels = next(c["props"] for c in demo.config["components"] if c["type"] == "dataset")["sample_labels"]
    assert labels == ["t→i: a cat"]


def test_the_plot_frame_has_the_m_rand_row(events, state):
    first = events.first("cat", None, "image", "natural", 4, "fair", 4, None, True, progress=None)
    frame = mix_frame(h.api_payload(state, first[SESSION]), h.api_payload(state, first[TWIN]))
    stages = list(dict.fromkeys(frame["stage"]))
    assert stages[2].startswith("M_rand first stage (") and stages[3].startswith("First stage (")
    assert frame.groupby("stage")["percent"].sum().round(6).eq(100).all()


class UnloadableEmbedder(DebiasedKeywordEmbedder):
    """An M_rand whose weights cannot be read here (what a damaged assets/ folder does)."""

    def embed_items(self, items, *, progress=None):
        from mmembed.registry import BackendUnavailableError

        raise BackendUnavailableError("its weights could not be read")


def test_an_m_rand_that_cannot_run_leaves_the_search_standing(events, state, monkeypatch):
    state.embedders.register_instance("broken-rand", UnloadableEmbedder(VOCAB, name="broken-rand"))
    state.embedders.register_instance("fair2", DebiasedKeywordEmbedder(VOCAB, text_bias=0.8, name="fair2"),
                                      random_negatives="broken-rand")
    warnings = []
    monkeypatch.setattr(gr, "Warning", warnings.append)
    out = events.first("cat", None, "image", "natural", 4, "fair2", 4, None, True, progress=None)
    assert ids(out[FIRST]) == [hit["id"] for hit in expected(state, "fair2")["first_stage"]["hits"]]
    assert out[TWIN] is None and out[TWIN_BOX].visible is False
    assert warnings == ["The M_rand comparison could not run: its weights could not be read"]


def test_example_labels_fit_gradios_chip(tmp_path):
    """Gradio cuts an example label after 60 characters; ours fit, the query text giving way first."""
    long = "a very long description of a spanner for turning nuts and bolts in a garage"
    rows = [{"qid": "a", "query_txt": long, "query_modality": "text", "pos_cand_list": ["x"], "task": "t->i",
             "target_modality": "image"},
            {"qid": "b", "query_txt": long, "query_img_path": "q.png", "query_img_desc": "a spanner drawing",
             "query_modality": "image,text", "pos_cand_list": ["x"], "task": "(i,t)->t", "target_modality": "text"}]
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "q.png")
    path = tmp_path / "queries.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    labels = [e.label for e in load_examples(path, compare_qids=("a",))]
    assert all(len(label) <= 60 for label in labels), labels
    assert labels[0].startswith("t→i: a very long description") and labels[0].endswith("…")
    assert labels[1].startswith("(i,t)→t: a spanner drawing + “a very") and labels[1].endswith("…”")
    assert labels[2].endswith(" · M_rand vs mini") and labels[2].startswith("t→i: a very long")
