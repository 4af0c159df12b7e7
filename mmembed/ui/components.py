"""The page's components, built in two groups: the query inputs and the results area.

Each builder returns a small dataclass of the components it made, so `mmembed.ui.layout` can wire events
by name. No event is attached here and nothing is loaded: building the page stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from mmembed.ui import handlers as h
from mmembed.ui.compare import RAND_PLACEHOLDER, switch_info
from mmembed.ui.events import FIRST_PLACEHOLDER, SECOND_PLACEHOLDER, user_error
from mmembed.ui.plot import render_mix_chart
from mmembed.ui.render import render_column, render_detail_image, render_details
from mmembed.ui.state import DemoState


def query_image_component(**kwargs: Any) -> gr.Image:
    """gr.Image that hands over the uploaded file untouched, so `load_image` (not Gradio's PIL.open)
    decodes it: a zero-byte, corrupt or bomb upload then gets our clear message instead of a crash.

    The override is set on the instance: a gr.Image subclass would make Gradio write a .pyi stub into
    this package at import time.
    """
    from gradio.image_utils import preprocess_image

    component = gr.Image(**kwargs)

    def preprocess(payload: Any) -> str | None:
        if payload is None:
            return None
        if payload.path is not None and not (payload.url or "").startswith("data:"):
            return str(payload.path)
        try:  # pasted images may arrive as data: URLs; let Gradio write them to a file
            return preprocess_image(payload, cache_dir=component.GRADIO_CACHE, format="png", image_mode=None,
                                    type="filepath")
        except Exception as exc:
            # PIL's own words name a buffer's memory address: say what is wrong in ours instead.
            raise user_error("The pasted image can't be used: it is not a PNG, JPEG, GIF, WebP or BMP image "
                             "that can be decoded. Paste or upload another one.", "image paste") from exc

    component.preprocess = preprocess  # type: ignore[method-assign]
    return component


@dataclass
class Inputs:
    """The query form: what the visitor searches with, and with which models."""

    text: gr.Textbox
    image: gr.Image
    target: gr.Radio
    mode: gr.Radio
    top_k: gr.Slider
    rerank_on: gr.Checkbox
    embedder: gr.Dropdown
    reranker: gr.Dropdown
    depth: gr.Slider
    search: gr.Button
    compare: gr.Checkbox  # the same query through the embedder's M_rand too (shown when it has one)

    def search_args(self) -> list[Any]:
        """The first stage's inputs, in `DemoEvents.first`'s order (`known` and `compare` follow them)."""
        return [self.text, self.image, self.target, self.mode, self.top_k, self.embedder, self.depth]


def build_inputs(state: DemoState, default_embedder: str) -> Inputs:
    settings = state.settings
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            text = gr.Textbox(label="Text query", placeholder="e.g. a red apple on a table", lines=2, max_lines=6,
                              max_length=h.MAX_QUERY_CHARS, elem_id="query-text")
            image = query_image_component(label="Image query (optional: upload, paste or webcam)", type="filepath",
                                          sources=["upload", "clipboard", "webcam"], height=210, elem_id="query-image")
        with gr.Column(scale=2):
            target = gr.Radio(list(h.TARGETS), value="image", label="Retrieve (target modality)", elem_id="target")
            mode = gr.Radio([("natural: rank the whole pool", "natural"),
                             ("filtered: only the target modality", "filtered")],
                            value="natural", label="Mode", elem_id="mode")
            top_k = gr.Slider(1, h.MAX_TOP_K, value=settings.top_k, step=1, label="top-k", elem_id="top-k")
            rerank_on = gr.Checkbox(value=True, label="Rerank the candidates", elem_id="rerank-on")
            twin = state.random_negatives_of(default_embedder)
            # off by default; shown only for an embedder whose registry entry declares an M_rand (events.compare_switch)
            compare = gr.Checkbox(value=False, label="Compare with M_rand (random negatives)", visible=twin is not None,
                                  info=switch_info(twin), elem_id="compare")
            with gr.Accordion("Models", open=False):
                embedder = gr.Dropdown([(c.label, c.name) for c in state.embedder_choices(check_gpu=False)],
                                       value=default_embedder, label="Embedder (first stage)", elem_id="embedder")
                reranker = gr.Dropdown([(c.label, c.name) for c in state.reranker_choices(check_gpu=False)],
                                       value=state.default_reranker(), label="Reranker (second stage)",
                                       elem_id="reranker")
                depth = gr.Slider(1, h.MAX_TOP_K, value=settings.rerank_top_k, step=1,
                                  label="Candidates to rerank (at least top-k)", elem_id="depth")
            search = gr.Button("Search", variant="primary", elem_id="search-btn")
    return Inputs(text, image, target, mode, top_k, rerank_on, embedder, reranker, depth, search, compare)


@dataclass
class Results:
    """Both ranked columns, the modality-mix plot and summary, the detail view, export and JSON."""

    first: gr.HTML
    second: gr.HTML
    plot: gr.HTML
    bias: gr.HTML
    pick: gr.Dropdown
    clicked: gr.Textbox
    details: gr.HTML
    detail_image: gr.HTML
    export: gr.Button
    export_url: gr.Textbox
    json_view: gr.JSON
    twin: gr.HTML  # the compare switch's column: the M_rand's first stage
    twin_box: gr.Column


def build_results() -> Results:
    # "results-row": at phone width the two columns stay side by side (workbench_view.CSS)
    with gr.Row(equal_height=False, elem_id="results-row"):
        with gr.Column(visible=False, elem_id="twin-box") as twin_box:  # beside the first stage it compares with
            gr.HTML('<h3 class="mm-coltitle">Compare: the same query, random negatives</h3>')
            twin = gr.HTML(render_column(None, "", placeholder=RAND_PLACEHOLDER, stage_id="rand"), elem_id="rand-stage")
        with gr.Column():
            gr.HTML('<h3 class="mm-coltitle">① First-stage retrieval</h3>')
            first = gr.HTML(render_column(None, "", placeholder=FIRST_PLACEHOLDER, stage_id="first"),
                            elem_id="first-stage")
        with gr.Column():
            gr.HTML('<h3 class="mm-coltitle">② After reranking</h3>')
            second = gr.HTML(render_column(None, "", placeholder=SECOND_PLACEHOLDER, stage_id="reranked"),
                             elem_id="reranked")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            plot = gr.HTML(render_mix_chart(None), elem_id="mix-plot")
        with gr.Column(scale=2):
            bias = gr.HTML(elem_id="bias-summary")
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            pick = gr.Dropdown([], label="Inspect a result (or click a card above)", elem_id="inspect")
            clicked = gr.Textbox(visible="hidden", elem_id="clicked-id")  # set by CARD_CLICK_JS
            details = gr.HTML(render_details(None), elem_id="details")
        with gr.Column(scale=2):
            # an <img> from the corpus route, not a gr.Image: Gradio would send its temp file's server path
            detail_image = gr.HTML(render_detail_image(None), elem_id="detail-image")
    with gr.Row():
        export = gr.Button("Export results (JSON)", interactive=False, elem_id="export")
        # the export's /download/<token> URL, filled by `DemoEvents.export` on request, then opened by script
        # (a gr.DownloadButton would send the file's server path to the browser)
        export_url = gr.Textbox(visible="hidden", elem_id="export-url")
    with gr.Accordion("JSON: the object the `search` API returns", open=False):
        json_view = gr.JSON(elem_id="json-view")
    return Results(first, second, plot, bias, pick, clicked, details, detail_image, export, export_url, json_view,
                   twin, twin_box)
