"""Training data in M-BEIR's format, loaded into flat arrays the trainer can index quickly.

pool.jsonl:    did, txt, img_path (relative to the file), modality
queries.jsonl: qid, query_txt, query_img_path, query_modality, pos_cand_list, task, target_modality,
               optional: instruction, split ("train" | "val"), neg_cand_list (written by mining)

Images are decoded once into one uint8 tensor (n, s, s, 3) at the model's input size; texts are referenced
by index into one list, embedded once by the locked text tower.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from mmembed.corpus import iter_jsonl_objects, task_name
from mmembed.instructions import INSTRUCTIONS
from mmembed.models.minilm import query_text
from mmembed.types import Modality, ValidationError

if TYPE_CHECKING:
    import numpy as np


class TrainingDataError(ValidationError):
    """A training file with bad rows; `problems` lists every one with its line number."""

    def __init__(self, path: Path, problems: list[str]) -> None:
        self.problems = problems
        shown = "; ".join(problems[:5]) + (f"; ... {len(problems) - 5} more" if len(problems) > 5 else "")
        super().__init__(f"{path}: {len(problems)} bad row(s): {shown}")


@dataclass
class TrainQuery:
    """One training query: its input, target modality, task label, positives and mined negatives."""

    qid: str
    text: str | None
    image: str | None  # path relative to the data folder
    modality: Modality
    target: Modality
    task: str
    positives: list[str]
    instruction: str
    split: str = "train"
    negatives: list[str] = field(default_factory=list)
    raw: dict = field(default_factory=dict)
    ignore: list[str] = field(default_factory=list)  # candidates neither positive nor negative (its own image)


@dataclass
class PoolItem:
    """One candidate of the training pool."""

    did: str
    text: str | None
    image: str | None
    modality: Modality
    concept: str | None = None  # what an image shows ("apple"): the label of the auxiliary concept loss


def _read_jsonl(path: Path) -> list[tuple[int, dict]]:
    problems: list[str] = []
    rows = list(iter_jsonl_objects(path, problems, what="training"))
    if problems:
        raise TrainingDataError(path, problems)
    return rows


def load_pool(path: Path) -> list[PoolItem]:
    items, problems, seen = [], [], set()
    for number, row in _read_jsonl(path):
        did = row.get("did")
        try:
            modality = Modality.parse(row.get("modality") or Modality.of(row.get("txt"), row.get("img_path")))
            implied = Modality.of(row.get("txt"), row.get("img_path"))
        except ValidationError as exc:
            problems.append(f"line {number}: {exc}")
            continue
        if not did or did in seen:
            problems.append(f"line {number}: missing or duplicate did {did!r}")
        elif modality is not implied:
            problems.append(f"line {number}: modality {modality.value!r} but fields give {implied.value!r}")
        else:
            seen.add(did)
            items.append(PoolItem(did, row.get("txt"), row.get("img_path"), modality, row.get("concept") or None))
    if problems:
        raise TrainingDataError(path, problems)
    return items


def load_training_queries(path: Path, pool_ids: set[str] | None = None) -> list[TrainQuery]:
    queries, problems = [], []
    for number, row in _read_jsonl(path):
        try:
            modality = Modality.parse(row.get("query_modality")
                                      or Modality.of(row.get("query_txt"), row.get("query_img_path")))
            target = Modality.parse(row["target_modality"])
        except (ValidationError, KeyError) as exc:
            problems.append(f"line {number}: {exc}")
            continue
        positives = list(row.get("pos_cand_list") or [])
        negatives = list(row.get("neg_cand_list") or [])
        ignore = list(row.get("ignore_cand_list") or [])
        if not positives:
            problems.append(f"line {number}: pos_cand_list is empty")
            continue
        if pool_ids is not None:
            missing = [d for d in positives + negatives + ignore if d not in pool_ids]
            if missing:
                problems.append(f"line {number}: candidates not in the pool: {missing[:3]}")
                continue
        instruction = row.get("instruction") or INSTRUCTIONS[(modality, target)]
        queries.append(TrainQuery(
            qid=str(row.get("qid", number)), text=row.get("query_txt"), image=row.get("query_img_path"),
            modality=modality, target=target, task=row.get("task") or task_name(modality, target),
            positives=positives, instruction=instruction, split=row.get("split", "train"), negatives=negatives,
            raw=row, ignore=ignore,
        ))
    if problems:
        raise TrainingDataError(path, problems)
    return queries


@dataclass
class TrainingArrays:
    """Everything the trainer indexes, as flat arrays. -1 means 'none' in the *_text / *_image columns."""

    root: Path
    pool: list[PoolItem]
    queries: list[TrainQuery]
    texts: list[str]  # every distinct text the text tower must embed
    images: np.ndarray  # (n_images, s, s, 3) uint8
    pool_text: np.ndarray
    pool_image: np.ndarray
    pool_modality: np.ndarray  # MODALITY_INDEX values
    query_text: np.ndarray
    query_image: np.ndarray
    query_instruction: np.ndarray  # index into texts of the bare instruction
    query_target: np.ndarray
    positives: list[np.ndarray]  # pool indices per query
    negatives: list[np.ndarray]
    did_index: dict[str, int]
    concept_text: np.ndarray | None = None  # per concept: index into texts of its prompt ("a picture of apple")
    image_concept: np.ndarray | None = None  # per image: its concept's index, -1 when unknown
    ignored: list[np.ndarray] | None = None  # pool indices per query that count neither way (its own image)

    def not_negative(self, row: int) -> set[int]:
        """Pool indices that must never be a negative of query `row`: its positives and ignored candidates."""
        extra = self.ignored[row].tolist() if self.ignored is not None else []
        return set(self.positives[row].tolist()) | set(extra)

    def split(self, name: str) -> np.ndarray:
        import numpy as np

        return np.array([i for i, q in enumerate(self.queries) if q.split == name], dtype=np.int64)


def build_arrays(root: Path, pool: Sequence[PoolItem], queries: Sequence[TrainQuery], image_size: int,
                 progress=None) -> TrainingArrays:
    import numpy as np
    from PIL import Image

    from mmembed.models.mini import MODALITY_INDEX
    from mmembed.models.mini_images import image_array

    texts: list[str] = []
    text_index: dict[str, int] = {}
    image_paths: list[str] = []
    image_index: dict[str, int] = {}

    def text_id(text: str | None) -> int:
        if text is None:
            return -1
        if text not in text_index:
            text_index[text] = len(texts)
            texts.append(text)
        return text_index[text]

    def image_id(rel: str | None) -> int:
        if rel is None:
            return -1
        if rel not in image_index:
            image_index[rel] = len(image_paths)
            image_paths.append(rel)
        return image_index[rel]

    did_index = {item.did: i for i, item in enumerate(pool)}
    pool_text = np.array([text_id(p.text) for p in pool], dtype=np.int64)
    pool_image = np.array([image_id(p.image) for p in pool], dtype=np.int64)
    pool_modality = np.array([MODALITY_INDEX[p.modality] for p in pool], dtype=np.int64)
    query_txt = np.array([text_id(query_text(q.instruction, q.text) if q.text else None) for q in queries],
                         dtype=np.int64)
    query_image = np.array([image_id(q.image) for q in queries], dtype=np.int64)
    query_instruction = np.array([text_id(q.instruction) for q in queries], dtype=np.int64)
    query_target = np.array([MODALITY_INDEX[q.target] for q in queries], dtype=np.int64)
    positives = [np.array([did_index[d] for d in q.positives], dtype=np.int64) for q in queries]
    negatives = [np.array([did_index[d] for d in q.negatives if d in did_index], dtype=np.int64) for q in queries]
    ignored = [np.array([did_index[d] for d in q.ignore if d in did_index], dtype=np.int64) for q in queries]
    concepts = sorted({p.concept for p in pool if p.concept and p.image})
    concept_index = {name: i for i, name in enumerate(concepts)}
    concept_text = np.array([text_id(concept_prompt(name)) for name in concepts], dtype=np.int64)
    image_concept = np.full(len(image_paths), -1, dtype=np.int64)
    for item, row in zip(pool, pool_image, strict=True):
        if item.concept and row >= 0:
            image_concept[row] = concept_index[item.concept]
    images = np.zeros((len(image_paths), image_size, image_size, 3), dtype=np.uint8)
    for i, rel in enumerate(image_paths):
        with Image.open(root / rel) as image:
            images[i] = image_array(image, image_size)
        if progress is not None and (i % 500 == 0 or i == len(image_paths) - 1):
            progress(i + 1, len(image_paths), "decoding images")
    return TrainingArrays(root, list(pool), list(queries), texts, images, pool_text, pool_image, pool_modality,
                          query_txt, query_image, query_instruction, query_target, positives, negatives, did_index,
                          concept_text, image_concept, ignored)


def concept_prompt(name: str) -> str:
    """The text whose (locked) vector a concept's images are pulled towards."""
    return f"a picture of {name}"


def load_training_set(root: Path, queries_path: Path | None = None, image_size: int = 64,
                      progress=None) -> TrainingArrays:
    """The training set in `root` (pool.jsonl, images); queries from `queries_path` (default root/queries.jsonl,
    or a mined copy with neg_cand_list written elsewhere)."""
    root = Path(root)
    pool = load_pool(root / "pool.jsonl")
    queries_path = Path(queries_path) if queries_path else root / "queries.jsonl"
    queries = load_training_queries(queries_path, {p.did for p in pool})
    return build_arrays(root, pool, queries, image_size, progress=progress)


def write_queries_with_negatives(path: Path, queries: Sequence[TrainQuery], negatives: Sequence[Sequence[str]]) -> None:
    """queries.jsonl again, each row with `neg_cand_list` (atomic write)."""
    from mmembed.storage import atomic_write_text

    lines = []
    for query, negs in zip(queries, negatives, strict=True):
        row = dict(query.raw) if query.raw else {
            "qid": query.qid, "query_txt": query.text, "query_img_path": query.image,
            "query_modality": query.modality.value, "pos_cand_list": query.positives, "task": query.task,
            "target_modality": query.target.value, "split": query.split}
        row["neg_cand_list"] = list(negs)
        lines.append(json.dumps(row, ensure_ascii=False))
    atomic_write_text(path, "\n".join(lines) + "\n")
