"""The Evaluate tab: run a query set through one or two embedders, read the figures, inspect the failures.

Components (`build_evaluate_tab`), the events' functions (`EvaluateEvents`) and their wiring
(`wire_evaluate`). Clicking a failure fills the Search tab with that query and runs it there (both columns),
with the query's positives marked ✓ — the Search tab recognises the query by content (`ui.ground_truth`).

Concurrency: the Run event has its own concurrency group ("evaluate", one at a time), separate from the
search events' "model" group, so a search is never queued behind a whole evaluation; the two share the
models through `DemoState.model_turn`, which the evaluation takes one query at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gradio as gr

from mmembed.corpus import TASK_NAMES
from mmembed.types import MMEmbedError
from mmembed.ui import evaluate_handlers as eh
from mmembed.ui.events import progress_fn, user_error
from mmembed.ui.scratch import Scratch
from mmembed.ui.state import DemoState
from mmembed.ui.workbench_view import render_confusion, render_exports, render_failures, render_summary
from mmembed.workbench import FAILURE_KINDS, EvaluationCancelled

EVALUATE_GROUP = {"concurrency_id": "evaluate", "concurrency_limit": 1}  # apart from the searches' "model" group
INTERNAL = {"api_visibility": "undocumented"}


@dataclass
class EvalTab:
    """The Evaluate tab's components."""

    upload: gr.File
    embedder: gr.Dropdown
    compare: gr.Dropdown
    mode: gr.Radio
    rerank_on: gr.Checkbox
    reranker: gr.Dropdown
    depth: gr.Slider
    k: gr.Slider
    run: gr.Button
    cancel: gr.Button
    status: gr.HTML
    summary: gr.HTML
    confusion: gr.HTML
    task: gr.Dropdown
    kind: gr.Dropdown
    model: gr.Dropdown
    failures: gr.HTML
    clicked: gr.Textbox
    exports: gr.HTML

    def run_args(self) -> list[Any]:
        return [self.upload, self.embedder, self.compare, self.mode, self.rerank_on, self.reranker, self.depth,
                self.k]


def build_evaluate_tab(state: DemoState, default_embedder: str) -> EvalTab:
    embedders = [(c.label, c.name) for c in state.embedder_choices(check_gpu=False)]
    with gr.Row(equal_height=False):
        with gr.Column(scale=3):
            upload = gr.File(label=f"Query set: M-BEIR query jsonl ≤ {eh.MAX_UPLOAD_MB} MB referring to the loaded "
                             "corpus (empty: the shipped query set)", file_types=[".jsonl"], type="filepath",
                             elem_id="eval-upload", height=90)
            embedder = gr.Dropdown(embedders, value=default_embedder, label="Embedder", elem_id="eval-embedder")
            compare = gr.Dropdown([(eh.NO_COMPARE, eh.NO_COMPARE), *embedders], value=eh.NO_COMPARE,
                                  label="Compare with (side by side)", elem_id="eval-compare")
        with gr.Column(scale=2):
            mode = gr.Radio([("natural", "natural"), ("filtered", "filtered")], value="natural", label="Mode",
                            elem_id="eval-mode")
            rerank_on = gr.Checkbox(value=False, label="Rerank with", elem_id="eval-rerank-on")
            reranker = gr.Dropdown([(c.label, c.name) for c in state.reranker_choices(check_gpu=False)],
                                   value=state.default_reranker(), label="Reranker", elem_id="eval-reranker")
            depth = gr.Slider(1, eh.MAX_DEPTH, value=20, step=1, label="Candidates to rerank", elem_id="eval-depth")
            k = gr.Slider(1, 100, value=10, step=1, label="A failure misses every positive in the top k",
                          elem_id="eval-k")
    with gr.Row():
        run = gr.Button("Run evaluation", variant="primary", elem_id="eval-run")
        cancel = gr.Button("Cancel", variant="stop", elem_id="eval-cancel")
    status = gr.HTML(elem_id="eval-status")
    summary = gr.HTML(render_summary(None), elem_id="eval-summary")
    confusion = gr.HTML(render_confusion(None), elem_id="eval-confusion")
    with gr.Row():
        task = gr.Dropdown([eh.ALL, *TASK_NAMES], value=eh.ALL, label="Task", elem_id="eval-task")
        kind = gr.Dropdown([eh.ALL, *FAILURE_KINDS], value=eh.ALL, label="Failure kind", elem_id="eval-kind")
        model = gr.Dropdown([eh.ALL], value=eh.ALL, label="Model", elem_id="eval-model")
    failures = gr.HTML(render_failures(None, None, []), elem_id="eval-failures")
    clicked = gr.Textbox(visible="hidden", elem_id="failure-clicked")  # set by FAILURE_CLICK_JS
    # links to /download/<token>, written with the run (gr.DownloadButton would send the files' server paths)
    exports = gr.HTML(render_exports(None, None), elem_id="eval-exports")
    return EvalTab(upload, embedder, compare, mode, rerank_on, reranker, depth, k, run, cancel, status, summary,
                   confusion, task, kind, model, failures, clicked, exports)


class EvaluateEvents:
    """The Evaluate tab's event functions for one shared DemoState."""

    def __init__(self, state: DemoState, scratch: Scratch) -> None:
        self.state = state
        self.scratch = scratch
        self.tokens = eh.CancelTokens()

    def start(self) -> str:
        """A fresh cancel token for the run about to start (kept in the visitor's session)."""
        token, _ = self.tokens.start()
        return token

    def cancel(self, token: str | None) -> str:
        cancelled = self.tokens.cancel(token)
        return '<div class="mm-status">Cancelling…</div>' if cancelled else gr.skip()

    def _evaluate(self, token, upload, embedder, compare, mode, rerank_on, reranker, depth, k, progress):
        request = eh.parse_eval_request(self.state, upload, embedder, compare, mode, bool(rerank_on), reranker,
                                        depth, k)
        try:
            return eh.run_evaluation(self.state, request, progress_fn(progress), self.tokens.event(token))
        finally:
            self.tokens.finish(token or "")

    def run(self, token, upload, embedder, compare, mode, rerank_on, reranker, depth, k,
            progress=gr.Progress()):  # noqa: B008
        """Evaluate and show: session, status, summary, confusion, failures, model filter, two exports."""
        try:
            report, query_set = self._evaluate(token, upload, embedder, compare, mode, rerank_on, reranker, depth,
                                               k, progress)
        except EvaluationCancelled:
            return (gr.skip(), '<div class="mm-status">Evaluation cancelled.</div>', *(gr.skip(),) * 5)
        except MMEmbedError as exc:
            raise user_error(exc, "evaluate") from exc
        session = {"report": report, "query_set": query_set,
                   "known": eh.session_ground_truth(query_set, shipped=upload is None)}
        json_path, csv_path = eh.export_report(report, self.scratch.exports)
        failures = report.failures()
        seconds = sum(run.seconds for run in report.models)
        status = (f'<div class="mm-status">{report.queries} queries · {len(failures)} failure record(s) · '
                  f'{seconds:.1f} s</div>')
        return (session, status, render_summary(report), render_confusion(report),
                render_failures(report, self.state.corpus, failures),
                gr.Dropdown(choices=[eh.ALL, *(run.name for run in report.models)], value=eh.ALL),
                render_exports(self.state.downloads.offer(json_path), self.state.downloads.offer(csv_path)))

    def evaluate_api(self, upload, embedder, compare, mode, rerank_on, reranker, depth, k,
                     progress=gr.Progress()):  # noqa: B008
        """Evaluate a query set: per-task Recall@1/5/10 of one or two embedders and their difference,
        wrong-modality rates, the modality confusion and the failure records.

        Returns {query_set, queries, mode, k, reranker, rerank_depth, models: [{embedder, stages: {first,
        reranked?: {recall, queries, wrong_modality_rate}}, confusion, failures: [{qid, task, model, kinds,
        positives, stages: {first_positive_rank, rank1_id, rank1_modality, first_wrong_id, ...}}]}],
        difference}.

        Args:
            upload: an M-BEIR query jsonl (≤ 5 MB) referring to the loaded corpus; None: the shipped query set
            embedder: the embedder to evaluate
            compare: a second embedder, or "(none)"
            mode: natural or filtered
            rerank_on: rerank each query's candidates
            reranker: reranker name
            depth: candidates to rerank (1-50)
            k: a query whose positives are all missed in the top k is a failure (1-100)
        """
        try:
            report, _ = self._evaluate(None, upload, embedder, compare, mode, rerank_on, reranker, depth, k,
                                       progress)
        except MMEmbedError as exc:
            raise user_error(exc, "evaluate") from exc
        return report.to_dict()

    def filter(self, session, task, kind, model):
        report = (session or {}).get("report")
        return render_failures(report, self.state.corpus if report else None,
                               eh.filter_failures(report, task, kind, model))

    def open_failure(self, session, clicked_value):
        """Fill the Search tab with a failure's query (and switch to it); the search itself is chained."""
        if not session or not clicked_value:
            raise user_error("Run an evaluation first.", "open_failure")
        qid, _, rest = clicked_value.partition("|")
        model = rest.rsplit("|", 1)[0]  # "<qid>|<model>|<time>": clicking the same row again still fires
        try:
            found = eh.failure_search(self.state, session["report"], session["query_set"], qid, model)
        except MMEmbedError as exc:
            raise user_error(exc, "open_failure") from exc
        image = eh.copy_for_upload(found["image"], self.scratch.exports) if found["image"] else None
        # both columns: reranked with the evaluation's reranker, or the Search tab's own when it ran without one
        return (gr.Tabs(selected="search"), found["text"], image, found["target"], found["mode"],
                found["embedder"], True, found["reranker"] or gr.skip(),
                found["depth"] or gr.skip(), session.get("known"))


def wire_evaluate(events: EvaluateEvents, tab: EvalTab, tabs: gr.Tabs, inputs: Any, known: gr.State,
                  search_after: Any) -> None:
    """Run (own concurrency group) with progress and Cancel; the `/evaluate` API; filters; exports are made
    with the run; clicking a failure fills the Search tab, switches to it and runs the search there."""
    from mmembed.devices import zero_gpu
    from mmembed.ui.events import as_function

    session = gr.State(None)  # {"report", "query_set", "known"} of this visitor's last evaluation
    token = gr.State(None)  # this visitor's running evaluation, for Cancel
    outputs = [session, tab.status, tab.summary, tab.confusion, tab.failures, tab.model, tab.exports]
    started = tab.run.click(events.start, None, token, api_name="evaluate_start", **INTERNAL)
    running = started.then(zero_gpu(as_function(events.run)), [token, *tab.run_args()], outputs,
                           api_name="evaluate_run", show_progress_on=[tab.status], **INTERNAL, **EVALUATE_GROUP)
    running.success(lambda s: s["known"] if s else None, session, known, api_name="evaluate_known", **INTERNAL)
    tab.cancel.click(events.cancel, token, tab.status, api_name="evaluate_cancel", cancels=[running], **INTERNAL)
    api_button, api_json = gr.Button(visible=False), gr.JSON(visible=False)
    api_button.click(zero_gpu(as_function(events.evaluate_api)), tab.run_args(), api_json, api_name="evaluate",
                     **EVALUATE_GROUP)
    gr.on([tab.task.change, tab.kind.change, tab.model.change], events.filter,
          [session, tab.task, tab.kind, tab.model], tab.failures, api_name="evaluate_filter", **INTERNAL)
    opened = tab.clicked.change(events.open_failure, [session, tab.clicked],
                                [tabs, inputs.text, inputs.image, inputs.target, inputs.mode, inputs.embedder,
                                 inputs.rerank_on, inputs.reranker, inputs.depth, known],
                                api_name="open_failure", **INTERNAL)
    search_after(opened)
