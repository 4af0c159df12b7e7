"""A tiny training set and a fake text tower for the training tests (seconds, no real weights)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import numpy as np

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 30), "blue": (30, 30, 220), "yellow": (230, 220, 20),
           "black": (10, 10, 10), "purple": (150, 30, 160)}


class HashTextEncoder:
    """Bag of hashed words -> unit vector: similar texts get similar vectors, deterministically."""

    def __init__(self, dim: int = 16) -> None:
        self.dim = dim
        self.name = f"hash-{dim}"

    def encode(self, texts):
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"[a-z]+", text.lower()):
                seed = int(hashlib.sha256(word.encode()).hexdigest()[:8], 16)
                out[row] += np.random.default_rng(seed).standard_normal(self.dim).astype(np.float32)
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def build_tiny_set(root: Path) -> Path:
    from PIL import Image

    (root / "images").mkdir(parents=True)
    pool, queries = [], []
    for i, (name, rgb) in enumerate(COLOURS.items()):
        image = Image.new("RGB", (16, 16), (255, 255, 255))
        image.paste(rgb, (3 + i % 3, 3, 13, 13 - i % 2))
        image.save(root / "images" / f"{name}.png")
        pool += [
            {"did": f"{name}:image", "txt": None, "img_path": f"images/{name}.png", "modality": "image"},
            {"did": f"{name}:text", "txt": f"a {name} square", "img_path": None, "modality": "text"},
        ]
        split = "val" if name in ("black", "purple") else "train"
        queries += [
            {"qid": f"{name}-ti", "query_txt": name, "query_img_path": None, "query_modality": "text",
             "pos_cand_list": [f"{name}:image"], "task": "t->i", "target_modality": "image", "split": split},
            {"qid": f"{name}-it", "query_txt": None, "query_img_path": f"images/{name}.png", "query_modality": "image",
             "pos_cand_list": [f"{name}:text"], "task": "i->t", "target_modality": "text", "split": split},
            {"qid": f"{name}-tt", "query_txt": f"{name} colour", "query_img_path": None, "query_modality": "text",
             "pos_cand_list": [f"{name}:text"], "task": "t->t", "target_modality": "text", "split": split},
        ]
    (root / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool))
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    return root


def tiny_model_config():
    from mmembed.models.mini import MiniConfig

    return MiniConfig(dim=16, image_size=16, channels=(4, 8), text_tower="hash-16")
