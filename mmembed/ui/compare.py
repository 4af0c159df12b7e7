"""The page's compare switch: the same query through the embedder's M_rand, the same model trained with random
negatives only (the paper's modality-biased baseline), shown as a column beside the first stage.

Which embedder has such a twin is declared in the registry (`BackendInfo.random_negatives`, read through
`DemoState.random_negatives_of`); nothing here knows a model by name. The twin's index is built and cached like
any embedder's, and its first stage goes through `handlers.first_stage`, so it shares the result cache (keyed
by the query's content, never the visitor's file name) and the progress bar.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from mmembed.pipeline import SearchReport, StageReport
from mmembed.progress import ProgressFn
from mmembed.ui.handlers import SearchRequest, UserInputError, first_stage

if TYPE_CHECKING:
    from mmembed.ui.state import DemoState

RAND_PLACEHOLDER = "Tick “Compare with M_rand” and search: the same query through the model trained with random " \
                   "negatives appears here."


def switch_info(twin: str | None) -> str | None:
    """The switch's line under its label: which model the query also goes through."""
    return f"the same query through {twin}, trained with random negatives" if twin else None


def twin_of(state: DemoState, report: SearchReport | None) -> str | None:
    """The M_rand of the embedder that answered `report` (the one asked for, or the fallback that ran)."""
    if report is None:
        return None
    for name in (report.requested_embedder, report.embedder):
        twin = state.random_negatives_of(name)
        if twin is not None:
            return twin
    return None


def twin_stage(state: DemoState, report: SearchReport | None, compare: bool,
               progress: ProgressFn | None = None) -> SearchReport | None:
    """`report`'s query, mode, top-k and depth through the answering embedder's M_rand (first stage only).

    None when the switch is off, there is no search yet, or the embedder has no M_rand that can run here.
    """
    twin = twin_of(state, report) if compare else None
    if report is None or twin is None:
        return None
    query = report.query
    image = str(query.image) if isinstance(query.image, (str, Path)) else None
    if image is not None and not Path(image).is_file():  # removed by the scratch disk cap since the search
        raise UserInputError("The uploaded image is no longer on the server; upload it again.")
    assert query.target is not None  # the page always asks for a target modality
    request = SearchRequest(query.text, image, query.target, report.mode, report.top_k, report.depth, twin)
    found = first_stage(state, request, progress)
    return replace(found, reranked=StageReport("off", message="The comparison shows the first stage only."))


def column_labels(report: SearchReport, twin: SearchReport) -> tuple[str, str]:
    """What the two compared columns say they are: (the shipped model's first stage, its M_rand's)."""
    return (f"{report.embedder} — modality-aware hard negatives",
            f"M_rand ({twin.embedder}) — trained with random negatives")
