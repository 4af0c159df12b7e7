"""The demo's event functions, called directly with the keyword fake embedder and fake rerankers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fakes import KeywordEmbedder
from ui_helpers import VOCAB, TargetAwareReranker, make_state, registry

from mmembed.config import Settings
from mmembed.corpus import load_mbeir_jsonl
from mmembed.types import MMEmbedError
from mmembed.ui import handlers as h
from mmembed.ui.examples import load_examples
from mmembed.ui.plot import mix_frame, render_mix_chart, stage_order
from mmembed.ui.render import render_bias_summary, render_column, render_details, render_status
from mmembed.ui.state import BackendNotUsable, DemoState, parse_licences


@pytest.fixture
def state(tmp_path):
    state = make_state(tmp_path)
    state.rerankers.register_instance("target-aware", TargetAwareReranker())
    return state


def ids(stage):
    return [hit["id"] for hit in stage["hits"]]


def test_first_stage_shows_modality_bias(state):
    out = h.search(state, "cat", None, "image", "natural", 4, False, "keyword", "fake-reranker")
    first = out["first_stage"]
    # text_bias pulls the cat texts above the cat image that was asked for
    assert ids(first) == ["t-cat", "it-cat", "t-cat-mat", "i-cat"]
    assert [hit["rank"] for hit in first["hits"]] == [1, 2, 3, 4]
    assert [hit["matches_target"] for hit in first["hits"]] == [False, False, False, True]
    assert first["wrong_modality_rate"] == pytest.approx(0.75)
    mix = {row["label"]: row for row in first["modality_mix"]}
    assert mix["text"]["count"] == 2 and mix["text"]["share"] == pytest.approx(0.5)
    assert mix["image"]["share"] == pytest.approx(0.25) and mix["image+text"]["share"] == pytest.approx(0.25)
    assert mix["text"]["pool_share"] == pytest.approx(0.4)
    assert mix["text"]["skew"] == pytest.approx(0.5 / 0.4)
    assert out["query"] == {"text": "cat", "image": None, "modality": "text", "modality_label": "text",
                            "target": "image", "target_label": "image", "mode": "natural", "top_k": 4,
                            "rerank_depth": 4}
    assert out["embedder"] == {"requested": "keyword", "name": "keyword", "note": None}
    assert out["reranked"]["status"] == "off"
    assert "Reranking is off" in out["reranked"]["message"]
    hit = first["hits"][3]
    assert hit["image"] == "images/cat.png" and "image_file" not in hit  # corpus-relative only: no server path
    assert hit["image_url"] == "/corpus/images/cat.png"
    assert first["hits"][0]["image_url"] is None  # a text has no image


def test_reranking_moves_items_and_lowers_the_wrong_modality_rate(state):
    out = h.search(state, "cat", None, "image", "natural", 4, True, "keyword", "target-aware", depth=6)
    reranked = out["reranked"]
    assert reranked["status"] == "done" and reranked["reranker"] == "target-aware"
    assert ids(reranked) == ["i-cat", "i-cat-mat", "t-cat", "it-cat"]
    assert [hit["movement_label"] for hit in reranked["hits"]] == ["↑3", "new", "↓2", "↓2"]
    assert [hit["first_stage_rank"] for hit in reranked["hits"]] == [4, 5, 1, 2]
    assert [hit["movement"] for hit in reranked["hits"]] == [3, 3, -2, -2]
    assert reranked["hits"][0]["first_stage_score"] == pytest.approx(out["first_stage"]["hits"][3]["score"])
    assert out["first_stage"]["wrong_modality_rate"] == pytest.approx(0.75)
    assert reranked["wrong_modality_rate"] == pytest.approx(0.5)
    assert set(out["timings_ms"]) == {"model_and_index_load", "first_stage", "rerank"}


def test_fake_reranker_keeps_tied_order(state):
    out = h.search(state, "cat mat", None, "image", "natural", 3, True, "keyword", "fake-reranker", depth=3)
    assert ids(out["first_stage"]) == ["t-cat-mat", "i-cat-mat", "t-cat"]
    assert ids(out["reranked"]) == ["t-cat-mat", "i-cat-mat", "t-cat"]
    assert [hit["score"] for hit in out["reranked"]["hits"]] == [1.0, 1.0, 0.5]
    assert [hit["movement_label"] for hit in out["reranked"]["hits"]] == ["=", "=", "="]


def test_filtered_mode_returns_only_the_target(state):
    out = h.search(state, "cat", None, "image", "filtered", 2, False, "keyword", "fake-reranker")
    assert ids(out["first_stage"]) == ["i-cat", "i-cat-mat"]  # natural mode ranks two cat texts first
    assert {hit["modality"] for hit in out["first_stage"]["hits"]} == {"image"}
    assert out["first_stage"]["wrong_modality_rate"] == 0.0


def test_unavailable_reranker_explains_and_first_stage_still_works(tmp_path):
    corpus_path = make_state(tmp_path).settings.corpus
    settings = Settings(corpus=corpus_path, cache_dir=tmp_path / "cache", embedder="keyword")
    state = DemoState(settings, corpus=load_mbeir_jsonl(corpus_path),  # the real reranker registry
                      embedders=registry("embedder", keyword=KeywordEmbedder(VOCAB, text_bias=0.8)))
    out = h.search(state, "cat", None, "image", "natural", 4, True, "keyword", "smolvlm-256m")
    assert ids(out["first_stage"]) == ["t-cat", "it-cat", "t-cat-mat", "i-cat"]
    assert out["reranked"]["status"] == "unavailable"
    assert out["reranked"]["hits"] == []
    assert "smolvlm-256m" in out["reranked"]["message"]
    assert "weights not downloaded" in out["reranked"]["message"]
    assert "prefetch --reranker smolvlm-256m" in out["reranked"]["message"]


def test_a_failing_reranker_does_not_break_the_query(state):
    class Broken:
        name = "broken"

        def score(self, query, items, *, progress=None):
            raise RuntimeError("out of memory")

    state.rerankers.register_instance("broken", Broken())
    out = h.search(state, "cat", None, "image", "natural", 2, True, "keyword", "broken")
    assert ids(out["first_stage"]) == ["t-cat", "it-cat"]
    assert out["reranked"]["status"] == "error"
    assert out["reranked"]["message"].startswith("Reranker 'broken' could not run: out of memory")


def test_repeated_queries_are_served_from_the_result_cache(state):
    embedder = state.embedders.get("keyword")
    first = h.search(state, "cat", None, "image", "natural", 4, True, "keyword", "target-aware", 6)
    calls = dict(embedder.calls)
    again = h.search(state, "cat", None, "image", "natural", 4, True, "keyword", "target-aware", 6)
    assert embedder.calls == calls  # neither the query nor the corpus was embedded again
    assert again["reranked"]["hits"] == first["reranked"]["hits"]
    assert first["cached"] is False and again["cached"] is True
    # a cache hit reports its own (lookup) time, not the first run's model load and rerank
    assert set(again["timings_ms"]) == {"first_stage", "rerank"} and again["timings_ms"]["first_stage"] < 50
    assert "served from the result cache" in render_status(again)
    assert "served from the result cache" not in render_status(first)
    other = h.search(state, "dog", None, "image", "natural", 4, False, "keyword", "target-aware")
    assert embedder.calls["queries"] == calls["queries"] + 1
    assert other["first_stage"]["hits"][0]["id"] == "t-dog"


def test_details_show_attribution_and_both_stages(state):
    request = h.parse_request("cat", None, "image", "natural", 4, "keyword", 6, state=state)
    session = h.second_stage(state, h.first_stage(state, request), "target-aware", True)
    details = h.item_details(state, session, "i-cat")
    assert details["meta"] == {"source": "test:cat", "license": "CC0", "credit": "Test Author"}
    assert details["first_stage"]["rank"] == 4 and details["reranked"]["rank"] == 1
    assert details["image"] == "images/cat.png" and "image_path" not in details
    html = render_details(details)
    assert "Test Author" in html and "CC0" in html and "#4 · score" in html and "#1 · score" in html
    assert h.result_choices(session)[-1] == ("new #2 i-cat-mat (image)", "i-cat-mat")
    dog = render_details(h.item_details(state, session, "t-dog"))
    assert "<th>after reranking</th><td>not in its top-k</td>" in dog
    unreranked = h.second_stage(state, h.first_stage(state, request), "target-aware", False)
    assert "<th>after reranking</th><td>reranking was off</td>" in render_details(
        h.item_details(state, unreranked, "i-cat"))
    assert h.item_details(state, session, None) is None
    with pytest.raises(h.UserInputError, match="No result 'nope'"):
        h.item_details(state, session, "nope")


def test_export_writes_the_same_json_the_api_returns(state, tmp_path):
    from mmembed.ui.scratch import Scratch

    scratch = Scratch(tmp_path / "export", 2**20)
    with pytest.raises(h.UserInputError, match="Run a search first"):
        h.export_json(state, None, scratch)
    request = h.parse_request("cat", None, "image", "natural", 4, "keyword", 6, state=state)
    session = h.second_stage(state, h.first_stage(state, request), "target-aware", True)
    path = h.export_json(state, session, scratch)
    assert path.parent == scratch.exports
    exported = json.loads(path.read_text(encoding="utf-8"))
    api = h.search(state, "cat", None, "image", "natural", 4, True, "keyword", "target-aware", 6)
    assert exported["cached"] is False and api["cached"] is True  # the API call repeats the query: a cache hit
    def stable(payload):
        return {k: v for k, v in payload.items() if k not in {"timings_ms", "cached"}}

    assert stable(exported) == stable(api)
    assert exported["reranked"]["hits"][0]["movement_label"] == "↑3"
    assert not list((tmp_path / "export").glob("*.tmp"))


def test_rendered_columns_escape_text_and_mark_modality(state):
    out = h.search(state, "cat mat", None, "image", "natural", 3, True, "keyword", "target-aware", 6)
    first = render_column(out["first_stage"], "image", placeholder="-", stage_id="first", image_file=state.image_file)
    assert "&lt;b&gt;mat&lt;/b&gt; &amp; purred" in first and "<b>mat</b>" not in first
    assert first.count('class="mm-card mm-miss"') == 2 and first.count('class="mm-card mm-match"') == 1
    assert "2/3</b> not image" in first and "(67% wrong modality)" in first
    assert 'src="data:image/jpeg;base64,' in first  # inline thumbnails: no file route needed
    second = render_column(out["reranked"], "image", placeholder="-", stage_id="reranked")
    assert "mm-move-up" in second and "↑" in second
    empty = render_column({"status": "unavailable", "message": "weights <missing>", "hits": []}, "image",
                          placeholder="-", stage_id="reranked")
    assert "weights &lt;missing&gt;" in empty
    summary = render_bias_summary(out)
    assert "67%" in summary and "The pool is 40% image" in summary


def test_plot_frame_has_target_pool_and_both_stages(state):
    out = h.search(state, "cat", None, "image", "natural", 4, True, "keyword", "target-aware", 6)
    frame = mix_frame(out)
    assert stage_order(frame) == ["Asked for", "Corpus pool", "First stage (75% wrong)", "After reranking (50% wrong)"]
    table = {(row.stage, row.modality): row.percent for row in frame.itertuples()}
    assert table[("Asked for", "image")] == 100.0 and table[("Asked for", "text")] == 0.0
    assert table[("Corpus pool", "image+text")] == pytest.approx(20.0)
    assert table[("First stage (75% wrong)", "text")] == pytest.approx(50.0)
    assert table[("After reranking (50% wrong)", "image")] == pytest.approx(50.0)
    # the target leads every bar, so the right-coloured share starts at the left edge of each row
    assert frame[frame["stage"] == "Corpus pool"]["modality"].tolist() == ["image", "text", "image+text"]
    text_target = mix_frame({**out, "query": {**out["query"], "target": "text"}})
    assert text_target[text_target["stage"] == "Asked for"]["modality"].tolist() == ["text", "image", "image+text"]
    assert mix_frame(None).empty
    chart = render_mix_chart(out)
    assert chart.count('class="mm-bar-row"') == 4
    assert 'data-modality="text" data-percent="50.0"' in chart and "75% wrong" in chart and "50% wrong" in chart
    image_at = chart.index('data-modality="image" data-percent="25.0"')
    assert image_at < chart.index('data-modality="text" data-percent="50.0"')
    assert "image (asked for)</span>" in chart
    assert "appears here" in render_mix_chart(None)


def test_registry_state_falls_back_to_the_offline_model_and_refuses_unavailable_ones(tmp_path):
    state = DemoState(Settings(corpus=tmp_path / "corpus.jsonl", cache_dir=tmp_path / "cache"))
    name, note = state.default_embedder()
    assert name == "mmembed-mini"
    assert "'clip-b32' is unavailable here (weights not downloaded (offline))" in note
    assert state.embedder_note("mmembed-mini") == note  # shown with every result the fallback produces
    assert state.embedder_note("siglip-b16") is None
    labels = {choice.name: choice.label for choice in state.embedder_choices()}
    assert labels["mm-embed"] == "⊘ mm-embed — needs a GPU"
    assert labels["mmembed-mini"] == "mmembed-mini"
    with pytest.raises(BackendNotUsable, match="The embedder 'mm-embed' can't be used here: needs a GPU"):
        h.parse_request("cat", None, "image", "natural", 5, "mm-embed", state=state)
    with pytest.raises(BackendNotUsable, match="unknown embedder 'nope'"):
        h.parse_request("cat", None, "image", "natural", 5, "nope", state=state)
    assert state.corpus_root() == tmp_path and state.allowed_paths() == []  # no folder is served whole


def test_examples_cover_each_task_type_in_order(tmp_path):
    from PIL import Image

    Image.new("RGB", (8, 8), "red").save(tmp_path / "q.png")
    rows = [
        {"qid": "1", "query_txt": "a dog", "query_modality": "text", "pos_cand_list": ["x"], "task": "t->t",
         "target_modality": "text"},
        {"qid": "2", "query_txt": "a cat", "query_modality": "text", "pos_cand_list": ["x"], "task": "t->i",
         "target_modality": "image"},
        {"qid": "3", "query_img_path": "q.png", "query_modality": "image", "pos_cand_list": ["x"], "task": "i->t",
         "target_modality": "text"},
        {"qid": "4", "query_txt": "another cat", "query_modality": "text", "pos_cand_list": ["x"], "task": "t->i",
         "target_modality": "image"},
        {"qid": "5", "query_txt": "What is this?", "query_img_path": "q.png", "query_img_desc": "a red square drawing",
         "query_modality": "image,text", "pos_cand_list": ["x"], "task": "(i,t)->t", "target_modality": "text"},
    ]
    path = tmp_path / "queries.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    examples = load_examples(path)
    # labels say what the query is; an image without a description is "an image", never its file name
    assert [e.label for e in examples] == ["t→i: a cat", "t→t: a dog", "i→t: an image",
                                           "(i,t)→t: a red square drawing + “What is this?”"]
    assert examples[0].row() == ["a cat", None, "image", "natural", False]
    rows[2]["query_img_desc"] = "a frog drawing"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    assert load_examples(path)[2].label == "i→t: a frog drawing"
    assert examples[2].image == str((tmp_path / "q.png").resolve()) and examples[2].target == "text"
    fallback = load_examples(tmp_path / "missing.jsonl")
    assert [e.target for e in fallback] == ["image", "text"]


def test_missing_corpus_is_a_clear_error(tmp_path):
    state = DemoState(Settings(corpus=tmp_path / "nowhere" / "corpus.jsonl", cache_dir=tmp_path / "cache"),
                      embedders=registry("embedder", keyword=KeywordEmbedder(VOCAB)))
    with pytest.raises(MMEmbedError) as caught:
        h.search(state, "cat", None, "image", "natural", 3, False, "keyword", None)
    assert str(caught.value) == ("The corpus could not be loaded (corpus.jsonl was not found or cannot be read); set "
                                 "MMEMBED_CORPUS to a corpus.jsonl. The server log has the details.")  # no path


def test_real_mllm_reranker_class_with_a_tiny_checkpoint(state, tmp_path):
    """The UI drives the real MLLMReranker (tiny Idefics3 built here) end to end: image query included."""
    pytest.importorskip("transformers")
    from PIL import Image
    from tiny_vlms import build_tiny_idefics3

    from mmembed.rerankers.mllm import MLLMReranker

    folder = build_tiny_idefics3(tmp_path / "tiny-idefics3")
    state.rerankers.register_instance("tiny-mllm", MLLMReranker(model_id=str(folder), device="cpu", batch_size=4,
                                                                feature_cache_dir=tmp_path / "features"))
    query_image = tmp_path / "cat_query.png"
    Image.new("RGB", (32, 32), (200, 120, 40)).save(query_image)
    steps = []
    request = h.parse_request("cat", str(query_image), "image", "natural", 4, "keyword", 6, state=state)
    session = h.first_stage(state, request)
    out = h.api_payload(state, h.second_stage(state, session, "tiny-mllm", True,
                                              progress=lambda d, t, desc: steps.append(desc)))
    reranked = out["reranked"]
    assert reranked["status"] == "done", reranked["message"]
    assert len(reranked["hits"]) == 4 and [hit["rank"] for hit in reranked["hits"]] == [1, 2, 3, 4]
    assert all(0.0 <= hit["score"] <= 1.0 for hit in reranked["hits"])  # P("True")
    scores = [hit["score"] for hit in reranked["hits"]]
    assert scores == sorted(scores, reverse=True)
    candidates = {hit.item.id for hit in session.candidates}
    assert {hit["id"] for hit in reranked["hits"]} <= candidates
    assert steps[:2] == ["loading reranker tiny-mllm", "reranking 6 candidates"]


def test_building_the_page_imports_no_torch(tmp_path):
    """Server start stays fast: the page is built without torch (the GPU check waits for the page's load event)."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import sys; from mmembed.config import Settings; from mmembed.ui import DemoState, build_demo; "
        f"s = DemoState(Settings(corpus=__import__('pathlib').Path({str(tmp_path / 'c.jsonl')!r}))); build_demo(s); "
        "print(sorted(m for m in ('torch', 'transformers', 'faiss') if m in sys.modules)); "
        "print([c.label for c in s.embedder_choices(check_gpu=False)][-1])"
    )
    root = Path(__file__).resolve().parent.parent
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root, timeout=120,
                            env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[0] == "[]"
    # the GPU need is not checked yet (the full "needs a GPU" label comes with the page's load event)
    assert lines[1] == "⊘ mm-embed — weights not downloaded (offline)"


def test_picking_an_unavailable_model_is_refused_with_the_reason(tmp_path):
    state = DemoState(Settings(corpus=tmp_path / "corpus.jsonl", cache_dir=tmp_path / "cache", device="cpu"))
    assert h.pick_backend(state, "embedder", "mmembed-mini", "mmembed-mini") == ("mmembed-mini", None)
    kept, warning = h.pick_backend(state, "embedder", "mm-embed", "mmembed-mini")
    assert kept == "mmembed-mini"
    assert warning == "The embedder 'mm-embed' can't be used here: needs a GPU. Staying with 'mmembed-mini'."
    kept, warning = h.pick_backend(state, "reranker", "llava-next-7b", "smolvlm-256m")
    assert kept == "smolvlm-256m" and warning.startswith("The reranker 'llava-next-7b' can't be used here: needs a GPU")
    assert h.pick_backend(state, "embedder", "nope", "mmembed-mini")[1].startswith("Unknown embedder 'nope'")
    assert h.pick_backend(state, "embedder", None, "mmembed-mini") == ("mmembed-mini", None)


def test_licence_names_come_from_the_corpus_attribution(state):
    attribution = state.corpus_root() / "ATTRIBUTION.md"
    attribution.write_text("# Credits\n\n- **CC0**: not this one (outside the licence list)\n\n## Licences\n\n"
                           "- **CC0**: Creative Commons Zero v1.0 Universal (https://example.org/cc0)\n"
                           "- **PD**: Public domain\n\n## Sources\n\n- **x**: y\n", encoding="utf-8")
    assert state.licences() == {"CC0": "Creative Commons Zero v1.0 Universal (https://example.org/cc0)",
                                "PD": "Public domain"}
    request = h.parse_request("cat", None, "image", "natural", 4, "keyword", 6, state=state)
    details = h.item_details(state, h.first_stage(state, request), "i-cat")
    assert details["license_name"] == "Creative Commons Zero v1.0 Universal (https://example.org/cc0)"
    assert "CC0 — Creative Commons Zero v1.0 Universal" in render_details(details)
    public = render_details({**details, "meta": {"license": "public domain"}, "license_name": "Public domain (none)"})
    assert "<td>Public domain (none)</td>" in public  # not "public domain — Public domain (none)"
    assert h.item_details(state, h.first_stage(state, request), "t-cat")["license_name"] is None


def test_shipped_sample_corpus_licences_and_examples():
    from mmembed.config import Settings as S

    settings = S()
    root = settings.corpus.parent
    if not (root / "ATTRIBUTION.md").is_file() or not settings.queries or not settings.queries.is_file():
        pytest.skip("the sample corpus is not in this checkout")
    licences = parse_licences((root / "ATTRIBUTION.md").read_text(encoding="utf-8"))
    corpus_licences = {json.loads(line).get("license") for line in settings.corpus.read_text().splitlines() if line}
    assert corpus_licences <= set(licences)  # every item's licence has its full name in ATTRIBUTION.md
    examples = load_examples(settings.queries)
    assert [e.label.split(":")[0] for e in examples] == ["t→i", "t→t", "t→(i,t)", "i→t", "i→i", "(i,t)→i",
                                                         "(i,t)→t", "(i,t)→(i,t)", "t→i"]
    # the last one ticks the compare switch (M_rand beside mmembed-mini); its label says what the query is
    assert [(e.label, e.compare) for e in examples[-1:]] == [
        ("t→i: a spanner for turning nuts and bolts · M_rand vs mini", True)]
    for example in examples:
        assert example.image is None or Path(example.image).resolve().is_relative_to(root.resolve())
        # an image query's label says what the image shows ("a frog emoji"), never its file name
        assert ".jpg" not in example.label and "q-" not in example.label, example.label
    assert any(e.image and e.label.endswith(("drawing", "emoji")) for e in examples)


def test_first_query_loads_corpus_model_and_index_with_progress(tmp_path):
    state = make_state(tmp_path)
    steps: list[str] = []
    request = h.parse_request("cat", None, "image", "natural", 3, "keyword", state=state)
    assert "embedder:keyword" not in state.loaded()  # nothing is loaded before the first query
    h.first_stage(state, request, progress=lambda done, total, desc: steps.append(desc))
    assert steps[0].startswith("loading the corpus") and steps[1] == "loading embedder keyword"
    assert steps[2].startswith("indexing the corpus") and steps[-1] == "searching"
    steps.clear()
    h.first_stage(state, h.parse_request("dog", None, "image", "natural", 3, "keyword", state=state),
                  progress=lambda done, total, desc: steps.append(desc))
    assert steps == ["searching", "searching"]  # (0/1, 1/1) loaded once, shared by every later query and visitor
