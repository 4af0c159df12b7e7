"""The modality-mix plot: what each stage's top-k is made of, next to what was asked for and the pool's mix.

One 100% stacked bar per row ("asked for", "corpus pool", "first stage", "after reranking"), coloured by
modality. With modality bias the first-stage bar is visibly the wrong colour; each row carries its
wrong-modality rate so the number sits next to the picture. `mix_frame` gives the tidy data (for
notebooks or gr.BarPlot); `render_mix_chart` draws it as HTML/CSS, which needs no plotting library.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mmembed.types import Modality

if TYPE_CHECKING:
    import pandas as pd

COLORS = {"image": "#2563eb", "text": "#f59e0b", "image+text": "#10b981"}
COLUMNS = ["stage", "modality", "percent"]
TWIN_TITLE = "M_rand first stage"  # the compare switch's row: the same query through the random-negatives model


def stage_label(title: str, rate: float | None) -> str:
    return title if rate is None else f"{title} ({rate:.0%} wrong)"


def ranked_stages(payload: Mapping[str, Any] | None,
                  twin: Mapping[str, Any] | None = None) -> list[tuple[str, Mapping[str, Any]]]:
    """(row title, stage payload) of every ranked row: the M_rand's first stage when compared, then both stages."""
    if payload is None:
        return []
    rows = [(TWIN_TITLE, twin.get("first_stage") or {})] if twin is not None else []
    rows += [(title, payload.get(key) or {}) for key, title in (("first_stage", "First stage"),
                                                                ("reranked", "After reranking"))]
    return rows


def mix_frame(payload: Mapping[str, Any] | None, twin: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Tidy rows (stage, modality, percent) for gr.BarPlot; empty before the first search. `twin`: the same
    query's payload from the embedder's M_rand (the compare switch), drawn as one more row."""
    import pandas as pd

    if payload is None:
        return pd.DataFrame(columns=COLUMNS)
    target = Modality.parse(payload["query"]["target"]).label
    rows: list[tuple[str, str, float]] = [("Asked for", m.label, 100.0 if m.label == target else 0.0) for m in Modality]
    rows += [("Corpus pool", r["label"], 100.0 * (r["pool_share"] or 0.0)) for r in payload["pool"]["mix"]]
    for title, stage in ranked_stages(payload, twin):
        if not stage.get("hits"):
            continue
        label = stage_label(title, stage.get("wrong_modality_rate"))
        rows += [(label, r["label"], 100.0 * (r["share"] or 0.0)) for r in stage["modality_mix"]]
    # Target first in every bar, then Modality's order: the right-coloured share always starts at the left
    # edge, so the bars compare at a glance. Stages keep the order written above.
    stages = list(dict.fromkeys(row[0] for row in rows))
    order = modality_order(target)
    rows.sort(key=lambda row: (stages.index(row[0]), order.index(row[1])))
    return pd.DataFrame(rows, columns=COLUMNS)


def modality_order(target_label: str | None) -> list[str]:
    """Modality labels with the target first, then the others in Modality's order (legend and segments)."""
    labels = [m.label for m in Modality]
    return labels if target_label not in labels else [target_label] + [m for m in labels if m != target_label]


def stage_order(frame: pd.DataFrame) -> list[str]:
    """x-axis order as the rows were written (the plot would otherwise sort stages alphabetically)."""
    return list(dict.fromkeys(frame["stage"].tolist()))


def render_mix_chart(payload: Mapping[str, Any] | None, twin: Mapping[str, Any] | None = None) -> str:
    """The modality mix as horizontal 100% stacked bars (HTML/CSS: crisp, themable, no JS plotting).

    One row per stage of `mix_frame`; each segment's width is its share, labelled when wide enough;
    the stage's wrong-modality rate sits at the right end of its row. With `twin` (the compare switch) the
    M_rand's first stage is a row too, and the title names both models' wrong-modality rates.
    """
    from html import escape

    frame = mix_frame(payload, twin)
    if frame.empty:
        return '<div class="mm-chart mm-muted" id="mm-chart">The modality mix of each stage appears here.</div>'
    target = Modality.parse((payload or {})["query"]["target"]).label
    legend = "".join(
        f'<span class="mm-legend-item"><i style="background:{COLORS[label]}"></i>{escape(label)}'
        f'{" (asked for)" if label == target else ""}</span>'
        for label in modality_order(target)
    )
    rows = []
    rates = {stage_label(title, stage.get("wrong_modality_rate")): stage.get("wrong_modality_rate")
             for title, stage in ranked_stages(payload, twin)}
    for stage in stage_order(frame):
        part = frame[frame["stage"] == stage]
        segments = "".join(
            f'<span class="mm-seg" style="width:{row.percent:.2f}%;background:{COLORS[row.modality]}" '
            f'title="{escape(row.modality)}: {row.percent:.0f}%" data-modality="{escape(row.modality)}" '
            f'data-percent="{row.percent:.1f}">{f"{row.percent:.0f}%" if row.percent >= 12 else ""}</span>'
            for row in part.itertuples()
            if row.percent > 0
        )
        title = stage.split(" (")[0]
        rate = rates.get(stage)
        rate_html = f'<span class="mm-bar-rate">{rate:.0%} wrong</span>' if rate is not None else (
            '<span class="mm-bar-rate mm-muted">target</span>' if title == "Asked for"
            else '<span class="mm-bar-rate mm-muted">pool</span>'
        )
        rows.append(f'<div class="mm-bar-row" data-stage="{escape(title)}"><span class="mm-bar-label">'
                    f'{escape(title)}</span><span class="mm-bar">{segments}</span>{rate_html}</div>')
    return (f'<div class="mm-chart" id="mm-chart"><div class="mm-chart-title">Modality mix of the top-k'
            f'{escape(compared_rates(payload, twin))}</div>{"".join(rows)}<div class="mm-legend">{legend}</div></div>')


def compared_rates(payload: Mapping[str, Any] | None, twin: Mapping[str, Any] | None) -> str:
    """The title's comparison: " · wrong modality: M_rand (<name>) 60% vs <name> 10%" ("" without `twin`)."""
    if payload is None or twin is None:
        return ""

    def rate(report: Mapping[str, Any]) -> str:
        value = (report.get("first_stage") or {}).get("wrong_modality_rate")
        return "—" if value is None else f"{value:.0%}"

    return (f" · wrong modality: M_rand ({twin['embedder']['name']}) {rate(twin)} vs "
            f"{payload['embedder']['name']} {rate(payload)}")
