"""The embedder contract: turn items and queries into L2-normalised float32 vectors.

Scores everywhere are inner products of these vectors, so every backend must return unit-norm rows.
`fingerprint` identifies what produced the vectors (model id + revision + anything that changes the
output); the index cache is keyed on it, so vectors from another model are never mixed in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from mmembed.progress import ProgressFn
from mmembed.types import Item, Query

if TYPE_CHECKING:
    import numpy as np


@dataclass(frozen=True)
class QueryInfo:
    """How an embedder will read a query: the task instruction it adds, and notes such as truncation."""

    instruction: str | None = None
    notes: tuple[str, ...] = ()


@runtime_checkable
class Embedder(Protocol):
    """What every first-stage model offers: unit vectors for corpus items and for queries, in one space."""

    name: str

    @property
    def dim(self) -> int: ...

    @property
    def fingerprint(self) -> str: ...

    def embed_items(self, items: Sequence[Item], *, progress: ProgressFn | None = None) -> np.ndarray:
        """(len(items), dim) float32, rows L2-normalised, in the order of `items`."""
        ...

    def embed_query(self, query: Query) -> np.ndarray:
        """(dim,) float32, L2-normalised. The query's target may shape an instruction."""
        ...

    def describe_query(self, query: Query) -> QueryInfo:
        """Instruction used and notes (e.g. 'text truncated to 77 tokens') for `query`; cheap."""
        ...


def l2_normalize(vectors: np.ndarray) -> np.ndarray:
    """Row-wise unit norm in float32; all-zero rows stay zero instead of becoming NaN."""
    import numpy as np

    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return (vectors / np.maximum(norms, 1e-12)).astype(np.float32)


def fuse_image_text(image_vectors: np.ndarray, text_vectors: np.ndarray) -> np.ndarray:
    """UniIR's CLIP-SF score fusion: sum the unit image and text embeddings, then renormalise."""
    return l2_normalize(l2_normalize(image_vectors) + l2_normalize(text_vectors))
