"""Ground truth for the Search tab: when a query is one of an evaluation set's, which results are its positives.

A query is recognised by its content — normalised text, the bytes of its image, its target — not by where it
came from, so the same marking appears whether it was typed, picked from the examples or opened from the
Evaluate tab's failure list (Gradio hands the page a copy of the image under another name). The shipped
query set is known to everyone; a visitor's uploaded set lives in that visitor's session only.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mmembed.corpus import EvalQuery
    from mmembed.types import Modality

Key = tuple[str, str, str]


@dataclass(frozen=True)
class KnownQuery:
    """An evaluation query's id, its positives and the set it came from."""

    qid: str
    positives: tuple[str, ...]
    source: str

    def to_dict(self) -> dict[str, object]:
        return {"qid": self.qid, "positives": list(self.positives), "query_set": self.source}


def _normal_text(text: str | None) -> str:
    return " ".join((text or "").lower().split())


@lru_cache(maxsize=4096)
def _digest(path: str, size: int, mtime_ns: int) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def image_key(image: object) -> str:
    """sha256 of an image file's bytes ("" for no image or one that cannot be read)."""
    if not isinstance(image, (str, Path)):
        return ""
    try:
        stat = Path(image).stat()
        return _digest(str(image), stat.st_size, stat.st_mtime_ns)
    except OSError:
        return ""


def query_key(text: str | None, image: object, target: Modality | str | None) -> Key:
    from mmembed.types import Modality

    label = Modality.parse(target).value if target else ""
    return _normal_text(text), image_key(image), label


def index_queries(queries: Iterable[EvalQuery], source: str) -> dict[Key, KnownQuery]:
    """Content key -> KnownQuery for every query of a set (a later duplicate of the same content is ignored)."""
    known: dict[Key, KnownQuery] = {}
    for q in queries:
        key = query_key(q.query.text, q.query.image, q.query.target)
        known.setdefault(key, KnownQuery(q.qid, tuple(q.positives), source))
    return known


def lookup(text: str | None, image: object, target: Modality | str | None,
           *indexes: Mapping[Key, KnownQuery] | None) -> KnownQuery | None:
    """The first index that knows this query (session's first, then the shipped set's, as the caller orders)."""
    key = query_key(text, image, target)
    for index in indexes:
        if index and key in index:
            return index[key]
    return None


STAGE_KEYS = ("first_stage", "reranked", "compare")


def mark_payload(payload: dict[str, Any], known: KnownQuery | None) -> dict[str, Any]:
    """`payload` (the page's/API's search object) with `ground_truth` ({qid, positives, query_set} or None) and
    each hit's `positive` flag, in every column it has. Returns a new dict; the input is left as it was (it may
    be a cached object other visitors share)."""
    positives = set(known.positives) if known else set()
    marked = {**payload, "ground_truth": known.to_dict() if known else None}
    for key in STAGE_KEYS:
        stage = payload.get(key)
        if isinstance(stage, dict) and stage.get("hits") is not None:
            marked[key] = {**stage, "hits": [{**hit, "positive": hit["id"] in positives} for hit in stage["hits"]]}
    return marked
