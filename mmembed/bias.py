"""Modality-bias metrics: what the top-k is made of, versus what was asked for and what the pool holds.

- modality mix: count and share of each modality in the top-k;
- wrong-modality rate: share of the top-k whose modality is not the target (UniIR's "type 1" error);
- skew: a modality's share of the top-k divided by its share of the pool (1 = no preference,
  > 1 = over-retrieved). MM-Embed's finding is that text is over-retrieved when images are asked for.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from mmembed.metrics import wrong_modality_share
from mmembed.types import Hit, Item, Modality

if TYPE_CHECKING:
    import pandas as pd

MIX_COLUMNS = ("modality", "label", "count", "share", "pool_share", "skew")


def modality_mix(hits: Sequence[Hit], pool: Iterable[Item] | None = None) -> pd.DataFrame:
    """One row per modality (text, image, image,text), columns MIX_COLUMNS.

    `share` is over the hits; `pool_share` and `skew` are NaN when no pool is given or it lacks the modality.
    """
    import pandas as pd

    counts = Counter(hit.item.modality for hit in hits)
    pool_counts = Counter(item.modality for item in pool) if pool is not None else Counter()
    pool_total = sum(pool_counts.values())
    rows = []
    for modality in Modality:
        share = counts[modality] / len(hits) if hits else 0.0
        pool_share = pool_counts[modality] / pool_total if pool_total else float("nan")
        skew = share / pool_share if pool_total and pool_share > 0 else float("nan")
        rows.append((modality.value, modality.label, counts[modality], share, pool_share, skew))
    return pd.DataFrame(rows, columns=list(MIX_COLUMNS))


def wrong_modality_rate(hits: Sequence[Hit], target: Modality | None, k: int | None = None) -> float | None:
    """Share of the first k hits whose modality differs from `target`; None without a target or hits."""
    return wrong_modality_share([hit.item.modality for hit in hits], target, k)
