"""The demo's Blocks: components (`mmembed.ui.components`) wired to `DemoEvents` methods, and launch options.

Events: Search (or Enter, or an example) runs the first stage and shows it at once; `.success()` then
runs the reranker into the second column, which fills batch by batch (a generator) with its own
progress bar. Every event has an `api_name`; `search` (a hidden button) returns both stages as one JSON
object for `gradio_client` users. Picking an unavailable model ("⊘ … — reason") is refused with a
warning (Gradio cannot disable single options). Gradio is imported only when the page is built.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmembed.ui.state import DemoState
from mmembed.ui.theme import CARD_CLICK_JS, CSS, HEADER, make_theme
from mmembed.ui.workbench_view import CSS as WORKBENCH_CSS
from mmembed.ui.workbench_view import FAILURE_CLICK_JS

if TYPE_CHECKING:
    from collections.abc import Callable

    import gradio as gr

    from mmembed.ui.components import Inputs, Results
    from mmembed.ui.events import DemoEvents
    from mmembed.ui.examples import Example
    from mmembed.ui.scratch import Scratch

MAX_UPLOAD = "10mb"  # far above any photo worth embedding; load_image caps pixels separately
QUEUE_SIZE = 32  # visitors waiting beyond this get "queue full" instead of a minutes-long wait
HEAVY = {"concurrency_id": "model", "concurrency_limit": 1}  # one model call at a time on a CPU box
INTERNAL = {"api_visibility": "undocumented"}  # page plumbing: callable, kept out of "Use via API"
# opens an export's /download/<token> URL; the route answers with an attachment, so the page stays
DOWNLOAD_JS = "(url) => { if (!url) return; const a = document.createElement('a'); a.href = url; a.download = ''; " \
              "document.body.appendChild(a); a.click(); a.remove(); }"


def build_demo(state: DemoState | None = None, *, examples: list[Example] | None = None) -> gr.Blocks:
    """The demo's Blocks. `state` defaults to the real registries and sample corpus (loaded lazily)."""
    import gradio as gr

    from mmembed.ui.bad_inputs import explain_bad_inputs
    from mmembed.ui.components import build_inputs, build_results
    from mmembed.ui.evaluate_tab import EvaluateEvents, build_evaluate_tab, wire_evaluate
    from mmembed.ui.events import DemoEvents
    from mmembed.ui.examples import load_examples
    from mmembed.ui.scratch import Scratch

    state = state or DemoState()
    scratch = Scratch()
    events = DemoEvents(state, scratch)
    default_embedder, startup_note = state.default_embedder()
    examples = load_examples(state.settings.queries) if examples is None else examples
    if state.random_negatives_of(default_embedder) is None:  # nothing to compare with: no compare example
        examples = [example for example in examples if not example.compare]
    # delete_cache: uploads and exports Gradio copied into its cache go after a day (checked hourly)
    with gr.Blocks(title="mmembed · multimodal retrieval with MLLMs", delete_cache=(3600, 86400)) as demo:
        gr.HTML(HEADER)
        known = gr.State(None)  # the visitor's uploaded evaluation set, by query content (its positives get ✓)
        default_reranker = state.default_reranker()
        notes = " ".join(note for note in (startup_note, state.reranker_note(default_reranker)) if note) or None
        with gr.Tabs(selected="search", elem_id="tabs") as tabs:
            with gr.Tab("Search", id="search", elem_id="tab-search"):
                inputs = build_inputs(state, default_embedder)
                status = gr.HTML(events.model_line(default_embedder, default_reranker, notes, check_gpu=False),
                                 elem_id="status")
                wire_warmup(demo, events)
                example_box = gr.Examples([e.row() for e in examples],
                                          inputs=[inputs.text, inputs.image, inputs.target, inputs.mode,
                                                  inputs.compare],
                                          example_labels=[e.label for e in examples],
                                          label="Examples (one per query type)", examples_per_page=10)
                results = build_results()
            with gr.Tab("Evaluate", id="evaluate", elem_id="tab-evaluate"):
                evaluate_tab = build_evaluate_tab(state, default_embedder)
        search_after = wire_search(events, inputs, results, status, example_box, known)
        wire_models(demo, events, inputs, status, default_embedder, default_reranker)
        wire_evaluate(EvaluateEvents(state, scratch), evaluate_tab, tabs, inputs, known, search_after)
    demo.queue(default_concurrency_limit=2, max_size=QUEUE_SIZE)
    explain_bad_inputs(demo)
    return demo


def wire_search(events: DemoEvents, inputs: Inputs, results: Results, status: Any, example_box: Any,
                known: Any) -> Callable[[Any], None]:
    """First stage -> (on success) progressive rerank, for the button, Enter and the examples; the one-call
    `search` API; the detail view and the export. Returns how to run the same search after another event
    (the Evaluate tab's "open this failure")."""
    import gradio as gr

    from mmembed.devices import zero_gpu
    from mmembed.ui.events import as_function

    session = gr.State(None)  # the current search's SearchReport
    twin = gr.State(None)  # with the compare switch on: the same query's SearchReport from the embedder's M_rand
    outputs = [session, results.first, results.second, results.plot, results.bias, status, results.pick,
               results.json_view, results.export, twin, results.twin, results.twin_box]
    first, rerank = zero_gpu(as_function(events.first)), zero_gpu(as_function(events.rerank))

    def chain(first_event: Any, suffix: str) -> None:
        first_event.success(rerank, [session, inputs.rerank_on, inputs.reranker, known, twin], outputs,
                            api_name=f"rerank{suffix}", show_progress_on=[results.second],
                            **(INTERNAL if suffix else {}), **HEAVY)

    search_args = [*inputs.search_args(), known, inputs.compare]
    chain(gr.on([inputs.search.click, inputs.text.submit], first, search_args, outputs,
                api_name="first_stage", show_progress_on=[results.first], **HEAVY), "")
    chain(example_box.load_input_event.then(first, search_args, outputs, api_name="example_first_stage",
                                            show_progress_on=[results.first], **INTERNAL, **HEAVY), "_example")

    def search_after(event: Any) -> None:
        chain(event.success(first, search_args, outputs, api_name="failure_first_stage",
                            show_progress_on=[results.first], **INTERNAL, **HEAVY), "_failure")

    # `input`, not `change`: an example that ticks the switch runs its own search, not this one
    inputs.compare.input(zero_gpu(as_function(events.toggle_compare)), [session, inputs.compare, known],
                         [twin, results.twin, results.twin_box, results.plot, results.bias, results.first],
                         api_name="compare", show_progress_on=[results.twin], **INTERNAL, **HEAVY)
    api_button, api_json = gr.Button(visible=False), gr.JSON(visible=False)
    api_button.click(zero_gpu(as_function(events.search_api)),
                     [inputs.text, inputs.image, inputs.target, inputs.mode, inputs.top_k, inputs.rerank_on,
                      inputs.embedder, inputs.reranker, inputs.depth], api_json, api_name="search", **HEAVY)
    results.pick.input(events.details, [session, results.pick, known], [results.details, results.detail_image],
                       api_name="details")
    results.clicked.change(events.card_details, [session, results.clicked, known],
                           [results.details, results.detail_image, results.pick], api_name="card_details", **INTERNAL)
    results.export.click(events.export, [session, known], results.export_url, api_name="export", **INTERNAL).success(
        None, results.export_url, None, js=DOWNLOAD_JS)
    return search_after


def wire_warmup(demo: gr.Blocks, events: DemoEvents) -> None:
    """A line under the status line with the background warm-up's progress; polled every 2 s while it runs."""
    import gradio as gr

    line = gr.HTML("", elem_id="warmup")
    timer = gr.Timer(2.0, active=True)
    # concurrency_limit=None: a status poll never waits in the queue behind a visitor's model work
    timer.tick(events.warmup_line, None, [line, timer], api_name="warmup", show_progress="hidden",
               concurrency_limit=None, **INTERNAL)
    demo.load(events.warmup_line, None, [line, timer], api_name="warmup_on_load", show_progress="hidden",
              concurrency_limit=None, **INTERNAL)


def wire_models(demo: gr.Blocks, events: DemoEvents, inputs: Inputs, status: Any, embedder: str,
                reranker: str) -> None:
    """Availability labels on page load, refusal of unavailable picks, and the status line."""
    import gradio as gr

    kept_embedder, kept_reranker = gr.State(embedder), gr.State(reranker)
    demo.load(events.refresh_models, [inputs.embedder, inputs.reranker], [inputs.embedder, inputs.reranker, status],
              api_name="models", **INTERNAL)
    # `select`, not `input`: Gradio fires a dropdown's input event twice per pick (two identical warnings)
    inputs.embedder.select(events.pick_embedder, [inputs.embedder, kept_embedder], [inputs.embedder, kept_embedder],
                           api_name="pick_embedder", **INTERNAL)
    inputs.reranker.select(events.pick_reranker, [inputs.reranker, kept_reranker], [inputs.reranker, kept_reranker],
                           api_name="pick_reranker", **INTERNAL)
    inputs.embedder.change(events.compare_switch, inputs.embedder, inputs.compare, api_name="compare_switch",
                           **INTERNAL)
    gr.on([inputs.embedder.change, inputs.reranker.change], events.model_status, [inputs.embedder, inputs.reranker],
          status, api_name="model_status", **INTERNAL)


def launch_options(state: DemoState, scratch: Scratch | None = None) -> dict[str, Any]:
    """What `Blocks.launch` needs besides host/port: theme, CSS, the upload cap, no served folders, the
    route serving the corpus' own images, and the disk cap over uploads (checked after each one).

    Also cleans up what earlier demo processes left in the scratch folder (this runs once, at launch).
    """
    from mmembed.ui.files import corpus_route, download_route
    from mmembed.ui.scratch import Scratch

    scratch = scratch or Scratch()
    scratch.clean_start()
    return {"theme": make_theme(), "css": CSS + WORKBENCH_CSS, "head": CARD_CLICK_JS + FAILURE_CLICK_JS,
            "allowed_paths": state.allowed_paths(),
            "max_file_size": MAX_UPLOAD,
            "app_kwargs": {"routes": [corpus_route(state.corpus_files), download_route(state.downloads)],
                           "middleware": [scratch.upload_middleware()]}}
