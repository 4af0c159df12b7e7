"""The contrastive objective: InfoNCE over a shared candidate set (in-batch positives + extra negatives)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def info_nce(queries: torch.Tensor, candidates: torch.Tensor, targets: torch.Tensor, temperature: float = 0.05,
             exclude: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over queries of -log softmax(q·c / temperature)[target].

    queries (B, d) and candidates (C, d) are unit vectors; targets (B,) the column of each query's positive.
    `exclude` (B, C) bool marks columns that must not count as negatives for that query (another copy of a
    positive, or another positive of the same query: false negatives would teach the model nonsense)."""
    import torch

    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    logits = queries @ candidates.T / temperature
    if exclude is not None:
        keep_target = torch.zeros_like(exclude)
        keep_target[torch.arange(len(targets)), targets] = True
        logits = logits.masked_fill(exclude & ~keep_target, float("-inf"))
    return torch.nn.functional.cross_entropy(logits, targets)
