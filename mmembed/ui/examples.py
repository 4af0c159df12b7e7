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
# mmembed-mini-rand on every query of sample_corpus/queries.jsonl (natural mode, top 10) and taking the t->i
# query with the largest gap in wrong-modality @5 among those where mmembed-mini finds a positive in its top 5.
# scq-0116 "a spanner for turning nuts and bolts": M_rand's top 10 are all texts or image+text items (wrong-
# modality @5 and @10 100%, no positive); mmembed-mini's is the wrench text, then images, with the wrench
# drawing (a positive) at #3 (20% at @5 and @10). Re-pick it when either model is retrained.
COMPARE_QIDS = ("scq-0116",)
COMPARE_SUFFIX = " · M_rand vs mini"
LABEL_LIMIT = 60  # Gradio's example chips cut a longer label after 60 characters (and add "...")


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
    picked += [replace(_example(compared[qid], described, COMPARE_SUFFIX), compare=True)
               for qid in compare_qids if qid in compared]
    if not picked:
        picked = [Example(text, None, target, "natural", f"t→{target[0]}: {text}") for text, target in FALLBACK]
    return picked


def _example(query: EvalQuery, described: dict[str, str], suffix: str = "") -> Example:
    q = query.query
    assert q.target is not None  # load_examples keeps only queries with a target
    text = q.text if q.text is None or len(q.text) <= 300 else q.text[:300]
    label = _label(_arrow(query.task), described.get(query.qid, "an image") if q.image else None, q.text, suffix)
    return Example(text, str(q.image) if q.image else None, q.target.label, "natural", label)


def _label(task: str, image: str | None, text: str | None, suffix: str) -> str:
    """'t→i: a frog drawing + “What is this?”' + suffix, within LABEL_LIMIT: the query text gives way first."""
    head = f"{task}: "
    room = LABEL_LIMIT - len(head) - len(suffix)
    if image and text:
        body = f"{image} + “{_short(text, max(room - len(image) - 5, 8))}”"  # 5: the " + " and the quotes
    else:
        body = image or _short(text or "", room)
    return head + _short(body, room) + suffix


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
