"""A tiny M-BEIR corpus for the retrieval tests: texts, images and image+text items whose image file
names carry keywords that tests/fakes.KeywordEmbedder reads, so rankings are known in advance."""

from __future__ import annotations

import json
from pathlib import Path

from PIL import Image

VOCAB = ["cat", "dog", "apple", "violin", "rocket", "boat"]


def png(path: Path, colour=(200, 30, 30)) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), colour).save(path)
    return path.name


def write_corpus(folder: Path) -> Path:
    """Texts, images and image+text items about cats, dogs, apples and violins (file names carry keywords)."""
    rows = [
        {"did": "t-cat", "txt": "The cat is a small domesticated carnivore.", "img_path": None, "modality": "text"},
        {"did": "t-dog", "txt": "The dog is a loyal domesticated animal.", "img_path": None, "modality": "text"},
        {"did": "t-apple", "txt": "An apple is the round fruit of a tree.", "img_path": None, "modality": "text"},
        {"did": "i-cat", "txt": None, "img_path": "images/" + png(folder / "images/cat.png"), "modality": "image"},
        {"did": "i-dog", "txt": None, "img_path": "images/" + png(folder / "images/dog.png"), "modality": "image"},
        {"did": "i-violin", "txt": None, "img_path": "images/" + png(folder / "images/violin.png"),
         "modality": "image"},
        {"did": "it-apple", "txt": "A red apple.", "img_path": "images/" + png(folder / "images/apple.png"),
         "modality": "image,text", "license": "CC0", "source": "test:apple"},
        {"did": "it-cat", "txt": "A sleeping cat.", "img_path": "images/" + png(folder / "images/cat_2.png"),
         "modality": "image,text"},
    ]
    path = folder / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    return path
