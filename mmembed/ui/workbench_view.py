"""HTML for the Evaluate tab: the summary tables, the modality-confusion chart and the failure list.

Pure functions of a `WorkbenchReport` (and the corpus, for the thumbnails of the failure rows); every
corpus or user string is escaped. A failure row carries `data-qid`/`data-model`, which the page's click
script turns into "open this query in the Search tab".
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from mmembed.types import Modality
from mmembed.ui.plot import COLORS
from mmembed.ui.render import esc, modality_badge, thumbnail_data_uri

if TYPE_CHECKING:
    from mmembed.corpus import Corpus
    from mmembed.workbench import FailureRecord, WorkbenchReport

STAGE_TITLES = {"first": "first stage", "reranked": "after reranking"}
MAX_FAILURE_ROWS = 200  # the page lists the worst 200; the CSV export has them all


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{100 * value:.1f}"


def _delta(value: float) -> str:
    kind = "up" if value > 1e-9 else "down" if value < -1e-9 else "same"
    return f'<td class="mm-delta mm-delta-{kind}">{100 * value:+.1f}</td>'


def render_summary(report: WorkbenchReport | None) -> str:
    """Per-task Recall@1/5/10 of each model (and their difference), then wrong-modality @1/@5 per target."""
    if report is None:
        return '<div class="mm-wb-summary mm-muted" id="wb-summary">Run an evaluation to see the figures.</div>'
    names = [run.name for run in report.models]
    parts = [f'<div class="mm-wb-summary" id="wb-summary"><div class="mm-wb-head">{report.queries} queries from '
             f'<code>{esc(report.query_set)}</code>, mode {esc(report.mode)}'
             + (f", reranked by <code>{esc(report.reranker)}</code> (top {report.depth})" if report.reranker else "")
             + "</div>"]
    difference = report.difference()
    for stage in report.stages:
        first = report.models[0].stages[stage]
        ks = first.ks
        head = "".join(f'<th colspan="{len(ks)}">{esc(name)}</th>' for name in names)
        head += f'<th colspan="{len(ks)}">Δ ({esc(names[1])} − {esc(names[0])})</th>' if difference else ""
        sub = "".join(f"<th>R@{k}</th>" for _ in range(len(names) + bool(difference)) for k in ks)
        rows = []
        for task, count in first.query_counts.items():
            cells = "".join(f"<td>{_pct(run.stages[stage].recall.get(task, {}).get(k))}</td>"
                            for run in report.models for k in ks)
            if difference:
                cells += "".join(_delta(difference[stage].get(task, {}).get(k, 0.0)) for k in ks)
            css = ' class="mm-wb-overall"' if task == "overall" else ""
            rows.append(f"<tr{css}><td>{esc(task)}</td><td>{count}</td>{cells}</tr>")
        parts.append(f'<table class="mm-wb-table" data-stage="{stage}"><caption>Recall, {STAGE_TITLES[stage]} '
                     f'(%)</caption><thead><tr><th rowspan="2">task</th><th rowspan="2">n</th>{head}</tr>'
                     f'<tr>{sub}</tr></thead><tbody>{"".join(rows)}</tbody></table>')
        wrong_ks = first.wrong_ks
        head = "".join(f'<th colspan="{len(wrong_ks)}">{esc(name)}</th>' for name in names)
        sub = "".join(f"<th>@{k}</th>" for _ in names for k in wrong_ks)
        rows = []
        for target in first.wrong_modality:
            cells = "".join(f"<td>{_pct(run.stages[stage].wrong_modality.get(target, {}).get(k))}</td>"
                            for run in report.models for k in wrong_ks)
            rows.append(f"<tr><td>{esc(target)}</td>{cells}</tr>")
        parts.append(f'<table class="mm-wb-table mm-wb-wrong" data-stage="{stage}"><caption>Wrong-modality rate, '
                     f'{STAGE_TITLES[stage]} (%)</caption><thead><tr><th rowspan="2">target</th>{head}</tr>'
                     f'<tr>{sub}</tr></thead><tbody>{"".join(rows)}</tbody></table>')
    parts.append("</div>")
    return "".join(parts)


def render_confusion(report: WorkbenchReport | None) -> str:
    """Requested (rows) x retrieved (columns) modality, as shares of the rank-1 results and of the top 5, one
    small heat grid per model and stage: the paper's bias picture for this corpus at a glance."""
    if report is None:
        return '<div class="mm-wb-confusion mm-muted" id="wb-confusion">The modality confusion appears here.</div>'
    labels = [m.label for m in Modality]
    grids = []
    for run in report.models:
        for stage in report.stages:
            for k, by_target in run.confusion[stage].items():
                head = "".join(f'<th><i style="background:{COLORS[label]}"></i>{esc(label)}</th>' for label in labels)
                rows = []
                for target, counts in by_target.items():
                    total = sum(counts.values()) or 1
                    cells = []
                    for label in labels:
                        share = counts.get(label, 0) / total
                        colour = COLORS[label]
                        alpha = int(40 + 215 * share)
                        right = " mm-wb-right" if label == target else ""
                        cells.append(f'<td class="mm-wb-cell{right}" data-share="{share:.3f}" '
                                     f'style="background:{colour}{alpha:02x}">{100 * share:.0f}%</td>')
                    rows.append(f"<tr><th>{esc(target)}</th>{''.join(cells)}</tr>")
                where = "rank 1" if k == 1 else f"top {k}"
                grids.append(f'<table class="mm-wb-grid" data-model="{esc(run.name)}" data-stage="{stage}" '
                             f'data-k="{k}"><caption>{esc(run.name)} · {STAGE_TITLES[stage]} · {where}</caption>'
                             f'<thead><tr><th>asked ↓ / got →</th>{head}</tr></thead>'
                             f'<tbody>{"".join(rows)}</tbody></table>')
    return (f'<div class="mm-wb-confusion" id="wb-confusion"><div class="mm-chart-title">Modality confusion: '
            f'what was asked for (rows) and what came back (columns)</div>{"".join(grids)}</div>')


def _thumb(corpus: Corpus, root: Path | None, item_id: str | None, *, caption: str) -> str:
    if item_id is None:
        return f'<div class="mm-wb-thumb mm-muted"><span>{esc(caption)}</span><em>none in the top 100</em></div>'
    item = corpus[item_id]
    picture = ""
    if item.image is not None and isinstance(item.image, (str, Path)):
        uri = thumbnail_data_uri(str(item.image))
        picture = f'<img src="{uri}" alt="{esc(item_id)}">' if uri else ""
    text = f"<em>{esc((item.text or '')[:80])}</em>" if item.text else ""
    return (f'<div class="mm-wb-thumb" data-id="{esc(item_id)}"><span>{esc(caption)}</span>{picture}'
            f'{modality_badge(item.modality.value)}<code>{esc(item_id)}</code>{text}</div>')


def _query_cell(failure: FailureRecord, root: Path | None) -> str:
    picture = ""
    if failure.query_image and root is not None:
        uri = thumbnail_data_uri(str(Path(root) / failure.query_image))
        picture = f'<img src="{uri}" alt="query image">' if uri else ""
    text = f"<em>{esc(failure.query_text)}</em>" if failure.query_text else ""
    return (f'<div class="mm-wb-thumb mm-wb-query"><span>{esc(failure.qid)} · {esc(failure.task)}</span>'
            f'{picture}{text}<b>→ {esc(failure.target or "any")}</b></div>')


def render_failures(report: WorkbenchReport | None, corpus: Corpus | None, failures: Sequence[FailureRecord],
                    ) -> str:
    """The (filtered, sorted) failures as rows: query, first wrong result, first positive, ranks per stage."""
    if report is None or corpus is None:
        return '<div class="mm-wb-failures mm-muted" id="wb-failures">Failures appear here after a run.</div>'
    if not failures:
        return '<div class="mm-wb-failures mm-muted" id="wb-failures">No failure matches these filters.</div>'
    root = corpus.root
    rows = []
    for failure in failures[:MAX_FAILURE_ROWS]:
        final = failure.final
        ranks = " · ".join(f"{STAGE_TITLES[stage]}: "
                           + (f"#{outcome.first_positive_rank}" if outcome.first_positive_rank else "not in top 100")
                           for stage, outcome in failure.stages.items())
        kinds = "".join(f'<span class="mm-wb-kind mm-wb-kind-{esc(kind)}">{esc(kind)}</span>'
                        for kind in failure.kinds)
        rows.append(
            f'<div class="mm-wb-row" data-qid="{esc(failure.qid)}" data-model="{esc(failure.model)}" '
            f'title="open in the Search tab">'
            f'<div class="mm-wb-rowhead"><b>{esc(failure.model)}</b>{kinds}<span>first positive: {esc(ranks)}</span>'
            f'</div><div class="mm-wb-thumbs">{_query_cell(failure, root)}'
            f'{_thumb(corpus, root, final.first_wrong_id, caption="first wrong result")}'
            f'{_thumb(corpus, root, final.first_positive_id, caption="first positive")}</div></div>')
    more = len(failures) - MAX_FAILURE_ROWS
    tail = (f'<div class="mm-muted">… and {more} more (all of them are in the CSV export)</div>' if more > 0 else "")
    return (f'<div class="mm-wb-failures" id="wb-failures"><div class="mm-wb-head">{len(failures)} failure(s), '
            f'worst first — click one to open it in the Search tab</div>{"".join(rows)}{tail}</div>')


# The Evaluate tab's look, plus the ground-truth badge and the phone-width rules of the Search tab (added to
# theme.CSS by the layout).
CSS = """
.mm-positive { color: #065f46; background: #d1fae5; font-weight: 700; padding: 0 .45rem; border-radius: 999px; }
.mm-card.mm-is-positive { outline: 2px solid #10b981; outline-offset: -2px; }
.mm-wb-head { font-size: .9rem; color: var(--body-text-color-subdued); margin: .3rem 0; }
.mm-wb-summary { display: flex; flex-wrap: wrap; gap: 1rem; align-items: flex-start; }
.mm-wb-summary .mm-wb-head { flex-basis: 100%; }
.mm-wb-table { border-collapse: collapse; font-size: .85rem; }
.mm-wb-table caption { text-align: left; font-weight: 600; padding-bottom: .2rem; }
.mm-wb-table th, .mm-wb-table td { padding: .15rem .45rem !important; text-align: right; white-space: nowrap; }
.mm-wb-table td:first-child, .mm-wb-table th:first-child { text-align: left; }
.mm-wb-overall td { font-weight: 700; border-top: 1px solid var(--border-color-primary); }
.mm-delta-up { color: #15803d; } .mm-delta-down { color: #b91c1c; } .mm-delta-same { color: #64748b; }
.mm-wb-confusion { display: flex; flex-wrap: wrap; gap: .8rem; }
.mm-wb-confusion .mm-chart-title { flex-basis: 100%; }
.mm-wb-grid { border-collapse: collapse; font-size: .8rem; }
.mm-wb-grid caption { text-align: left; font-weight: 600; }
.mm-wb-grid th, .mm-wb-grid td { padding: .2rem .4rem !important; text-align: center; }
.mm-wb-grid th i { display: inline-block; width: .7rem; height: .7rem; border-radius: 2px; margin-right: .2rem; }
.mm-wb-cell { color: #0f172a; font-weight: 600; min-width: 3rem; }
.mm-wb-right { box-shadow: inset 0 0 0 2px #0f172a; }
.mm-wb-failures { display: flex; flex-direction: column; gap: .5rem; }
.mm-wb-row { border: 1px solid var(--border-color-primary); border-radius: 10px; padding: .5rem .6rem;
  cursor: pointer; background: var(--block-background-fill); }
.mm-wb-row:hover { box-shadow: 0 1px 6px rgba(0, 0, 0, .12); }
.mm-wb-rowhead { display: flex; flex-wrap: wrap; gap: .4rem; align-items: center; font-size: .85rem; }
.mm-wb-kind { padding: 0 .45rem; border-radius: 999px; font-weight: 600; font-size: .78rem; }
.mm-wb-kind-missed { background: #fee2e2; color: #991b1b; }
.mm-wb-kind-wrong-modality { background: #fef3c7; color: #92400e; }
.mm-wb-thumbs { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: .5rem; margin-top: .4rem; }
.mm-wb-thumb { display: flex; flex-direction: column; gap: .2rem; font-size: .78rem; min-width: 0; }
.mm-wb-thumb > span { color: var(--body-text-color-subdued); }
.mm-wb-thumb img { width: 72px; height: 72px; object-fit: cover; border-radius: 6px; }
.mm-wb-thumb em { overflow-wrap: anywhere; }
.mm-downloads { display: flex; gap: .6rem; }
.mm-download { padding: .45rem .9rem; border-radius: 8px; border: 1px solid var(--border-color-primary);
  background: var(--button-secondary-background-fill); text-decoration: none; font-weight: 600; font-size: .9rem; }
span.mm-download { opacity: .5; cursor: not-allowed; }
/* phone width: the Search tab's two columns stay side by side, as compact cards (rank, thumbnail, movement) */
@media (max-width: 600px) {
  #results-row { flex-wrap: nowrap !important; gap: .3rem !important; }
  #results-row > div { min-width: 0 !important; flex: 1 1 50% !important; }
  .mm-coltitle { font-size: .85rem; }
  .mm-card { flex-direction: column; align-items: center; gap: .2rem; padding: .3rem; }
  .mm-card .mm-text, .mm-card .mm-score, .mm-card .mm-id, .mm-colhead .mm-rate { display: none; }
  .mm-thumb { width: 64px; height: 64px; }
  .mm-rank { flex-direction: row; min-width: 0; font-size: .95rem; }
  .mm-meta { justify-content: center; font-size: .7rem; }
  .mm-bar-row { grid-template-columns: 5.2rem 1fr 4.2rem; gap: .3rem; }
  .mm-bar-label, .mm-bar-rate { font-size: .75rem; }
  .mm-legend { flex-wrap: wrap; gap: .5rem; }
  .mm-wb-thumb img { width: 56px; height: 56px; }
}
"""

# Clicking a failure row opens it in the Search tab: "<qid>|<model>|<time>" goes into a hidden textbox whose
# `change` event does the rest (Gradio has no click event on HTML content).
FAILURE_CLICK_JS = """
<script>
document.addEventListener("click", (event) => {
  const row = event.target.closest && event.target.closest(".mm-wb-row");
  const box = document.querySelector("#failure-clicked textarea, #failure-clicked input");
  if (!row || !box) return;
  box.value = row.dataset.qid + "|" + row.dataset.model + "|" + Date.now();
  box.dispatchEvent(new Event("input", { bubbles: true }));
});
</script>
"""


def render_exports(json_url: str | None, csv_url: str | None) -> str:
    """The run's two downloads as links (inactive until a run wrote them)."""
    links = []
    for url, label, elem in ((json_url, "Report (JSON)", "eval-export-json"),
                             (csv_url, "Failures (CSV)", "eval-export-csv")):
        if url:
            links.append(f'<a class="mm-download" id="{elem}" href="{esc(url)}" download>{label}</a>')
        else:
            links.append(f'<span class="mm-download mm-muted" id="{elem}">{label}</span>')
    return f'<div class="mm-downloads">{"".join(links)}</div>'
