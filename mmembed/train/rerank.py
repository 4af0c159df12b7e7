"""Training of mmembed-mini-rerank on the training set (disjoint from sample_corpus), on the first stage's own
top-N: the shipped mmembed-mini retrieves for every training query, and the reranker learns to put a
positive first among those hard negatives (listwise softmax cross-entropy over 1 positive + L-1 negatives).
Every labelled positive counts as one (a t->i query has about 20, an i->i query 30): none is ever used as a
negative, and the validation figures count any of them at rank 1, as the evaluation does.

Two steps, each resumable on its own, both on CPU:

    python -m mmembed.train.rerank prepare --data build/training_set --out build/rerank
        frozen features once: bottom-layer text states of every pool text and query, image-tower maps,
        and mmembed-mini's top-N per query (its text vectors come from the same tower pass)
    python -m mmembed.train.rerank train --features build/rerank --out assets/mmembed-mini-rerank --minutes 25
        trains the joint layers, projections and head for a wall-clock budget; selects the checkpoint on the
        training set's validation split (R@1 after reranking the top-N), never on evaluation queries
"""

from __future__ import annotations

# long: preparation, training and fusion selection of one model share their array layout; split after issue 11
import argparse
import json
import math
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mmembed.models.mini_rerank import MODALITY_INDEX, RerankConfig
from mmembed.types import Modality, ValidationError

FEATURES_NAME = "features.safetensors"
# first-stage weights tried on the validation split; the best (ties: the smaller) ships as the default
FUSION_WEIGHTS = (0.0, 0.25, 0.5, 0.75, 0.8, 0.85, 0.9, 0.95)
META_NAME = "features.json"


def _log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------------ feature preparation
def _pack(states, mask):
    """Variable-length rows of a padded (n, L, h) batch as one flat float16 array plus (n + 1) offsets."""
    import numpy as np

    lengths = mask.sum(1).numpy()
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths)
    flat = states[mask].numpy().astype(np.float16)
    return flat, offsets


def _load_image_tower(reranker: Any, retriever: Any, image_tower_from: Path | None) -> None:
    """The reranker's frozen image tower: the retriever's own tower if it has the same shape (always so for
    image source "mini", which copies mmembed-mini's pretrained tower), else the CNN of a reranker folder."""
    from mmembed.models.mini_rerank import load_model_dir as load_reranker_dir

    def tower_state(model: Any) -> dict[str, Any]:
        return {k.removeprefix("image_tower."): v for k, v in model.state_dict().items()
                if k.startswith("image_tower.")}

    wanted = set(reranker.image_tower.state_dict())
    if image_tower_from is None:
        state = tower_state(retriever)
        if set(state) != wanted:
            raise ValueError("the retriever's image tower is not the reranker's: use --image-source mini with a "
                             "pretrained-tower retriever, or pass --image-tower-from with a reranker folder whose "
                             "frozen CNN to reuse")
    else:
        state = tower_state(load_reranker_dir(image_tower_from)[0])
    reranker.image_tower.load_state_dict(state)


def _select_queries(data, max_train: int, max_val: int, seed: int):
    """Training queries (balanced over tasks, at most max_train) and validation queries (at most max_val)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    chosen = {}
    for split, limit in (("train", max_train), ("val", max_val)):
        rows = data.split(split)
        tasks = sorted({data.queries[i].task for i in rows})
        per_task = {t: rng.permutation([i for i in rows if data.queries[i].task == t]).tolist() for t in tasks}
        picked: list[int] = []
        while len(picked) < min(limit, len(rows)):  # round-robin over tasks: rare tasks are not drowned out
            for t in tasks:
                if per_task[t] and len(picked) < limit:
                    picked.append(per_task[t].pop())
        chosen[split] = np.array(sorted(picked), dtype=np.int64)
    return chosen["train"], chosen["val"]


def prepare(data_root: Path, retriever_dir: Path, out: Path, *, top_n: int = 30, max_train: int = 3000,
            max_val: int = 300, seed: int = 0, config: RerankConfig | None = None,
            tower_dir: Path | None = None, image_tower_from: Path | None = None) -> dict[str, Any]:
    """Write the frozen features to `out` (see the module docstring); `tower_dir` overrides the installed
    text tower (tests pass a tiny one). The reranker's frozen CNN is the retriever's image tower when that is
    the same CNN, else the one of the reranker in `image_tower_from` (mmembed-mini now reads images with a
    pretrained EfficientNet the reranker does not use; a retrained retriever must not change its inputs)."""
    # long: one pass over every frozen input, in the order the packed arrays need; split after issue 11
    import numpy as np
    import torch
    from safetensors.numpy import save_file

    from mmembed.models.mini import MODALITY_INDEX as MINI_MODALITY
    from mmembed.models.mini import load_model_dir, weights_fingerprint
    from mmembed.models.mini_rerank import FrozenBottom, build_model
    from mmembed.models.minilm import query_text, text_tower_dir, text_tower_version
    from mmembed.storage import atomic_write, atomic_write_json
    from mmembed.train.data import load_training_set
    from mmembed.train.mining import top_n_indices

    config = config or RerankConfig(image_source="mini")
    config.text_tower_version = text_tower_version()
    torch.manual_seed(seed)
    started = time.time()
    mini, mini_config, mini_raw = load_model_dir(retriever_dir)
    if config.image_source == "mini":  # the reranker copies the retriever's pretrained tower, at its input size
        if mini_config.image_tower == "cnn":
            raise ValueError(f"{retriever_dir} reads images with the small CNN; image source 'mini' needs "
                             "mmembed-mini's pretrained tower (or use --image-source cnn)")
        config.mini_tower = mini_config.to_json()
        config.image_size = mini_config.image_size
    data = load_training_set(data_root, image_size=config.image_size)
    train_rows, val_rows = _select_queries(data, max_train, max_val, seed)
    rows = np.concatenate([train_rows, val_rows])
    _log(f"{len(data.pool)} pool items, {len(train_rows)} train + {len(val_rows)} val queries")

    bottom = FrozenBottom(tower_dir or text_tower_dir(), config)
    long_config = RerankConfig(**{**asdict(config), "max_query_tokens": 128})
    full_bottom = FrozenBottom.__new__(FrozenBottom)  # same loaded tower, longer limit: for mmembed-mini's vectors
    full_bottom.__dict__.update(bottom.__dict__, config=long_config)
    top = build_model(config).layers  # the tower's own top layers, to finish the pass mmembed-mini needs
    for layer, state in zip(top, bottom.top_layer_states, strict=True):
        layer.load_state_dict(state)
    top.eval()

    def full_pass(texts: list[str], what: str, chunk: int = 256):
        """Bottom states with [CLS] (n, L<=128, h) and the tower's sentence vectors (mean pool, unit)."""
        states_list, vectors = [], []
        for start in range(0, len(texts), chunk):
            states, mask = full_bottom.states(texts[start : start + chunk], query=True)
            with torch.inference_mode():
                x = states
                for layer in top:
                    x = layer(x, mask)
                m = mask.unsqueeze(-1).float()
                pooled = torch.nn.functional.normalize((x * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=-1)
            states_list.append((states, mask))
            vectors.append(pooled.numpy())
            _log(f"{what}: {min(start + chunk, len(texts))}/{len(texts)} texts")
        return states_list, np.concatenate(vectors) if vectors else np.zeros((0, config.hidden), np.float32)

    # candidates: every pool text once (bottom states kept for the reranker, the vector for mmembed-mini)
    pool_text_ids = sorted({int(t) for t in data.pool_text if t >= 0})
    text_row = {t: i for i, t in enumerate(pool_text_ids)}
    chunks, pool_text_vectors = full_pass([data.texts[t] for t in pool_text_ids], "pool texts")
    flats, lengths = [], []
    for states, mask in chunks:
        keep = slice(1, 1 + config.max_candidate_tokens)  # the candidate's view: no [CLS], first tokens
        flat, offsets = _pack(states[:, keep], mask[:, keep])
        flats.append(flat)
        lengths.append(np.diff(offsets))
    cand_flat = np.concatenate(flats)
    cand_offsets = np.concatenate([[0], np.cumsum(np.concatenate(lengths))]).astype(np.int64)

    # queries: raw text through the bottom (the reranker's view), instructed text through all layers (mini's)
    raw = [data.queries[i].text or "" for i in rows]
    q_states, q_mask = bottom.states(raw, query=True)
    query_flat, query_offsets = _pack(q_states, q_mask)
    query_has_text = np.array([data.queries[i].text is not None for i in rows])
    instructed = [query_text(data.queries[i].instruction, data.queries[i].text) if data.queries[i].text else ""
                  for i in rows]
    _, query_text_vectors = full_pass(instructed, "query texts")
    instructions = sorted({data.queries[i].instruction for i in rows})
    _, instruction_vectors = full_pass(instructions, "instructions")
    instruction_row = {s: i for i, s in enumerate(instructions)}

    # images: the reranker's frozen CNN maps, and mmembed-mini's encodings (at its own input size)
    reranker = build_model(config)
    _load_image_tower(reranker, mini, image_tower_from)
    images = torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 255.0
    mini_images = images
    if mini_raw.get("image_size", config.image_size) != config.image_size:
        mini_images = torch.from_numpy(load_training_set(data_root, image_size=mini_raw["image_size"]).images)
        mini_images = mini_images.permute(0, 3, 1, 2).float() / 255.0
    cells, pooled = [], []
    reranker.eval()
    with torch.inference_mode():
        for start in range(0, len(images), 256):
            chunk_cells, chunk_pooled = reranker.tower_outputs(images[start : start + 256])
            cells.append(chunk_cells.numpy().astype(np.float16))  # 1,280 channels per cell with "mini": halved
            pooled.append(chunk_pooled.numpy())
            if (start // 256) % 8 == 0:
                _log(f"images through the tower: {min(start + 256, len(images))}/{len(images)}")
    image_cells, image_pooled = np.concatenate(cells), np.concatenate(pooled)
    _log(f"{len(images)} images through the tower")

    # mmembed-mini's own ranking of the pool for every selected query
    with torch.inference_mode():
        pool_vectors = []
        for start in range(0, len(data.pool), 1024):
            idx = np.arange(start, min(start + 1024, len(data.pool)))
            text = np.zeros((len(idx), config.hidden), np.float32)
            has_text = data.pool_text[idx] >= 0
            text[has_text] = pool_text_vectors[[text_row[int(t)] for t in data.pool_text[idx][has_text]]]
            image_rows = data.pool_image[idx]
            pool_vectors.append(mini.encode_candidates(
                torch.from_numpy(text), mini_images[torch.from_numpy(image_rows[image_rows >= 0])],
                torch.from_numpy(has_text), torch.from_numpy(image_rows >= 0),
                torch.from_numpy(data.pool_modality[idx])).numpy())
        query_vectors = []
        for start in range(0, len(rows), 1024):  # in chunks: the image tower's activations for 10k images fill RAM
            part = slice(start, start + 1024)
            image_rows = data.query_image[rows[part]]
            query_vectors.append(mini.encode_queries(
                torch.from_numpy(query_text_vectors[part]), mini_images[torch.from_numpy(image_rows[image_rows >= 0])],
                torch.from_numpy(query_has_text[part]), torch.from_numpy(image_rows >= 0),
                torch.from_numpy(instruction_vectors[[instruction_row[data.queries[i].instruction]
                                                      for i in rows[part]]])).numpy())
        query_vectors = np.concatenate(query_vectors)
    pool_vectors = np.concatenate(pool_vectors)
    ranking = top_n_indices(query_vectors, pool_vectors, top_n)
    first_scores = np.take_along_axis(query_vectors @ pool_vectors.T, ranking, axis=1).astype(np.float32)
    assert MINI_MODALITY == MODALITY_INDEX  # one modality numbering for retriever and reranker

    arrays = {
        "cand_flat": cand_flat, "cand_offsets": cand_offsets,
        "pool_text_row": np.array([text_row.get(int(t), -1) for t in data.pool_text], dtype=np.int64),
        "pool_image": data.pool_image.astype(np.int64), "pool_modality": data.pool_modality.astype(np.int64),
        "query_flat": query_flat, "query_offsets": query_offsets,
        "query_has_text": query_has_text, "query_image": data.query_image[rows].astype(np.int64),
        "query_target": data.query_target[rows].astype(np.int64), "query_rows": rows,
        "query_positive": np.array([int(data.positives[i][0]) for i in rows], dtype=np.int64),
        "ranking": ranking.astype(np.int64), "first_scores": first_scores,
        "ranking_label": _ranking_labels(data, rows, ranking),
        "image_cells": image_cells, "image_pooled": image_pooled.astype(np.float32),
        "is_val": np.concatenate([np.zeros(len(train_rows), bool), np.ones(len(val_rows), bool)]),
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / FEATURES_NAME, lambda tmp: save_file({k: np.ascontiguousarray(v) for k, v in arrays.items()},
                                                             str(tmp)))
    meta = {
        "config": config.to_json(), "top_n": top_n, "seed": seed, "data": str(data_root),
        "data_manifest_fingerprint": _manifest_fingerprint(data_root),
        "retriever": {"dir": str(retriever_dir), "config_fingerprint": mini_raw.get("fingerprint"),
                      "fingerprint": weights_fingerprint(retriever_dir / "model.safetensors")},
        "text_tower": f"{config.text_tower}=={text_tower_version()}" if tower_dir is None else str(tower_dir),
        "image_tower_from": str(image_tower_from) if image_tower_from is not None else None,
        "tasks": [data.queries[i].task for i in rows], "qids": [data.queries[i].qid for i in rows],
        "first_stage_val": first_stage_metrics(arrays, top_n),
        "seconds": round(time.time() - started, 1),
    }
    atomic_write_json(out / META_NAME, meta)
    _log(f"features written to {out} in {meta['seconds']} s; first stage on val: {meta['first_stage_val']}")
    return meta


POSITIVE, NEGATIVE, IGNORED = 1, 0, -1


def _ranking_labels(data, rows, ranking):
    """(rows, top_n) int8: POSITIVE for every labelled positive (a t->i query has about 20, an i->i query 30),
    IGNORED for candidates that count neither way (an i->i query's own image), NEGATIVE otherwise."""
    import numpy as np

    labels = np.full(ranking.shape, NEGATIVE, dtype=np.int8)
    for r, row in enumerate(rows):
        positives = set(data.positives[row].tolist())
        ignored = data.not_negative(row) - positives
        for c, pool in enumerate(ranking[r]):
            labels[r, c] = POSITIVE if int(pool) in positives else IGNORED if int(pool) in ignored else NEGATIVE
    return labels


def labels_of(arrays: dict[str, Any]):
    """The ranking's labels; features written before they were stored know only the first positive."""
    import numpy as np

    if "ranking_label" in arrays:
        return arrays["ranking_label"]
    return np.where(arrays["ranking"] == arrays["query_positive"][:, None], POSITIVE, NEGATIVE).astype(np.int8)


def _manifest_fingerprint(root: Path) -> str | None:
    try:
        return json.loads((Path(root) / "manifest.json").read_text()).get("fingerprint")
    except (OSError, ValueError):
        return None


def first_stage_metrics(arrays: dict[str, Any], depth: int) -> dict[str, float]:
    import numpy as np

    val = np.flatnonzero(arrays["is_val"])
    return _metrics(arrays, val, arrays["ranking"][val, :depth])


def _metrics(arrays: dict[str, Any], rows, ranked) -> dict[str, float]:
    """R@1/R@5 and wrong-modality@1 of `ranked` (pool indices per row of `rows`, each from the row's first-stage
    top-N): any labelled positive counts, and ignored candidates are skipped, as the evaluation does."""
    import numpy as np

    if len(rows) == 0:
        return {}
    labels = labels_of(arrays)
    r1, r5, wrong1 = [], [], []
    for row, order in zip(rows, ranked, strict=True):
        label = dict(zip(arrays["ranking"][row].tolist(), labels[row].tolist(), strict=True))
        kept = [int(p) for p in order if label[int(p)] != IGNORED]
        r1.append(bool(kept) and label[kept[0]] == POSITIVE)
        r5.append(any(label[p] == POSITIVE for p in kept[:5]))
        wrong1.append(bool(kept) and arrays["pool_modality"][kept[0]] != arrays["query_target"][row])
    return {"R@1": round(float(np.mean(r1)), 4), "R@5": round(float(np.mean(r5)), 4),
            "wrong_modality@1": round(float(np.mean(wrong1)), 4), "queries": len(rows)}


# ------------------------------------------------------------------------------------------ training
@dataclass
class TrainConfig:
    """The training recipe: wall-clock budget, lists per step, list size, depth, learning rates, validation."""

    minutes: float = 25.0
    batch_queries: int = 8
    list_size: int = 8  # 1 positive + 7 first-stage negatives
    depth: int = 20  # negatives come from the first stage's top `depth`; validation reranks that deep too
    lr_layers: float = 1e-4
    lr_new: float = 1e-3
    weight_decay: float = 0.01
    warmup_steps: int = 20
    validate_every_minutes: float = 10.0
    max_steps: int = 0  # 0: until the time budget is spent
    seed: int = 0
    # > 0: train the fused score the page ranks by, w * (s + 1) / 2 + (1 - w) * sigmoid(logit) with the first
    # stage's s, so the cross-encoder learns to correct the first stage instead of ranking on its own; only
    # queries with a positive in the first stage's top `depth` train (no other can move to rank 1 there)
    fusion_weight: float = 0.0


class Batcher:
    """Turns (query row, pool index) pairs into the model's batched inputs from the packed features."""

    def __init__(self, arrays: dict[str, Any], config: RerankConfig) -> None:
        import torch

        self.a, self.config = arrays, config
        self.cand_flat = torch.from_numpy(arrays["cand_flat"])
        self.query_flat = torch.from_numpy(arrays["query_flat"])
        self.cells = torch.from_numpy(arrays["image_cells"])
        self.pooled = torch.from_numpy(arrays["image_pooled"])

    def _rows(self, flat, offsets, indices):
        import torch

        lengths = [int(offsets[i + 1] - offsets[i]) if i >= 0 else 0 for i in indices]
        width = max([1, *lengths])
        states = torch.zeros(len(indices), width, self.config.hidden)
        mask = torch.zeros(len(indices), width, dtype=torch.bool)
        for row, (i, length) in enumerate(zip(indices, lengths, strict=True)):
            if length:
                states[row, :length] = flat[int(offsets[i]) : int(offsets[i]) + length].float()
                mask[row, :length] = True
        return states, mask

    def inputs(self, model, query_rows: Sequence[int], pool_rows: Sequence[int]) -> dict[str, Any]:
        import numpy as np
        import torch

        a, n, tokens = self.a, len(query_rows), self.config.image_tokens
        q_states, q_mask = self._rows(self.query_flat, a["query_offsets"], list(query_rows))
        c_states, c_mask = self._rows(self.cand_flat, a["cand_offsets"],
                                      [int(a["pool_text_row"][p]) for p in pool_rows])
        q_img = a["query_image"][np.asarray(query_rows)]
        c_img = a["pool_image"][np.asarray(pool_rows)]
        wanted = sorted({int(i) for i in np.concatenate([q_img, c_img]) if i >= 0})
        position = {img: j for j, img in enumerate(wanted)}
        image_tokens = (model.project_image(self.cells[wanted], self.pooled[wanted]) if wanted
                        else torch.zeros(0, tokens, self.config.hidden))

        def gather(ids):
            out = torch.zeros(n, tokens, self.config.hidden)
            present = [k for k, i in enumerate(ids) if i >= 0]
            if present:
                out[present] = image_tokens[[position[int(ids[k])] for k in present]]
            return out

        return {
            "query_states": q_states, "query_mask": q_mask, "query_image": gather(q_img),
            "query_has_image": torch.from_numpy(q_img >= 0), "cand_states": c_states, "cand_mask": c_mask,
            "cand_image": gather(c_img), "cand_has_image": torch.from_numpy(c_img >= 0),
            "cand_modality": torch.from_numpy(a["pool_modality"][np.asarray(pool_rows)]),
            "target": torch.from_numpy(a["query_target"][np.asarray(query_rows)]),
        }


def rerank_rows(model, batcher: Batcher, arrays: dict[str, Any], rows, depth: int, fusion_weight: float = 0.0):
    """Pool indices of each row's first-stage top `depth`, re-sorted by the model (ties keep first-stage order).
    `fusion_weight` mixes in the first-stage score exactly as `mmembed.rerankers.base.rerank` does."""
    return rank_by_scores(arrays, rows, score_rows(model, batcher, arrays, rows, depth), fusion_weight)


def score_rows(model, batcher: Batcher, arrays: dict[str, Any], rows, depth: int):
    """(len(rows), depth) reranker scores (sigmoid, as served) of each row's first-stage top `depth`."""
    import numpy as np
    import torch

    out = []
    model.eval()
    with torch.inference_mode():
        for row in rows:
            pool = arrays["ranking"][row, :depth]
            out.append(torch.sigmoid(model(**batcher.inputs(model, [int(row)] * len(pool), pool.tolist()))).numpy())
    return np.array(out)


def rank_by_scores(arrays: dict[str, Any], rows, scores, fusion_weight: float = 0.0):
    import numpy as np

    depth = scores.shape[1]
    out = []
    for row, row_scores in zip(rows, scores, strict=True):
        pool = arrays["ranking"][row, :depth]
        fused = fusion_weight * (arrays["first_scores"][row, :depth] + 1.0) / 2.0 + (1 - fusion_weight) * row_scores
        order = sorted(range(depth), key=lambda i: (-fused[i], i))
        out.append(pool[order])
    return np.array(out)


def _sample_list(rng, arrays, labels, row: int, list_size: int, depth: int) -> list[int]:
    """[a positive, list_size - 1 negatives from the first stage's top `depth`]. The positive is one of the
    labelled positives in the top depth when there is one (the first-stage score of every list member is then
    known), else the query's first positive. Other positives and ignored candidates are never negatives."""
    top, label = arrays["ranking"][row, :depth], labels[row, :depth]
    found = top[label == POSITIVE]
    positive = int(found[rng.integers(len(found))]) if len(found) else int(arrays["query_positive"][row])
    negatives = [int(p) for p in top[label == NEGATIVE]]
    picked = rng.choice(len(negatives), size=min(list_size - 1, len(negatives)), replace=False)
    return [positive, *(negatives[i] for i in sorted(picked))]


def _first_stage_scores(arrays, query_rows: Sequence[int], pool_rows: Sequence[int], depth: int):
    """The first stage's score of each (query row, pool index) pair; every pool index is in the row's top depth."""
    import numpy as np

    out = []
    for row, pool in zip(query_rows, pool_rows, strict=True):
        position = int(np.flatnonzero(arrays["ranking"][row, :depth] == pool)[0])
        out.append(float(arrays["first_scores"][row, position]))
    return np.array(out, dtype=np.float32)


def train(features: Path, out: Path, config: TrainConfig, *, log: Callable[[str], None] = _log,
          tower_dir: Path | None = None) -> dict[str, Any]:
    """Train for `config.minutes` of wall clock; write the best validation checkpoint to `out`."""
    # long: the loop, its validation and checkpointing share state; split after issue 11
    import numpy as np
    import torch
    from safetensors.numpy import load_file

    from mmembed.models.mini import load_model_dir as load_mini
    from mmembed.models.mini_rerank import FrozenBottom, build_model, save_model_dir
    from mmembed.models.minilm import text_tower_dir

    meta = json.loads((features / META_NAME).read_text())
    arrays = load_file(str(features / FEATURES_NAME))
    rconfig = RerankConfig.from_json(meta["config"])
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    model = build_model(rconfig)
    # start from the pretrained tower's top layers and mmembed-mini's image tower
    bottom = FrozenBottom(tower_dir or text_tower_dir(), rconfig)
    for layer, state in zip(model.layers, bottom.top_layer_states, strict=True):
        layer.load_state_dict(state)
    del bottom
    mini, _, _ = load_mini(Path(meta["retriever"]["dir"]))
    tower_from = meta.get("image_tower_from")  # the same frozen CNN the features were computed with
    _load_image_tower(model, mini, Path(tower_from) if tower_from else None)
    batcher = Batcher(arrays, rconfig)
    labels = labels_of(arrays)
    train_rows = np.flatnonzero(~arrays["is_val"])
    val_rows = np.flatnonzero(arrays["is_val"])
    fusing = config.fusion_weight > 0
    if fusing:  # the fused objective needs the positive's first-stage score: it must be in the top depth
        found = (labels[train_rows, : config.depth] == POSITIVE).any(axis=1)
        log(f"fused training (w={config.fusion_weight}): {int(found.sum())} of {len(train_rows)} training "
            f"queries have their positive in the first stage's top {config.depth}")
        train_rows = train_rows[found]
    # a list needs a negative: drop queries whose top depth holds only positives (and ignored candidates)
    train_rows = train_rows[(labels[train_rows, : config.depth] == NEGATIVE).any(axis=1)]
    # the fused objective's softmax scale (fused scores lie in [0, 1]); trained, never shipped
    log_scale = torch.nn.Parameter(torch.tensor(math.log(20.0)))
    layer_params = [p for n, p in model.named_parameters() if n.startswith("layers.")]
    new_params = [p for n, p in model.named_parameters() if not n.startswith(("layers.", "image_tower."))]
    if fusing:
        new_params.append(log_scale)
    optimizer = torch.optim.AdamW([{"params": layer_params, "lr": config.lr_layers, "base": config.lr_layers},
                                   {"params": new_params, "lr": config.lr_new, "base": config.lr_new}],
                                  weight_decay=config.weight_decay)
    first = _metrics(arrays, val_rows, arrays["ranking"][val_rows, : config.depth])
    log(f"first stage on val (top {config.depth}): {first}")
    budget, started = config.minutes * 60, time.time()
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    next_validation, step, losses = config.validate_every_minutes * 60, 0, []

    def validate() -> None:
        nonlocal best
        scores = score_rows(model, batcher, arrays, val_rows, config.depth)
        reranked = _metrics(arrays, val_rows, rank_by_scores(arrays, val_rows, scores))
        fused = {str(w): _metrics(arrays, val_rows, rank_by_scores(arrays, val_rows, scores, w))
                 for w in sorted({*FUSION_WEIGHTS, config.fusion_weight}) if w > 0}
        entry = {"step": step, "minutes": round((time.time() - started) / 60, 1), "val": reranked,
                 "val_fused": fused, "loss": round(float(np.mean(losses[-50:])), 4) if losses else None}
        history.append(entry)
        log(f"validation at step {step}: {reranked} (first stage R@1 {first['R@1']}); fused R@1 "
            + ", ".join(f"w={w}: {m['R@1']}" for w, m in fused.items()))
        # selected by what the page will rank by: the fused order when training fused, else the reranker's own
        judged = (lambda e: e["val_fused"][str(config.fusion_weight)]) if fusing else (lambda e: e["val"])
        key = (judged(entry)["R@1"], -judged(entry)["wrong_modality@1"])
        if best is None or key > (judged(best)["R@1"], -judged(best)["wrong_modality@1"]):
            best = entry
            save_model_dir(model, rconfig, out, info={"training": _manifest(meta, config, step, history, first)})
            log(f"saved to {out}")

    while time.time() - started < budget and not (config.max_steps and step >= config.max_steps):
        model.train()
        progress = (time.time() - started) / budget
        scale = min(1.0, (step + 1) / config.warmup_steps) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0)))
        for group in optimizer.param_groups:
            group["lr"] = group["base"] * scale
        queries = rng.choice(train_rows, size=config.batch_queries, replace=False)
        lists = [_sample_list(rng, arrays, labels, int(q), config.list_size, config.depth) for q in queries]
        # a query with many positives in its top depth has fewer negatives: pad its list with its own last
        # negative and mask the copies out of the softmax
        width = max(len(x) for x in lists)
        padded = torch.tensor([[c >= len(x) for c in range(width)] for x in lists])
        query_rows = [int(q) for q, x in zip(queries, lists, strict=True) for _ in range(width)]
        pool_rows = [x[min(c, len(x) - 1)] for x in lists for c in range(width)]
        scores = model(**batcher.inputs(model, query_rows, pool_rows)).view(len(queries), width)
        if fusing:
            first_stage = torch.from_numpy(_first_stage_scores(arrays, query_rows, pool_rows, config.depth))
            fused = (config.fusion_weight * (first_stage.view_as(scores) + 1.0) / 2.0
                     + (1.0 - config.fusion_weight) * torch.sigmoid(scores))
            scores = fused * log_scale.exp()
        scores = scores.masked_fill(padded, float("-inf"))
        loss = torch.nn.functional.cross_entropy(scores, torch.zeros(len(queries), dtype=torch.long))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([*layer_params, *new_params], 1.0)
        optimizer.step()
        losses.append(float(loss.detach()))
        step += 1
        if step % 10 == 0:
            log(f"step {step} loss {np.mean(losses[-10:]):.4f} lr-scale {scale:.3f} "
                f"{(time.time() - started) / 60:.1f} min, load {os.getloadavg()[0]:.1f}")
        if time.time() - started >= next_validation:
            validate()
            next_validation += config.validate_every_minutes * 60
    validate()
    # the manifest of the kept checkpoint gains the whole run's history (the weights and fingerprint stay)
    from mmembed.storage import atomic_write_json

    shipped = json.loads((out / "config.json").read_text())
    shipped["training"] = {**_manifest(meta, config, best["step"], history, first), "steps_run": step,
                           "seconds": round(time.time() - started, 1)}
    atomic_write_json(out / "config.json", shipped)
    selection = select_fusion_weight(features, out, config.depth, log=log)
    return {"best": best, "history": history, "first_stage": first, "fusion": selection}


def _manifest(meta: dict[str, Any], config: TrainConfig, step: int, history: list, first: dict) -> dict[str, Any]:
    return {
        "recipe": asdict(config), "steps": step, "data": meta["data"],
        "data_manifest_fingerprint": meta["data_manifest_fingerprint"], "first_stage": meta["retriever"],
        "top_n_mined": meta["top_n"], "text_tower": meta["text_tower"],
        "train_queries": int(len(meta["qids"]) - meta["first_stage_val"].get("queries", 0)),
        "selection": ("best R@1 after reranking the first stage's top-depth on the training set's val split"
                      + (f" (fused with the first stage at w={config.fusion_weight}, as trained)"
                         if config.fusion_weight > 0 else "")),
        "first_stage_val": first, "history": list(history),
    }


def select_fusion_weight(features: Path, model_dir: Path, depth: int = 20,
                         log: Callable[[str], None] = _log) -> dict[str, Any]:
    """Score the validation split once with the model in `model_dir`, rank with each of FUSION_WEIGHTS, and
    write the best weight (R@1, then lower wrong-modality@1, then the smaller weight) into its config.json
    as `fusion_weight`, with the whole table under `fusion_selection`. Evaluation queries are never used."""
    import numpy as np
    from safetensors.numpy import load_file

    from mmembed.models.mini_rerank import load_model_dir
    from mmembed.storage import atomic_write_json

    arrays = load_file(str(features / FEATURES_NAME))
    model, config, raw = load_model_dir(model_dir)
    val = np.flatnonzero(arrays["is_val"])
    scores = score_rows(model, Batcher(arrays, config), arrays, val, depth)
    trained_with = float(raw.get("training", {}).get("recipe", {}).get("fusion_weight", 0.0))
    weights = sorted({*FUSION_WEIGHTS, trained_with})
    table = {str(w): _metrics(arrays, val, rank_by_scores(arrays, val, scores, w)) for w in weights}
    first = _metrics(arrays, val, arrays["ranking"][val, :depth])
    best = max(weights, key=lambda w: (table[str(w)]["R@1"], -table[str(w)]["wrong_modality@1"], -w))
    raw["fusion_weight"] = best
    raw["fusion_selection"] = {"split": "training set val", "depth": depth, "first_stage": first, "by_weight": table}
    atomic_write_json(model_dir / "config.json", raw)
    log(f"fusion weight {best}: {table[str(best)]} (first stage {first})")
    return raw["fusion_selection"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mmembed.train.rerank", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("prepare", help="frozen features and the first stage's top-N for the training set")
    p.add_argument("--data", type=Path, default=Path("build/training_set"))
    p.add_argument("--retriever", type=Path, default=Path("assets/mmembed-mini"))
    p.add_argument("--out", type=Path, default=Path("build/rerank"))
    p.add_argument("--top-n", type=int, default=30)
    p.add_argument("--max-train", type=int, default=3000)
    p.add_argument("--max-val", type=int, default=300)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--image-source", choices=("mini", "cnn"), default="mini",
                   help="image tokens from the retriever's pretrained tower (default) or from a small CNN")
    p.add_argument("--image-tower-from", type=Path, default=None,
                   help="a reranker folder whose frozen image CNN to reuse (needed when the retriever's tower differs)")
    t = sub.add_parser("train", help="train the reranker on prepared features")
    t.add_argument("--features", type=Path, default=Path("build/rerank"))
    t.add_argument("--out", type=Path, default=Path("assets/mmembed-mini-rerank"))
    for name, value in asdict(TrainConfig()).items():
        t.add_argument(f"--{name.replace('_', '-')}", type=type(value), default=value)
    f = sub.add_parser("fusion", help="choose the shipped first-stage fusion weight on the validation split")
    f.add_argument("--features", type=Path, default=Path("build/rerank"))
    f.add_argument("--model", type=Path, default=Path("assets/mmembed-mini-rerank"))
    f.add_argument("--depth", type=int, default=20)
    args = parser.parse_args(argv)
    if args.command == "fusion":
        select_fusion_weight(args.features, args.model, args.depth)
    elif args.command == "prepare":
        prepare(args.data, args.retriever, args.out, top_n=args.top_n, max_train=args.max_train,
                max_val=args.max_val, seed=args.seed, image_tower_from=args.image_tower_from,
                config=RerankConfig(image_source=args.image_source))
    else:
        config = TrainConfig(**{k: getattr(args, k) for k in asdict(TrainConfig())})
        if config.list_size < 2:
            raise ValidationError("--list-size must be at least 2 (a positive and a negative)")
        if not 0.0 <= config.fusion_weight < 1.0:
            raise ValidationError("--fusion-weight must be in [0, 1): at 1 the reranker would not count")
        train(args.features, args.out, config)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

__all__ = ["MODALITY_INDEX", "Modality", "TrainConfig", "prepare", "train"]
