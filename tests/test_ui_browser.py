"""End to end in a real browser (Debian chromium + Playwright): type, upload, pick a target, search, and
check that both result columns and the modality-mix plot render with the expected items.

Saves test-output/ui-demo.png. Skipped (with the reason) when /usr/bin/chromium or playwright is missing.
"""

from __future__ import annotations

import json
import os
from dataclasses import replace
from pathlib import Path

import pytest
from PIL import Image
from ui_helpers import TargetAwareReranker, make_state, registry

# for the Evaluate tab: the biased keyword fake puts the cat texts first for "cat" -> image (wrong modality at
# rank 1), finds the dog text for "dog" -> text, and misses the violin for "a violin on a boat" -> image
EVAL_QUERIES = [
    {"qid": "wq1", "query_txt": "cat", "pos_cand_list": ["i-cat", "i-cat-mat"], "task": "t->i",
     "target_modality": "image"},
    {"qid": "wq2", "query_txt": "dog", "pos_cand_list": ["t-dog"], "task": "t->t", "target_modality": "text"},
    {"qid": "wq3", "query_txt": "boat", "pos_cand_list": ["i-boat"], "task": "t->i", "target_modality": "image"},
]
CHROMIUM = Path(os.environ.get("MMEMBED_CHROMIUM", "/usr/bin/chromium"))
OUTPUT = Path(__file__).resolve().parent.parent / "test-output"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason=f"no chromium at {CHROMIUM} (apt-get install chromium)")
playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")


@pytest.fixture(scope="module")
def app_url(tmp_path_factory):
    from mmembed.ui import build_demo, launch_options
    from mmembed.ui.examples import Example
    from mmembed.ui.state import BackendChoice, DemoState

    state = make_state(tmp_path_factory.mktemp("ui-browser"))
    queries = state.corpus_root() / "queries.jsonl"  # the Evaluate tab's shipped query set
    queries.write_text("".join(json.dumps(row) + "\n" for row in EVAL_QUERIES), encoding="utf-8")
    state = DemoState(replace(state.settings, queries=queries), corpus=state.corpus, embedders=state.embedders,
                      rerankers=registry("reranker", **{"target-aware": TargetAwareReranker()}))
    query_image = state.corpus_root() / "queries" / "dog_query.png"  # query images live with the corpus
    query_image.parent.mkdir()
    Image.new("RGB", (40, 30), (90, 90, 90)).save(query_image)
    examples = [Example("cat", None, "image", "natural", "t->i: cat"),
                Example(None, str(query_image), "text", "filtered", "i->t: dog")]
    # one reranker that cannot run here, as the real registry lists e.g. llava-next-7b on a CPU box
    available = state.reranker_choices
    state.reranker_choices = lambda check_gpu=True: [*available(check_gpu=check_gpu),
                                                     BackendChoice("big-vlm", "needs a GPU")]
    demo = build_demo(state, examples=examples)
    demo.launch(prevent_thread_lock=True, quiet=True, **launch_options(state))
    try:
        yield demo.local_url, state, examples
    finally:
        demo.close()


@pytest.fixture(scope="module")
def page():
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM),
                                    args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        try:
            yield page
        finally:
            browser.close()


def card_ids(page, column: str) -> list[str]:
    return page.locator(f"#{column} .mm-card").evaluate_all("cards => cards.map(c => c.dataset.id)")


def test_search_renders_both_columns_and_the_plot(app_url, page, tmp_path):
    from mmembed.ui import handlers as h

    url, state, _ = app_url
    query_image = tmp_path / "cat_photo.png"  # the keyword fake reads "cat" from the file name
    Image.new("RGB", (64, 48), (200, 120, 40)).save(query_image)
    expected = h.search(state, "cat", str(query_image), "image", "natural", 4, True, "keyword", "target-aware")

    page.goto(url)
    page.locator("#query-text textarea").fill("cat")
    page.locator("#query-image input[type=file]").set_input_files(str(query_image))
    page.locator("#query-image img").first.wait_for()  # upload finished
    page.locator("#target").get_by_label("text", exact=True).check()
    page.locator("#target").get_by_label("image", exact=True).check()
    top_k = page.locator("#top-k input[type=number]")
    top_k.fill("4")
    top_k.press("Enter")
    page.locator("#search-btn").click()

    page.locator("#reranked .mm-card").first.wait_for()
    first_ids = [hit["id"] for hit in expected["first_stage"]["hits"]]
    reranked_ids = [hit["id"] for hit in expected["reranked"]["hits"]]
    assert card_ids(page, "first-stage") == first_ids
    assert card_ids(page, "reranked") == reranked_ids
    assert reranked_ids != first_ids  # the target-aware reranker reorders: the page must show that
    moves = page.locator("#reranked .mm-move").all_inner_texts()
    assert moves == [hit["movement_label"] for hit in expected["reranked"]["hits"]]
    wrong = sum(not hit["matches_target"] for hit in expected["first_stage"]["hits"])
    assert page.locator("#first-stage .mm-card.mm-miss").count() == wrong
    assert page.locator("#first-stage .mm-thumb").count() == sum(bool(hit["image"]) for hit in
                                                                 expected["first_stage"]["hits"])
    rate = expected["first_stage"]["wrong_modality_rate"]
    assert f"{rate:.0%}" in page.locator("#bias-summary").inner_text()

    rows = page.locator("#mix-plot .mm-bar-row")
    assert rows.evaluate_all("rows => rows.map(r => r.dataset.stage)") == [
        "Asked for", "Corpus pool", "First stage", "After reranking"]
    text_share = next(r["share"] for r in expected["first_stage"]["modality_mix"] if r["modality"] == "text")
    segment = rows.nth(2).locator('.mm-seg[data-modality="text"]')
    assert float(segment.get_attribute("data-percent")) == pytest.approx(100 * text_share, abs=0.05)
    box = segment.bounding_box()
    bar = rows.nth(2).locator(".mm-bar").bounding_box()
    assert box is not None and bar is not None and box["width"] == pytest.approx(bar["width"] * text_share, rel=0.05)

    page.locator(f'#reranked .mm-card[data-id="{reranked_ids[0]}"]').click()  # clicking a card shows it
    page.locator("#details td", has_text=reranked_ids[0]).first.wait_for()
    details = page.locator("#details").inner_text()
    assert "after reranking\t#1 · score" in details
    with_image = next((hit["id"] for hit in expected["reranked"]["hits"] if hit["image"]), None)
    if with_image is not None:  # its full picture: an <img> of the corpus route (no Gradio temp path)
        page.locator(f'#reranked .mm-card[data-id="{with_image}"]').click()
        page.locator("#detail-image img").wait_for()
        assert page.locator("#detail-image img").get_attribute("src").startswith("/corpus/")

    page.locator("#inspect input").click()
    page.get_by_role("option", name=f"#1 {first_ids[0]}", exact=False).first.click()
    page.locator("#details td", has_text=first_ids[0]).first.wait_for()
    assert "after reranking" in page.locator("#details").inner_text()

    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "ui-demo.png"), full_page=True)

    with page.expect_download() as download:
        page.locator("#export").click()
    assert "/download/" in download.value.url and "/tmp" not in download.value.url  # no server path (issue 9)
    exported = json.loads(Path(download.value.path()).read_text(encoding="utf-8"))
    assert [hit["id"] for hit in exported["reranked"]["hits"]] == reranked_ids
    assert exported["first_stage"]["modality_mix"] == expected["first_stage"]["modality_mix"]


def test_bad_upload_shows_a_visible_error(app_url, page, tmp_path):
    url, _, _ = app_url
    bomb = tmp_path / "empty.png"
    bomb.write_bytes(b"")
    page.goto(url)
    page.locator("#query-image input[type=file]").set_input_files(str(bomb))
    page.wait_for_timeout(500)
    page.locator("#search-btn").click()
    toast = page.get_by_text("empty.png is empty (0 bytes)", exact=False).first
    toast.wait_for()
    assert toast.is_visible()
    assert page.locator("#first-stage .mm-card").count() == 0


@pytest.mark.parametrize("index", [0, 1])
def test_clicking_an_example_runs_it(app_url, page, index):
    from mmembed.ui import handlers as h

    url, state, examples = app_url
    example = examples[index]
    expected = h.search(state, example.text, example.image, example.target, example.mode, 10, True, "keyword",
                        "target-aware")
    page.goto(url)
    page.get_by_text(example.label, exact=True).click()
    page.locator("#reranked .mm-card").first.wait_for()
    assert card_ids(page, "first-stage") == [hit["id"] for hit in expected["first_stage"]["hits"]]
    assert card_ids(page, "reranked") == [hit["id"] for hit in expected["reranked"]["hits"]]
    if example.mode == "filtered":
        assert page.locator("#first-stage .mm-card.mm-miss").count() == 0


def test_picking_an_unavailable_reranker_is_refused_with_the_reason(app_url, page):
    url, _, _ = app_url
    page.goto(url)
    page.get_by_text("Models", exact=True).click()
    page.locator("#reranker input").click()
    page.get_by_role("option", name="⊘ big-vlm — needs a GPU").click()
    message = "The reranker 'big-vlm' can't be used here: needs a GPU. Staying with 'target-aware'."
    page.get_by_text(message).first.wait_for()
    page.wait_for_timeout(500)
    assert page.get_by_text(message).count() == 1  # one warning per pick
    assert page.locator("#reranker input").input_value() == "target-aware"


def test_evaluate_then_open_a_failure_with_positives_marked_in_both_columns(app_url, page):
    from mmembed.ui import evaluate_handlers as eh
    from mmembed.ui import handlers as h

    url, state, _ = app_url
    request = eh.parse_eval_request(state, None, "keyword", eh.NO_COMPARE, "natural", False, "target-aware", 3, 10)
    report, _ = eh.run_evaluation(state, request)
    failing = [f.qid for f in report.failures()]
    assert "wq1" in failing and "wq2" not in failing  # the fake's rank-1 for "cat" -> image is a text
    page.goto(url)
    page.get_by_role("tab", name="Evaluate").click()
    page.locator("#eval-run").click()
    page.locator("#eval-failures .mm-wb-row").first.wait_for()
    rows = page.locator("#eval-failures .mm-wb-row").evaluate_all("rows => rows.map(r => r.dataset.qid)")
    assert rows == failing
    overall = page.locator("#eval-summary .mm-wb-overall").first.inner_text()
    assert f"{100 * report.models[0].stages['first'].recall['overall'][1]:.1f}" in overall
    assert page.locator("#eval-confusion .mm-wb-grid").count() == 2  # rank 1 and top 5
    with page.expect_download() as download:
        page.locator("#eval-export-csv").click()
    assert "/download/" in download.value.url
    exported = Path(download.value.path()).read_text(encoding="utf-8").splitlines()
    assert [line.split(",")[0] for line in exported[1:]] == failing  # one row per failing query, worst first

    page.locator('#eval-failures .mm-wb-row[data-qid="wq1"]').click()
    page.locator('#reranked .mm-card[data-positive="true"]').first.wait_for()
    assert page.locator("#query-text textarea").input_value() == "cat"
    expected = h.search(state, "cat", None, "image", "natural", state.settings.top_k, True, "keyword",
                        "target-aware", state.settings.rerank_top_k)
    for column, stage in (("first-stage", "first_stage"), ("reranked", "reranked")):
        marked = page.locator(f'#{column} .mm-card[data-positive="true"]').evaluate_all(
            "cards => cards.map(c => c.dataset.id)")
        assert marked == [hit["id"] for hit in expected[stage]["hits"] if hit["positive"]]
        assert marked and set(marked) <= {"i-cat", "i-cat-mat"}
        assert page.locator(f"#{column} .mm-positive").count() == len(marked)  # the visible ✓ badge
    assert expected["ground_truth"]["qid"] == "wq1"

    page.locator(f'#first-stage .mm-card[data-id="{marked[0]}"]').click()
    page.locator("#details", has_text="a positive of evaluation query wq1").wait_for()

    page.set_viewport_size({"width": 390, "height": 844})  # phone width: both columns stay side by side
    page.wait_for_timeout(300)
    first, second = page.locator("#first-stage").bounding_box(), page.locator("#reranked").bounding_box()
    assert first is not None and second is not None
    # side by side: tops within a heading's height (stacked columns would be a whole column apart), no overlap
    assert abs(first["y"] - second["y"]) < 40 and first["x"] + first["width"] <= second["x"] + 1
    assert page.locator("#first-stage .mm-thumb").first.bounding_box()["width"] <= 70
    chart = page.locator("#mix-plot .mm-bar-row").first.bounding_box()
    assert chart is not None and chart["width"] <= 390
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "ui-phone-390.png"), full_page=True)
    page.set_viewport_size({"width": 1400, "height": 1000})


# --- the shipped models, offline: real rank movement, and the compare switch (issue 11) ----------------------

COMPARE_QUERY = "a spanner for turning nuts and bolts"  # sample_corpus scq-0116, the page's compare example


@pytest.fixture(scope="module")
def real_app(tmp_path_factory):
    """The page as it runs offline with the repository's defaults: clip-b32 and smolvlm-256m cannot be had (an
    empty hub cache), so mmembed-mini answers and mmembed-mini-rerank reranks (the fallbacks); the sample corpus
    and its examples. Indexes go to this module's own cache folder (built once, here)."""
    from mmembed.config import Settings
    from mmembed.ui import build_demo, launch_options
    from mmembed.ui.state import DemoState

    settings = Settings(cache_dir=tmp_path_factory.mktemp("real-cache"), device="cpu")
    if not settings.corpus.is_file():
        pytest.skip("the sample corpus is not in this checkout")
    state = DemoState(settings)
    demo = build_demo(state)
    demo.launch(prevent_thread_lock=True, quiet=True, **launch_options(state))
    try:
        yield demo.local_url, state
    finally:
        demo.close()


def wait_for_reranked(page, count: int) -> None:
    """Until the reranked column holds its final order (no "Reranking… n of m" note left)."""
    page.wait_for_function("n => document.querySelectorAll('#reranked .mm-card').length === n && "
                           "!document.querySelector('#reranked .mm-note')", arg=count)


def moving_query(state, embedder: str, reranker: str) -> tuple[str, dict]:
    """The first of the page's text examples (then a few sample-corpus wordings) whose order the shipped reranker
    changes with the page's defaults (top-k 10, 10 candidates, its own fusion weight): chosen from what the
    reranker does, so retraining it does not break the test, while a reranker that never moves a rank fails it."""
    from mmembed.ui import handlers as h
    from mmembed.ui.examples import load_examples

    texts = [e.text for e in load_examples(state.settings.queries) if e.text and not e.image]
    for text in [*texts, COMPARE_QUERY, "a picture of a pig", "egg", "apple", "a red apple", "a bicycle"]:
        expected = h.search(state, text, None, "image", "natural", 10, True, embedder, reranker)
        if expected["reranked"]["status"] == "done" and [hit["id"] for hit in expected["reranked"]["hits"]] != [
                hit["id"] for hit in expected["first_stage"]["hits"]]:
            return text, expected
    pytest.fail("the shipped reranker changed the order of none of the example queries")


def test_shipped_models_offline_rerank_moves_ranks_and_the_switch_shows_m_rand(real_app, page):
    from mmembed.ui import handlers as h

    url, state = real_app
    embedder, reranker = state.default_embedder()[0], state.default_reranker()
    assert (embedder, reranker) == ("mmembed-mini", "mmembed-mini-rerank")  # the offline fallbacks
    # this also builds both indexes, so the page answers at once
    query, expected = moving_query(state, embedder, reranker)
    first_ids = [hit["id"] for hit in expected["first_stage"]["hits"]]
    reranked_ids = [hit["id"] for hit in expected["reranked"]["hits"]]
    compared = h.search(state, COMPARE_QUERY, None, "image", "natural", 10, True, embedder, reranker)
    request = h.parse_request(COMPARE_QUERY, None, "image", "natural", 10, "mmembed-mini-rand", state=state)
    rand = h.api_payload(state, h.first_stage(state, request))
    rand_ids = [hit["id"] for hit in rand["first_stage"]["hits"]]

    page.goto(url)
    page.locator("#query-text textarea").fill(query)
    page.locator("#search-btn").click()
    wait_for_reranked(page, len(reranked_ids))
    assert card_ids(page, "first-stage") == first_ids
    assert card_ids(page, "reranked") == reranked_ids != first_ids
    moves = page.locator("#reranked .mm-move").all_inner_texts()
    assert moves == [hit["movement_label"] for hit in expected["reranked"]["hits"]]
    assert any(move.startswith(("↑", "↓")) for move in moves)  # the cards say how far they moved
    assert not page.locator("#twin-box").is_visible()  # off by default

    page.locator("#query-text textarea").fill(COMPARE_QUERY)
    page.locator("#search-btn").click()
    for column, stage in (("first-stage", "first_stage"), ("reranked", "reranked")):  # the new query's final order
        page.wait_for_function("([column, ids]) => JSON.stringify([...document.querySelectorAll(`#${column} .mm-card`)]"
                               ".map(c => c.dataset.id)) === JSON.stringify(ids)",
                               arg=[column, [hit["id"] for hit in compared[stage]["hits"]]])
    page.locator("#compare input[type=checkbox]").check()
    page.locator("#rand-stage .mm-card").nth(len(rand_ids) - 1).wait_for()
    assert card_ids(page, "rand-stage") == rand_ids
    assert "M_rand (mmembed-mini-rand) — trained with random negatives" in page.locator("#rand-stage").inner_text()
    assert "mmembed-mini — modality-aware hard negatives" in page.locator("#first-stage").inner_text()
    rates = rand["first_stage"]["wrong_modality_rate"], compared["first_stage"]["wrong_modality_rate"]
    assert rates[0] > rates[1]
    title = page.locator("#mix-plot .mm-chart-title").inner_text()
    assert f"M_rand (mmembed-mini-rand) {rates[0]:.0%} vs mmembed-mini {rates[1]:.0%}" in title
    rows = page.locator("#mix-plot .mm-bar-row").evaluate_all("rows => rows.map(r => r.dataset.stage)")
    assert rows == ["Asked for", "Corpus pool", "M_rand first stage", "First stage", "After reranking"]
    OUTPUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUTPUT / "ui-compare.png"), full_page=True)

    page.locator("#compare input[type=checkbox]").uncheck()  # off again: the column goes, the plot loses its row
    page.locator("#twin-box").wait_for(state="hidden")
    assert "M_rand" not in page.locator("#mix-plot").inner_text()
    page.get_by_text(f"t→i: {COMPARE_QUERY} · M_rand vs mini", exact=True).click()  # the example ticks it again
    page.locator("#rand-stage .mm-card").nth(len(rand_ids) - 1).wait_for()
    assert page.locator("#compare input[type=checkbox]").is_checked()
    assert card_ids(page, "rand-stage") == rand_ids
