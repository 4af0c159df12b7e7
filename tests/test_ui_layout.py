"""The Blocks the demo builds: inputs, defaults, the event chain, concurrency, queue and launch options.

These read the built page's configuration (what Gradio sends to the browser and how it schedules calls),
so a refactor that drops the webcam, un-chains the reranker or lets two model calls run at once fails here.
"""

from __future__ import annotations

import pytest
from ui_helpers import make_state

gr = pytest.importorskip("gradio")

from mmembed.config import Settings  # noqa: E402
from mmembed.ui import DemoState, build_demo, launch_options  # noqa: E402
from mmembed.ui.layout import MAX_UPLOAD, QUEUE_SIZE  # noqa: E402


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    state = make_state(tmp_path_factory.mktemp("ui-layout"))
    return build_demo(state), state


def props(demo, elem_id: str) -> dict:
    found = [c["props"] for c in demo.config["components"] if c["props"].get("elem_id") == elem_id]
    assert len(found) == 1, elem_id
    return found[0]


def fns_by_name(demo) -> dict:
    return {fn.api_name: fn for fn in demo.fns.values()}


def test_query_inputs_and_defaults(built):
    demo, _ = built
    assert props(demo, "query-image")["sources"] == ["upload", "clipboard", "webcam"]
    assert props(demo, "query-text")["max_length"] == 2000
    assert [value for _, value in props(demo, "target")["choices"]] == ["image", "text", "image+text"]
    assert [value for _, value in props(demo, "mode")["choices"]] == ["natural", "filtered"]
    assert props(demo, "top-k")["value"] == 10
    assert props(demo, "rerank-on")["value"] is True
    assert props(demo, "embedder")["value"] == "keyword"
    assert props(demo, "reranker")["value"] == "fake-reranker"


def test_unavailable_models_are_listed_marked_with_the_reason(tmp_path):
    state = DemoState(Settings(corpus=tmp_path / "corpus.jsonl", cache_dir=tmp_path / "cache", device="cpu"))
    demo = build_demo(state, examples=[])
    embedders = dict((value, label) for label, value in props(demo, "embedder")["choices"])
    assert embedders["mm-embed"] == "⊘ mm-embed — needs a GPU"
    assert embedders["mmembed-mini"] == "mmembed-mini"
    assert props(demo, "embedder")["value"] == "mmembed-mini"  # the offline fallback, said so in the status
    rerankers = dict((value, label) for label, value in props(demo, "reranker")["choices"])
    assert rerankers["llava-next-7b"] == "⊘ llava-next-7b — needs a GPU"
    status = props(demo, "status")["value"]
    assert "Using the offline model &#x27;mmembed-mini&#x27; because the configured embedder" in status
    assert state.loaded() == []  # nothing loaded yet: no corpus, no model


def test_rerank_is_chained_after_the_first_stage(built):
    demo, _ = built
    deps = {dep["api_name"]: dep for dep in demo.config["dependencies"]}
    first, rerank = deps["first_stage"], deps["rerank"]
    assert rerank["trigger_after"] == first["id"] and rerank["trigger_only_on_success"] is True
    assert deps["rerank_example"]["trigger_after"] == deps["example_first_stage"]["id"]
    assert deps["example_first_stage"]["trigger_after"] == deps["load_example"]["id"]
    ids = {c["props"].get("elem_id"): c["id"] for c in demo.config["components"]}
    assert first["show_progress_on"] == [ids["first-stage"]] and rerank["show_progress_on"] == [ids["reranked"]]


def test_heavy_calls_share_one_concurrency_group_and_the_queue_is_bounded(built):
    demo, _ = built
    fns = fns_by_name(demo)
    heavy = ["first_stage", "rerank", "example_first_stage", "rerank_example", "search", "compare"]
    assert {(fns[name].concurrency_id, fns[name].concurrency_limit) for name in heavy} == {("model", 1)}
    assert fns["details"].concurrency_id != "model"  # inspecting a result never waits behind a reranker
    assert demo._queue.max_size == QUEUE_SIZE == 32
    assert demo._queue.default_concurrency_limit == 2


def test_api_lists_search_first_and_hides_page_plumbing(built):
    demo, _ = built
    fns = fns_by_name(demo)
    public = sorted(name for name, fn in fns.items() if fn.api_visibility == "public")
    assert public == ["details", "evaluate", "first_stage", "rerank", "search"]
    assert all(fn.api_name for fn in fns.values())  # every event is named
    deps = {dep["api_name"]: dep for dep in demo.config["dependencies"]}
    ids = {c["props"].get("elem_id"): c["id"] for c in demo.config["components"]}
    assert deps["pick_embedder"]["targets"] == [(ids["embedder"], "select")]  # refuses unavailable picks
    assert deps["pick_reranker"]["targets"] == [(ids["reranker"], "select")]
    doc = fns["search"].fn.__doc__  # shown in "Use via API"
    assert "wrong_modality_rate" in doc and "target: image, text or image+text" in doc


def test_launch_options_cap_uploads_and_serve_only_corpus_images(built, tmp_path):
    from mmembed.ui.scratch import Scratch

    _, state = built
    options = launch_options(state, Scratch(tmp_path / "scratch", 2**20))
    assert options["max_file_size"] == MAX_UPLOAD == "10mb"
    assert options["allowed_paths"] == []  # no folder is handed to Gradio's file route
    # the corpus' own images by corpus-relative path, and visitors' exports by token: nothing else
    assert [route.path for route in options["app_kwargs"]["routes"]] == ["/corpus/{path:path}", "/download/{token}"]
    assert len(state.corpus_files()) == 6 and state.corpus_files().resolve("images/cat.png").name == "cat.png"
    assert state.corpus_files().resolve("corpus.jsonl") is None


def test_model_calls_get_the_zero_gpu_decorator_only_when_spaces_is_installed(tmp_path, monkeypatch):
    import sys
    import types

    heavy = {"first_stage", "rerank", "example_first_stage", "rerank_example", "search", "compare"}
    plain = fns_by_name(build_demo(make_state(tmp_path / "plain"), examples=[]))
    assert not any(getattr(plain[name].fn, "zero_gpu", False) for name in heavy)  # no `spaces`: unchanged

    def gpu(fn):
        fn.zero_gpu = True  # what a ZeroGPU wrapper would be: marked, still callable
        return fn

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=gpu))
    fns = fns_by_name(build_demo(make_state(tmp_path / "spaces"), examples=[]))
    # the Evaluate tab's model calls (its runs, and the search a failure opens) are decorated as well
    evaluate = {"evaluate", "evaluate_run", "failure_first_stage", "rerank_failure"}
    assert {name for name, fn in fns.items() if getattr(fn.fn, "zero_gpu", False)} == heavy | evaluate


def test_evaluate_tab_runs_apart_from_the_searches_and_a_failure_chains_the_search(built):
    demo, _ = built
    fns = fns_by_name(demo)
    # the evaluation has its own group: a search (group "model") is never queued behind a whole evaluation
    for name in ("evaluate_run", "evaluate"):
        assert (fns[name].concurrency_id, fns[name].concurrency_limit) == ("evaluate", 1)
    assert fns["first_stage"].concurrency_id == "model"
    deps = {dep["api_name"]: dep for dep in demo.config["dependencies"]}
    assert deps["evaluate_run"]["trigger_after"] == deps["evaluate_start"]["id"]
    assert deps["failure_first_stage"]["trigger_after"] == deps["open_failure"]["id"]
    assert deps["rerank_failure"]["trigger_after"] == deps["failure_first_stage"]["id"]
    doc = fns["evaluate"].fn.__doc__
    assert "Recall@1/5/10" in doc and "failures" in doc and "upload:" in doc
    assert props(demo, "eval-compare")["value"] == "(none)"
    assert [value for _, value in props(demo, "eval-kind")["choices"]] == ["all", "missed", "wrong-modality"]
