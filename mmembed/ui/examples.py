"""Examples for the demo: one per task type of the sample query set, so every query type is one click away.

Text->image in natural mode leads, because that is where modality bias shows most (text candidates
crowd out the images that were asked for). Without a query file, a few text-only examples remain.
Labels say what the query is ("i→t: a frog drawing"), from the query file's `query_img_desc`, never a file name.
One more example ticks the compare switch: a query of the shipped set where the model trained with random
negatives (M_rand) returns mostly the wrong modality and mmembed-mini does not (README, "The demo").
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mmembed.corpus import EvalQuery

TASK_ORDER = ("t->i", "t->t", "t->(i,t)", "i->t", "i->i", "(i,t)->i", "(i,t)->t", "(i,t)->(i,t)")
FALLBACK = (("a dog playing in the snow", "image"), ("how do violins make sound?", "text"))
# Shipped queries shown through both models with the compare switch on, picked by running mmembed-mini and
# mmembed-mini-rand on every query of sample_corpus/queries.jsonl (natural mode, top 10). scq-0122 "guitars"
# (t->i): M_rand's top 5 is two texts and three image+text items, none an image (wrong-modality @5 100%);
# mmembed-mini's is the guitar text then four images, one of them a positive at #3 (20%).
COMPARE_QIDS = ("scq-0122",)


@dataclass(frozen=True)
class Example:
    """One clickable example query of the demo page."""

    text: str | None
    image: str | None
    target: str  # "image" | "text" | "image+text"
    mode: str
    label: str
    compare: bool = False  # ticks the page's compare switch (the embedder's M_rand beside it)

    def row(self) -> list[str | bool | None]:
        return [self.text, self.image, self.target, self.mode, self.compare]


def load_examples(queries_path: Path | None, limit_per_task: int = 1,
                  compare_qids: tuple[str, ...] = COMPARE_QIDS) -> list[Example]:
    """One example per task type found in `queries_path` (M-BEIR query jsonl), in TASK_ORDER, then the queries
    `compare_qids` names with the compare switch ticked."""
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
            picked.append(_example(query, described))
    compared = {query.qid: query for query in queries if query.qid in compare_qids and query.query.target is not None}
    picked += [replace(example, compare=True, label=f"{example.label} · M_rand vs mmembed-mini")
               for example in (_example(compared[qid], described) for qid in compare_qids if qid in compared)]
    if not picked:
        picked = [Example(text, None, target, "natural", f"t→{target[0]}: {text}") for text, target in FALLBACK]
    return picked


def _example(query: EvalQuery, described: dict[str, str]) -> Example:
    q = query.query
    assert q.target is not None  # load_examples keeps only queries with a target
    text = q.text if q.text is None or len(q.text) <= 300 else q.text[:300]
    parts = [described.get(query.qid, "an image")] if q.image else []
    parts += [f"“{_short(q.text)}”" if q.image else _short(q.text)] if q.text else []
    return Example(text, str(q.image) if q.image else None, q.target.label, "natural",
                   f"{_arrow(query.task)}: {' + '.join(parts)}")


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
