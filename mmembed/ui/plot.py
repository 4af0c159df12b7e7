"""The modality-mix plot: what each stage's top-k is made of, next to what was asked for and the pool's mix.

One stacked bar per row ("asked for", "corpus pool", "first stage", "after reranking"), coloured by
modality, in percent. With modality bias the first-stage bar is visibly the wrong colour; the x labels
carry each stage's wrong-modality rate so the number sits next to the picture.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mmembed.types import Modality

if TYPE_CHECKING:
    import pandas as pd

COLORS = {"image": "#2563eb", "text": "#f59e0b", "image+text": "#10b981"}
COLUMNS = ["stage", "modality", "percent"]


def stage_label(title: str, rate: float | None) -> str:
    return title if rate is None else f"{title} ({rate:.0%} wrong)"


def mix_frame(payload: Mapping[str, Any] | None) -> pd.DataFrame:
    """Tidy rows (stage, modality, percent) for gr.BarPlot; empty before the first search."""
    import pandas as pd

    if payload is None:
        return pd.DataFrame(columns=COLUMNS)
    target = Modality.parse(payload["query"]["target"]).label
    rows: list[tuple[str, str, float]] = [("Asked for", m.label, 100.0 if m.label == target else 0.0) for m in Modality]
    rows += [("Corpus pool", r["label"], 100.0 * (r["pool_share"] or 0.0)) for r in payload["pool"]["mix"]]
    for key, title in (("first_stage", "First stage"), ("reranked", "After reranking")):
        stage = payload.get(key) or {}
        if not stage.get("hits"):
            continue
        label = stage_label(title, stage.get("wrong_modality_rate"))
        rows += [(label, r["label"], 100.0 * (r["share"] or 0.0)) for r in stage["modality_mix"]]
    return pd.DataFrame(rows, columns=COLUMNS)


def stage_order(frame: pd.DataFrame) -> list[str]:
    """x-axis order as the rows were written (the plot would otherwise sort stages alphabetically)."""
    return list(dict.fromkeys(frame["stage"].tolist()))
