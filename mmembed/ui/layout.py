"""The Gradio Blocks of the demo: components, events and launch options. Logic lives in `handlers`.

Events: Search (or Enter, or an example) runs the first stage and shows it at once; `.success()` then
runs the reranker into the second column with its own progress bar. Every event has an `api_name`;
`search` (a hidden button) returns both stages as one JSON object for `gradio_client` users. Picking an
unavailable model ("⊘ … — reason") is refused with a warning (Gradio cannot disable single options).
"""

from __future__ import annotations

import html
import inspect
import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from mmembed.devices import zero_gpu
from mmembed.progress import ProgressFn
from mmembed.types import MMEmbedError
from mmembed.ui import handlers as h
from mmembed.ui.files import corpus_route
from mmembed.ui.plot import render_mix_chart
from mmembed.ui.render import (
    render_bias_summary,
    render_column,
    render_details,
    render_status,
)
from mmembed.ui.scratch import Scratch
from mmembed.ui.state import DemoState
from mmembed.ui.theme import CARD_CLICK_JS, CSS, HEADER, make_theme

if TYPE_CHECKING:
    import gradio as gr

    from mmembed.ui.examples import Example

log = logging.getLogger("mmembed.ui")

MAX_UPLOAD = "10mb"  # far above any photo worth embedding; load_image caps pixels separately
QUEUE_SIZE = 32  # visitors waiting beyond this get "queue full" instead of a minutes-long wait
FIRST_PLACEHOLDER = "First-stage results appear here."
SECOND_PLACEHOLDER = "Reranked results appear here."


def _user_error(exc: BaseException | str, where: str = "search") -> Exception:
    """The gr.Error a visitor reads for bad input, logged as ONE line: a traceback is for program faults."""
    import gradio as gr

    message = str(exc)
    log.info("user error in %s: %s", where, message.replace("\n", " "))
    # Gradio renders error text as HTML: escape it (file names and queries come from the visitor).
    return gr.Error(html.escape(message, quote=False), title="Can't search with that", print_exception=False)


def _program_fault(where: str) -> Exception:
    """For a fault of the program (call inside `except`): the traceback goes to the log, once; the visitor
    reads that the server failed, not Gradio's bare "Error" (and no traceback or server path)."""
    import gradio as gr

    log.exception("fault in %s", where)
    return gr.Error("Something went wrong on the server, not with your query; it has been logged. Try again, or "
                    "pick another model.", title="Server error", print_exception=False)


def _progress_fn(progress: Any) -> ProgressFn:
    def update(done: int, total: int, description: str) -> None:
        progress((done, max(total, 1)), desc=description)

    return update


def query_image_component(**kwargs: Any) -> gr.Image:
    """gr.Image that hands over the uploaded file untouched, so `load_image` (not Gradio's PIL.open)
    decodes it: a zero-byte, corrupt or bomb upload then gets our clear message instead of a crash.

    The override is set on the instance: a gr.Image subclass would make Gradio write a .pyi stub into
    this package at import time.
    """
    import gradio as gr
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
            raise _user_error("The pasted image can't be used: it is not a PNG, JPEG, GIF, WebP or BMP image "
                              "that can be decoded. Paste or upload another one.", "image paste") from exc

    component.preprocess = preprocess  # type: ignore[method-assign]
    return component


def build_demo(state: DemoState | None = None, *, examples: list[Example] | None = None) -> gr.Blocks:
    """The demo's Blocks. `state` defaults to the real registries and sample corpus (loaded lazily)."""
    import gradio as gr

    from mmembed.ui.examples import load_examples

    state = state or DemoState()
    scratch = Scratch()
    settings = state.settings
    default_embedder, startup_note = state.default_embedder()
    if examples is None:
        examples = load_examples(settings.queries)

    def model_line(embedder: str, reranker: str, note: str | None = None, check_gpu: bool = True) -> str:
        parts = [f"Embedder <code>{html.escape(embedder)}</code>", f"reranker <code>{html.escape(reranker)}</code>"]
        problems = []
        for kind, name in (("embedder", embedder), ("reranker", reranker)):
            try:
                state.check_usable(kind, name, check_gpu=check_gpu)
            except MMEmbedError as exc:
                problems.append(html.escape(str(exc)))
        problems += [html.escape(note)] if note else []
        extra = "".join(f'<br><span class="mm-warn">{p}</span>' for p in problems)
        return f'<div class="mm-status">{" · ".join(parts)}{extra}</div>'

    def outputs_for(session: dict[str, Any], first: bool) -> tuple[Any, ...]:
        payload = session["payload"]
        target = payload["query"]["target_label"]
        plot = render_mix_chart(payload)
        second = (
            render_column(None, target, placeholder="Reranking…", stage_id="reranked")
            if first
            else render_column(payload["reranked"], target, placeholder=SECOND_PLACEHOLDER, stage_id="reranked",
                               image_file=state.image_file)
        )
        return (
            session,
            render_column(payload["first_stage"], target, placeholder=FIRST_PLACEHOLDER, stage_id="first",
                          image_file=state.image_file),
            second,
            plot,
            render_bias_summary(payload),
            render_status(payload),
            gr.Dropdown(choices=h.result_choices(session), value=None),
            h.public_payload(payload),
            gr.Button(interactive=True),  # the export is written only when the visitor asks for it
        )

    @zero_gpu  # ZeroGPU Spaces attach a GPU only inside decorated calls; a no-op elsewhere
    def run_first(text, image, target, mode, top_k, embedder, depth, progress=gr.Progress()):  # noqa: B008
        try:
            request = h.parse_request(text, image, target, mode, top_k, embedder, depth, state=state)
            session = h.first_stage(state, request, _progress_fn(progress))
        except MMEmbedError as exc:
            raise _user_error(exc, "first_stage") from exc
        except Exception as exc:
            raise _program_fault("first_stage") from exc
        for note in h.notes_to_toast(session["payload"]["notes"]):
            gr.Warning(html.escape(note))
        return outputs_for(session, first=True)

    @zero_gpu
    def run_second(session, rerank_on, reranker, progress=gr.Progress()):  # noqa: B008
        if not session:
            raise _user_error("Run a search first.", "rerank")
        return outputs_for(h.second_stage(state, session, reranker, bool(rerank_on), _progress_fn(progress)), False)

    @zero_gpu
    def run_api(text, image, target, mode, top_k, rerank_on, embedder, reranker, depth, progress=gr.Progress()):  # noqa: B008
        """Search the corpus and rerank: both ranked lists, each stage's modality mix and wrong-modality rate.

        Returns {query, embedder, instruction, notes, pool: {name, size, mix}, first_stage and reranked:
        {hits: [{rank, id, modality, score, matches_target, text (snippet), image (path in the corpus),
        image_url (server URL + this), movement_label (reranked only)}], modality_mix, wrong_modality_rate,
        status}, timings_ms}.

        Args:
            text: query text (may be empty when an image is given)
            image: query image (optional)
            target: image, text or image+text
            mode: natural (rank the whole pool) or filtered (only the target modality)
            top_k: results per stage, 1-50
            rerank_on: rerank the candidates with an MLLM
            embedder: first-stage embedder name
            reranker: reranker name
            depth: candidates the reranker sees (at least top_k)
        """
        try:
            return h.search(state, text, image, target, mode, top_k, bool(rerank_on), embedder, reranker, depth,
                            _progress_fn(progress))
        except MMEmbedError as exc:
            raise _user_error(exc, "search") from exc
        except Exception as exc:
            raise _program_fault("search") from exc

    def show_details(session, item_id):
        try:
            details = h.item_details(state, session, item_id)
        except MMEmbedError as exc:
            raise _user_error(exc, "details") from exc
        picture = None
        if details and details.get("image"):
            from mmembed.images import ImageLoadError, load_image

            try:
                picture = load_image(state.image_file(details["image"]), max_side=1024)
            except ImageLoadError as exc:
                gr.Warning(html.escape(str(exc)))
        return render_details(details), gr.Image(value=picture, visible=picture is not None)

    def export(session):
        try:
            path = h.export_json(session, scratch)
        except MMEmbedError as exc:
            raise _user_error(exc, "export") from exc
        return str(path)  # already in Gradio's folder: served as is, not copied

    def refresh_models(embedder_name, reranker_name):
        """Full availability labels (the GPU check imports torch, so it waits for the first page load)."""
        return (gr.Dropdown(choices=[(c.label, c.name) for c in state.embedder_choices()]),
                gr.Dropdown(choices=[(c.label, c.name) for c in state.reranker_choices()]),
                model_line(embedder_name, reranker_name, state.embedder_note(embedder_name)))

    def guard_pick(kind: str, name: str | None, previous: str | None) -> tuple[Any, str | None]:
        kept, warning = h.pick_backend(state, kind, name, previous)
        if warning:
            gr.Warning(html.escape(warning))
        return gr.Dropdown(value=kept), kept

    def show_clicked(session, clicked_value):
        item_id = (clicked_value or "").split("|", 1)[0]  # "<id>|<time>": clicking the same card again still fires
        return (*show_details(session, item_id or None), gr.Dropdown(value=item_id or None))

    # delete_cache: uploads and exports Gradio copied into its cache go after a day (checked hourly)
    with gr.Blocks(title="mmembed · multimodal retrieval with MLLMs", delete_cache=(3600, 86400)) as demo:
        gr.HTML(HEADER)
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                text = gr.Textbox(label="Text query", placeholder="e.g. a red apple on a table", lines=2,
                                  max_lines=6, max_length=h.MAX_QUERY_CHARS, elem_id="query-text")
                image = query_image_component(label="Image query (optional: upload, paste or webcam)",
                                              type="filepath", sources=["upload", "clipboard", "webcam"],
                                              height=210, elem_id="query-image")
            with gr.Column(scale=2):
                target = gr.Radio(list(h.TARGETS), value="image", label="Retrieve (target modality)",
                                  elem_id="target")
                mode = gr.Radio([("natural: rank the whole pool", "natural"),
                                 ("filtered: only the target modality", "filtered")],
                                value="natural", label="Mode", elem_id="mode")
                top_k = gr.Slider(1, h.MAX_TOP_K, value=settings.top_k, step=1, label="top-k", elem_id="top-k")
                rerank_on = gr.Checkbox(value=True, label="Rerank with an MLLM", elem_id="rerank-on")
                with gr.Accordion("Models", open=False):
                    embedder = gr.Dropdown([(c.label, c.name) for c in state.embedder_choices(check_gpu=False)],
                                           value=default_embedder, label="Embedder (first stage)",
                                           elem_id="embedder")
                    reranker = gr.Dropdown([(c.label, c.name) for c in state.reranker_choices(check_gpu=False)],
                                           value=state.default_reranker(), label="Reranker (second stage)",
                                           elem_id="reranker")
                    depth = gr.Slider(1, h.MAX_TOP_K, value=settings.rerank_top_k, step=1,
                                      label="Candidates to rerank (at least top-k)", elem_id="depth")
                search_btn = gr.Button("Search", variant="primary", elem_id="search-btn")
        status = gr.HTML(model_line(default_embedder, state.default_reranker(), startup_note, check_gpu=False),
                         elem_id="status")
        example_box = gr.Examples([e.row() for e in examples], inputs=[text, image, target, mode],
                                  example_labels=[e.label for e in examples], label="Examples (one per query type)",
                                  examples_per_page=8)
        with gr.Row(equal_height=False):
            with gr.Column():
                gr.HTML('<h3 class="mm-coltitle">① First-stage retrieval</h3>')
                first_html = gr.HTML(render_column(None, "", placeholder=FIRST_PLACEHOLDER, stage_id="first"),
                                     elem_id="first-stage")
            with gr.Column():
                gr.HTML('<h3 class="mm-coltitle">② After MLLM reranking</h3>')
                second_html = gr.HTML(render_column(None, "", placeholder=SECOND_PLACEHOLDER, stage_id="reranked"),
                                      elem_id="reranked")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                plot = gr.HTML(render_mix_chart(None), elem_id="mix-plot")
            with gr.Column(scale=2):
                bias_html = gr.HTML(elem_id="bias-summary")
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                pick = gr.Dropdown([], label="Inspect a result (or click a card above)", elem_id="inspect")
                clicked = gr.Textbox(visible="hidden", elem_id="clicked-id")  # set by CARD_CLICK_JS
                details_html = gr.HTML(render_details(None), elem_id="details")
            with gr.Column(scale=2):
                detail_image = gr.Image(label="Full image", type="pil", interactive=False, visible=False,
                                        height=320, elem_id="detail-image")
        with gr.Row():
            export_btn = gr.Button("Export results (JSON)", interactive=False, elem_id="export")
            # filled by `export` on request, then clicked by script: its click downloads the file
            download = gr.DownloadButton("Download", value=None, visible="hidden", elem_id="export-file")
        with gr.Accordion("JSON: the object the `search` API returns", open=False):
            json_view = gr.JSON(elem_id="json-view")
        session = gr.State(None)
        kept_embedder, kept_reranker = gr.State(default_embedder), gr.State(state.default_reranker())
        api_button = gr.Button(visible=False)
        api_json = gr.JSON(visible=False)

        search_inputs = [text, image, target, mode, top_k, embedder, depth]
        stage_outputs = [session, first_html, second_html, plot, bias_html, status, pick, json_view, export_btn]
        heavy = {"concurrency_id": "model", "concurrency_limit": 1}  # one model call at a time on a CPU box

        def wire(first_event: Any, suffix: str) -> None:
            first_event.success(run_second, [session, rerank_on, reranker], stage_outputs,
                                api_name=f"rerank{suffix}", show_progress_on=[second_html],
                                api_visibility="undocumented" if suffix else "public", **heavy)

        wire(gr.on([search_btn.click, text.submit], run_first, search_inputs, stage_outputs,
                   api_name="first_stage", show_progress_on=[first_html], **heavy), "")
        wire(example_box.load_input_event.then(run_first, search_inputs, stage_outputs, api_name="example_first_stage",
                                               show_progress_on=[first_html], api_visibility="undocumented",
                                               **heavy), "_example")
        api_button.click(run_api, [text, image, target, mode, top_k, rerank_on, embedder, reranker, depth], api_json,
                         api_name="search", **heavy)
        pick.input(show_details, [session, pick], [details_html, detail_image], api_name="details")
        export_btn.click(export, session, download, api_name="export", api_visibility="undocumented").success(
            None, js="() => { document.querySelector('#export-file')?.click(); }")
        # page plumbing: callable (api_name on every event) but kept out of "Use via API", which leads with `search`
        internal = {"api_visibility": "undocumented"}
        clicked.change(show_clicked, [session, clicked], [details_html, detail_image, pick], api_name="card_details",
                       **internal)
        demo.load(refresh_models, [embedder, reranker], [embedder, reranker, status], api_name="models", **internal)
        # `select`, not `input`: Gradio fires a dropdown's input event twice per pick (two identical warnings)
        embedder.select(lambda name, kept: guard_pick("embedder", name, kept), [embedder, kept_embedder],
                        [embedder, kept_embedder], api_name="pick_embedder", **internal)
        reranker.select(lambda name, kept: guard_pick("reranker", name, kept), [reranker, kept_reranker],
                        [reranker, kept_reranker], api_name="pick_reranker", **internal)
        gr.on([embedder.change, reranker.change], lambda e, r: model_line(e, r, state.embedder_note(e)),
              [embedder, reranker], status, api_name="model_status", **internal)
    demo.queue(default_concurrency_limit=2, max_size=QUEUE_SIZE)
    _explain_bad_inputs(demo)
    return demo


def _explain_bad_inputs(demo: gr.Blocks) -> None:
    """Inputs Gradio itself rejects (a wrong type, too few values: API clients) get a message, not {"error": null}.

    Gradio raises these before any handler runs, as plain exceptions whose text it hides from clients (it
    may name server internals) and logs with a traceback. They are the client's mistake: one log line, and
    a message naming the input and what it takes.
    """
    import gradio as gr

    original = demo.preprocess_data

    async def preprocess_data(block_fn: Any, inputs: list[Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return await original(block_fn, inputs, *args, **kwargs)
        except gr.Error:
            raise
        except Exception as exc:
            raise _user_error(_bad_inputs_message(block_fn, inputs, exc), block_fn.api_name or "event") from exc

    demo.preprocess_data = preprocess_data  # type: ignore[method-assign]


def _bad_inputs_message(block_fn: Any, inputs: list[Any], exc: Exception) -> str:
    names = [name for name in inspect.signature(block_fn.fn).parameters if name != "progress"] \
        if callable(block_fn.fn) else []
    if len(names) != len(block_fn.inputs):
        names = [getattr(block, "label", None) or f"input {i + 1}" for i, block in enumerate(block_fn.inputs)]
    endpoint = f"/{block_fn.api_name}" if block_fn.api_name else "this event"
    if len(inputs) < len(block_fn.inputs):
        return (f"{endpoint} takes {len(block_fn.inputs)} inputs ({', '.join(names)}); got {len(inputs)}. "
                f"Send every input, in this order.")
    found = re.search(r"at index (\d+)", str(exc))
    if found and int(found.group(1)) < len(names):
        index = int(found.group(1))
        block = block_fn.inputs[index]
        expected = {"Slider": "a number", "Number": "a number", "Checkbox": "true or false", "Textbox": "a string",
                    "Radio": "one of its choices", "Dropdown": "one of its choices",
                    "Image": "an image file (handle_file)"}.get(type(block).__name__, "another type")
        value = repr(inputs[index])
        value = value if len(value) <= 40 else value[:39] + "…"
        return f"{endpoint}: input '{names[index]}' must be {expected}, got {value} ({type(inputs[index]).__name__})."
    return f"{endpoint}: an input has the wrong type or shape; see the endpoint's parameters in the API page."


def launch_options(state: DemoState, scratch: Scratch | None = None) -> dict[str, Any]:
    """What `Blocks.launch` needs besides host/port: theme, CSS, the upload cap, no served folders, the
    route serving the corpus' own images, and the disk cap over uploads (checked after each one).

    Also cleans up what earlier demo processes left in the scratch folder (this runs once, at launch).
    """
    scratch = scratch or Scratch()
    scratch.clean_start()
    return {"theme": make_theme(), "css": CSS, "head": CARD_CLICK_JS, "allowed_paths": state.allowed_paths(),
            "max_file_size": MAX_UPLOAD,
            "app_kwargs": {"routes": [corpus_route(state.corpus_files)],
                           "middleware": [scratch.upload_middleware()]}}


def launch(state: DemoState | None = None, **kwargs: Any) -> Callable[..., Any] | Any:
    """Build and launch the demo (what app.py calls)."""
    state = state or DemoState()
    demo = build_demo(state)
    return demo.launch(**{**launch_options(state), **kwargs})
