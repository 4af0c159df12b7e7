"""Model-free backends whose rankings can be predicted exactly: the test doubles of mmembed's own tests
(in the spirit of sentence-transformers' tests), and what the benchmarks use to time the UI and the
pipeline without a model's cost. Nothing here loads weights; numpy only.

KeywordEmbedder: one dimension per keyword. Text counts the keywords it contains; an image "contains"
the keywords in its file name (``cat_on_mat.png`` -> cat, mat) or in a PIL image's ``info["keywords"]``.
Image+text items are fused like CLIP-SF. `text_bias` adds a shared "text-ness" dimension to every
text-bearing item and text query, so a text query prefers text candidates: modality bias on demand.

FakeReranker: scores P(True) as the fraction of query keywords present in the candidate, so the
reranked order is known in advance.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from mmembed.embedders.base import QueryInfo, fuse_image_text, l2_normalize
from mmembed.types import Item, Query

_WORD = re.compile(r"[a-z]+")


def keywords_of_image(image: object) -> list[str]:
    if isinstance(image, (str, Path)):
        return _WORD.findall(Path(image).stem.lower())
    info = getattr(image, "info", {}) or {}
    return _WORD.findall(str(info.get("keywords", "")).lower())


class KeywordEmbedder:
    """One dimension per keyword (plus an optional text-ness one): exact, predictable rankings."""

    def __init__(self, vocabulary: Sequence[str], text_bias: float = 0.0, name: str = "keyword") -> None:
        self.name = name
        self.vocabulary = list(vocabulary)
        self._index = {word: i for i, word in enumerate(self.vocabulary)}
        self.text_bias = text_bias
        self.calls = {"items": 0, "queries": 0}

    @property
    def dim(self) -> int:
        return len(self.vocabulary) + 1

    @property
    def fingerprint(self) -> str:
        digest = hashlib.sha256(("|".join(self.vocabulary) + f"|{self.text_bias}").encode()).hexdigest()
        return f"keyword:{digest[:16]}"

    def _bag(self, words: Sequence[str], text_side: bool) -> np.ndarray:
        vector = np.zeros(self.dim, dtype=np.float32)
        for word in words:
            if word in self._index:
                vector[self._index[word]] += 1.0
        if text_side:
            vector[-1] = self.text_bias
        return vector

    def _embed(self, text: str | None, image: object | None) -> np.ndarray:
        text_vec = self._bag(_WORD.findall(text.lower()), True) if text else None
        image_vec = self._bag(keywords_of_image(image), False) if image is not None else None
        if text_vec is not None and image_vec is not None:
            return fuse_image_text(image_vec[None], text_vec[None])[0]
        return l2_normalize((text_vec if text_vec is not None else image_vec)[None])[0]

    def embed_items(self, items: Sequence[Item], *, progress=None) -> np.ndarray:
        self.calls["items"] += 1
        rows = [self._embed(item.text, item.image) for item in items]
        if progress is not None:
            progress(len(items), len(items), "embedding")
        return np.stack(rows) if rows else np.zeros((0, self.dim), dtype=np.float32)

    def embed_query(self, query: Query) -> np.ndarray:
        self.calls["queries"] += 1
        return self._embed(query.text, query.image)

    def describe_query(self, query: Query) -> QueryInfo:
        return QueryInfo(instruction=None, notes=())


class FakeReranker:
    """Scores the share of the query's keywords a candidate holds: a reranked order known in advance."""

    name = "fake-reranker"

    def __init__(self) -> None:
        self.calls = 0

    def score(self, query: Query, items: Sequence[Item], *, progress=None) -> list[float]:
        self.calls += 1
        wanted = set(_WORD.findall((query.text or "").lower())) | set(keywords_of_image(query.image))
        scores = []
        for item in items:
            have = set(_WORD.findall((item.text or "").lower())) | set(keywords_of_image(item.image))
            scores.append(len(wanted & have) / max(len(wanted), 1))
        if progress is not None:
            progress(len(items), len(items), "reranking")
        return scores


class DebiasedKeywordEmbedder(KeywordEmbedder):
    """The same fake without the text-ness term on the query side: text candidates lose their edge, so an
    image with the query's keyword ranks first even when text was asked for ("dog" -> the dog image)."""

    def embed_query(self, query):
        vector = super().embed_query(query).copy()
        vector[-1] = 0.0
        return l2_normalize(vector[None])[0]

    @property
    def fingerprint(self) -> str:
        return "debiased-" + super().fingerprint


class ModalityReranker:
    """Scores images 1, image+text 0.5, text 0: the reranked order of any top-n is known in advance."""

    name = "modality-reranker"

    def score(self, query, items, *, progress=None):
        return [{"image": 1.0, "image,text": 0.5, "text": 0.0}[item.modality.value] for item in items]
