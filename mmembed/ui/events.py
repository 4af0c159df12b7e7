"""The page's event functions: one `DemoEvents` object whose methods take exactly the page's inputs.

Each method turns `mmembed.ui.handlers` results into component updates; `mmembed.ui.layout` wires the
methods to the components. The page keeps the current search's `SearchReport` in a `gr.State`.
The reranked column fills progressively: `rerank` is a generator that yields after every scored batch.
"""

from __future__ import annotations

import functools
import html
import inspect
import logging
from collections.abc import Callable, Iterator
from typing import Any

import gradio as gr

from mmembed.pipeline import SearchReport
from mmembed.progress import ProgressFn
from mmembed.types import MMEmbedError
from mmembed.ui import handlers as h
from mmembed.ui.compare import RAND_PLACEHOLDER, column_labels, switch_info, twin_stage
from mmembed.ui.plot import render_mix_chart
from mmembed.ui.render import render_bias_summary, render_column, render_detail_image, render_details, render_status
from mmembed.ui.scratch import Scratch
from mmembed.ui.state import DemoState

log = logging.getLogger("mmembed.ui")

FIRST_PLACEHOLDER = "First-stage results appear here."
SECOND_PLACEHOLDER = "Reranked results appear here."


def user_error(exc: BaseException | str, where: str = "search") -> Exception:
    """The gr.Error a visitor reads for bad input, logged as ONE line: a traceback is for program faults."""
    message = str(exc)
    log.info("user error in %s: %s", where, message.replace("\n", " "))
    # Gradio renders error text as HTML: escape it (file names and queries come from the visitor).
    return gr.Error(html.escape(message, quote=False), title="Can't search with that", print_exception=False)


def program_fault(where: str) -> Exception:
    """For a fault of the program (call inside `except`): the traceback goes to the log, once; the visitor
    reads that the server failed, not Gradio's bare "Error" (and no traceback or server path)."""
    log.exception("fault in %s", where)
    return gr.Error("Something went wrong on the server, not with your query; it has been logged. Try again, or "
                    "pick another model.", title="Server error", print_exception=False)


def progress_fn(progress: Any) -> ProgressFn | None:
    """gr.Progress as a ProgressFn (None stays None: a benchmark or test calling the events directly)."""
    if progress is None:
        return None

    def update(done: int, total: int, description: str) -> None:
        progress((done, max(total, 1)), desc=description)

    return update


def as_function(method: Callable[..., Any]) -> Callable[..., Any]:
    """A plain function calling `method` (generators stay generators), so decorators such as ZeroGPU's
    `spaces.GPU` can mark it; Gradio reads the method's signature through `__wrapped__`."""
    if inspect.isgeneratorfunction(method):
        @functools.wraps(method)
        def stream(*args: Any, **kwargs: Any) -> Iterator[Any]:
            yield from method(*args, **kwargs)

        return stream

    @functools.wraps(method)
    def call(*args: Any, **kwargs: Any) -> Any:
        return method(*args, **kwargs)

    return call


class DemoEvents:
    """What every event of the page does, for one shared `DemoState`."""

    def __init__(self, state: DemoState, scratch: Scratch) -> None:
        self.state = state
        self.scratch = scratch  # bounded disk area for exports

    # --- search: first column at once, then the reranked column batch by batch ------------------------

    def column(self, payload: dict[str, Any], stage: str | None, placeholder: str, model: str | None = None) -> str:
        stage_id = "first" if stage == "first_stage" else "reranked"
        return render_column(payload[stage] if stage else None, payload["query"]["target_label"],
                             placeholder=placeholder, stage_id=stage_id, image_file=self.state.image_file,
                             model=model)

    def outputs(self, report: SearchReport, *, first: bool, known: Any = None,
                twin: SearchReport | None = None) -> tuple[Any, ...]:
        """session, first column, second column, plot, bias summary, status, inspect list, JSON view, export,
        then the compare switch's three: the M_rand report (session), its column, and whether that column shows.

        `known`: the visitor's uploaded evaluation set (session state), whose positives are marked too.
        `twin`: the same query through the embedder's M_rand (the compare switch is on), else None."""
        payload = h.api_payload(self.state, report, known)
        twin_payload = h.api_payload(self.state, twin, known) if twin is not None else None
        model = column_labels(report, twin)[0] if twin is not None else None
        return (
            report,
            self.column(payload, "first_stage", FIRST_PLACEHOLDER, model),
            self.column(payload, None if first else "reranked", "Reranking…" if first else SECOND_PLACEHOLDER),
            render_mix_chart(payload, twin_payload),
            render_bias_summary(payload, twin_payload),
            render_status(payload),
            gr.Dropdown(choices=h.result_choices(report), value=None),
            payload,
            gr.Button(interactive=True),  # the export is written only when the visitor asks for it
            *self.twin_outputs(report, twin, twin_payload, shown=twin is not None),
        )

    def twin_outputs(self, report: SearchReport | None, twin: SearchReport | None,
                     twin_payload: dict[str, Any] | None, *, shown: bool) -> tuple[Any, ...]:
        """The M_rand report (session), its column, and the column's box (shown while the switch is on)."""
        if twin is None or twin_payload is None or report is None:
            column = render_column(None, "", placeholder=RAND_PLACEHOLDER, stage_id="rand")
        else:
            column = render_column(twin_payload["first_stage"], twin_payload["query"]["target_label"],
                                   placeholder=RAND_PLACEHOLDER, stage_id="rand", image_file=self.state.image_file,
                                   model=column_labels(report, twin)[1])
        return twin, column, gr.Column(visible=shown)

    def first(self, text, image, target, mode, top_k, embedder, depth, known=None, compare=False,
              progress=gr.Progress()):  # noqa: B008
        try:
            request = h.parse_request(text, image, target, mode, top_k, embedder, depth, state=self.state)
            report = h.first_stage(self.state, request, progress_fn(progress))
        except MMEmbedError as exc:
            raise user_error(exc, "first_stage") from exc
        except Exception as exc:
            raise program_fault("first_stage") from exc
        for note in h.notes_to_toast(report.notes):
            gr.Warning(html.escape(note))
        return self.outputs(report, first=True, known=known, twin=self._twin(report, compare, progress))

    def _twin(self, report: SearchReport, compare: Any, progress: Any) -> SearchReport | None:
        """The compare switch's M_rand report (its index is built once, with progress, like any embedder's); None
        when off, when this embedder has none, or when it cannot run (a warning says why: the search stands)."""
        try:
            return twin_stage(self.state, report, bool(compare), progress_fn(progress))
        except MMEmbedError as exc:
            log.info("compare: %s", exc)
            gr.Warning(html.escape(f"The M_rand comparison could not run: {exc}"))
            return None

    def rerank(self, report, rerank_on, reranker, known=None, twin=None, progress=gr.Progress()):  # noqa: B008
        """Yields the page after every scored batch (cards fill in), the final order last."""
        if report is None:
            raise user_error("Run a search first.", "rerank")
        for step in h.second_stage_steps(self.state, report, reranker, bool(rerank_on), progress_fn(progress)):
            if step.reranked.status == "running":  # only the reranked column changes until the last step
                column = self.column(h.api_payload(self.state, step, known), "reranked", "Reranking…")
                yield (gr.skip(), gr.skip(), column, *(gr.skip(),) * 9)
            else:
                yield self.outputs(step, first=False, known=known, twin=twin)

    def toggle_compare(self, report, compare, known=None, progress=gr.Progress()):  # noqa: B008
        """The switch flipped after a search: run (or drop) the M_rand column for the query on the page.

        Returns the M_rand report, its column, its box, and the plot and summary redrawn with (or without) it."""
        try:
            twin = twin_stage(self.state, report, bool(compare), progress_fn(progress))
        except MMEmbedError as exc:
            raise user_error(exc, "compare") from exc
        except Exception as exc:
            raise program_fault("compare") from exc
        twin_payload = h.api_payload(self.state, twin, known) if twin is not None else None
        twin_box = self.twin_outputs(report, twin, twin_payload, shown=bool(compare))
        if report is None:  # no search yet: the box shows (or hides) its placeholder, nothing else changes
            return (*twin_box, gr.skip(), gr.skip(), gr.skip())
        payload = h.api_payload(self.state, report, known)
        model = column_labels(report, twin)[0] if twin is not None else None
        return (*twin_box, render_mix_chart(payload, twin_payload), render_bias_summary(payload, twin_payload),
                self.column(payload, "first_stage", FIRST_PLACEHOLDER, model))

    def compare_switch(self, embedder: str | None):
        """The switch shows only for an embedder with a registered M_rand that can run here."""
        twin = self.state.random_negatives_of(embedder)
        return gr.Checkbox(visible=twin is not None, info=switch_info(twin))

    def search_api(self, text, image, target, mode, top_k, rerank_on, embedder, reranker, depth,
                   progress=gr.Progress()):  # noqa: B008
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
            rerank_on: rerank the candidates (with an MLLM, or offline the shipped cross-encoder)
            embedder: first-stage embedder name
            reranker: reranker name
            depth: candidates the reranker sees (at least top_k)
        """
        try:
            return h.search(self.state, text, image, target, mode, top_k, bool(rerank_on), embedder, reranker,
                            depth, progress_fn(progress))
        except MMEmbedError as exc:
            raise user_error(exc, "search") from exc
        except Exception as exc:
            raise program_fault("search") from exc

    # --- inspecting a result ----------------------------------------------------------------------------

    def details(self, report, item_id, known=None):
        try:
            details = h.item_details(self.state, report, item_id, known)
        except MMEmbedError as exc:
            raise user_error(exc, "details") from exc
        url = self.state.corpus_files().url_of(details["image"]) if details else None
        return render_details(details), render_detail_image(url, details["id"] if details else "")

    def card_details(self, report, clicked_value, known=None):
        item_id = (clicked_value or "").split("|", 1)[0]  # "<id>|<time>": clicking the same card again still fires
        return (*self.details(report, item_id or None, known), gr.Dropdown(value=item_id or None))

    def export(self, report, known=None):
        try:
            path = h.export_json(self.state, report, self.scratch, known)
        except MMEmbedError as exc:
            raise user_error(exc, "export") from exc
        return self.state.downloads.offer(path, "mmembed-results.json")  # a token URL: no server path

    # --- models -----------------------------------------------------------------------------------------

    def model_line(self, embedder: str, reranker: str, note: str | None = None, check_gpu: bool = True) -> str:
        parts = [f"Embedder <code>{html.escape(embedder)}</code>", f"reranker <code>{html.escape(reranker)}</code>"]
        problems = []
        for kind, name in (("embedder", embedder), ("reranker", reranker)):
            try:
                self.state.check_usable(kind, name, check_gpu=check_gpu)
            except MMEmbedError as exc:
                problems.append(html.escape(str(exc)))
        problems += [html.escape(note)] if note else []
        extra = "".join(f'<br><span class="mm-warn">{p}</span>' for p in problems)
        return f'<div class="mm-status">{" · ".join(parts)}{extra}</div>'

    def warmup_line(self) -> tuple[str, Any]:
        """The background warm-up's line (reranker image features) and the timer, stopped once it has ended."""
        text = self.state.warmup_status()
        line = f'<div class="mm-status mm-warmup">{html.escape(text)}</div>' if text else ""
        return line, gr.Timer(active=self.state.warmup_running())

    def model_status(self, embedder: str, reranker: str) -> str:
        notes = [note for note in (self.state.embedder_note(embedder), self.state.reranker_note(reranker)) if note]
        return self.model_line(embedder, reranker, " ".join(notes) or None)

    def refresh_models(self, embedder: str, reranker: str):
        """Full availability labels (the GPU check imports torch, so it waits for the first page load)."""
        return (gr.Dropdown(choices=[(c.label, c.name) for c in self.state.embedder_choices()]),
                gr.Dropdown(choices=[(c.label, c.name) for c in self.state.reranker_choices()]),
                self.model_status(embedder, reranker))

    def _guard(self, kind: str, name: str | None, previous: str | None) -> tuple[Any, str | None]:
        kept, warning = h.pick_backend(self.state, kind, name, previous)
        if warning:
            gr.Warning(html.escape(warning))
        return gr.Dropdown(value=kept), kept

    def pick_embedder(self, name: str | None, previous: str | None):
        return self._guard("embedder", name, previous)

    def pick_reranker(self, name: str | None, previous: str | None):
        return self._guard("reranker", name, previous)
