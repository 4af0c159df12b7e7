"""Examples for the demo: one per task type of the sample query set, so every query type is one click away.

Text->image in natural mode leads, because that is where modality bias shows most (text candidates
crowd out the images that were asked for). Without a query file, a few text-only examples remain.
Labels say what the query is ("i→t: a frog drawing"), from the query file's `query_img_desc`, never a file name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

TASK_ORDER = ("t->i", "t->t", "t->(i,t)", "i->t", "i->i", "(i,t)->i", "(i,t)->t", "(i,t)->(i,t)")
FALLBACK = (("a dog playing in the snow", "image"), ("how do violins make sound?", "text"))


@dataclass(frozen=True)
class Example:
    """One clickable example query of the demo page."""

    text: str | None
    image: str | None
    target: str  # "image" | "text" | "image+text"
    mode: str
    label: str

    def row(self) -> list[str | None]:
        return [self.text, self.image, self.target, self.mode]


def load_examples(queries_path: Path | None, limit_per_task: int = 1) -> list[Example]:
    """One example per task type found in `queries_path` (M-BEIR query jsonl), in TASK_ORDER."""
    from mmembed.corpus import load_queries
    from mmembed.types import MMEmbedError

    queries = []
    if queries_path is not None and Path(queries_path).is_file():
        try:
            queries = load_queries(queries_path)
        except (MMEmbedError, OSError):
            queries = []  # a broken query file costs the examples, not the demo
    described = _image_descriptions(queries_path) if queries else {}
    picked: list[Example] = []
    for task in TASK_ORDER:
        for query in [q for q in queries if q.task == task and q.query.target is not None][:limit_per_task]:
            q = query.query
            text = q.text if q.text is None or len(q.text) <= 300 else q.text[:300]
            parts = [described.get(query.qid, "an image")] if q.image else []
            parts += [f"“{_short(q.text)}”" if q.image else _short(q.text)] if q.text else []
            picked.append(Example(text, str(q.image) if q.image else None, q.target.label, "natural",
                                  f"{_arrow(task)}: {' + '.join(parts)}"))
    if not picked:
        picked = [Example(text, None, target, "natural", f"t→{target[0]}: {text}") for text, target in FALLBACK]
    return picked


def _image_descriptions(queries_path: Path) -> dict[str, str]:
    """qid -> what its query image shows ("a frog drawing"), from the optional `query_img_desc` field."""
    described: dict[str, str] = {}
    for line in Path(queries_path).read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue  # load_queries already accepted the file; a stray line only costs its description
        if isinstance(row, dict) and isinstance(row.get("query_img_desc"), str) and row["query_img_desc"].strip():
            described[str(row.get("qid", "")).strip()] = _short(row["query_img_desc"].strip())
    return described


def _arrow(task: str) -> str:
    return task.replace("->", "→")


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"
