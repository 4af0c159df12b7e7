"""A tiny corpus on disk and a DemoState with the keyword fake embedder and fake reranker, for the UI tests.

The keyword embedder with text_bias > 0 makes a text query prefer text candidates: with the query
"cat" and target image, the first stage puts the two cat texts above the cat images (modality bias).
"""

from __future__ import annotations

import json
from pathlib import Path

from fakes import FakeReranker, KeywordEmbedder
from PIL import Image

from mmembed.config import Settings
from mmembed.corpus import load_mbeir_jsonl
from mmembed.registry import Registry
from mmembed.ui.state import DemoState

VOCAB = ["cat", "dog", "apple", "violin", "mat", "boat"]


def _png(folder: Path, name: str, colour: tuple[int, int, int]) -> str:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (24, 16), colour).save(folder / "images" / name)
    return f"images/{name}"


def write_corpus(folder: Path) -> Path:
    rows = [
        {"did": "t-cat", "txt": "The cat is a small domesticated carnivore.", "modality": "text"},
        {"did": "t-cat-mat", "txt": "A cat sat on the <b>mat</b> & purred.", "modality": "text"},
        {"did": "t-dog", "txt": "The dog is a loyal animal.", "modality": "text"},
        {"did": "t-apple", "txt": "An apple a day.", "modality": "text"},
        {"did": "i-cat", "img_path": _png(folder, "cat.png", (200, 120, 40)), "modality": "image",
         "source": "test:cat", "license": "CC0", "credit": "Test Author"},
        {"did": "i-cat-mat", "img_path": _png(folder, "cat_mat.png", (180, 100, 60)), "modality": "image"},
        {"did": "i-dog", "img_path": _png(folder, "dog.png", (90, 90, 90)), "modality": "image"},
        {"did": "i-boat", "img_path": _png(folder, "boat.png", (20, 60, 200)), "modality": "image"},
        {"did": "it-cat", "txt": "A sleeping cat.", "img_path": _png(folder, "cat_2.png", (160, 90, 30)),
         "modality": "image,text"},
        {"did": "it-violin", "txt": "A violin.", "img_path": _png(folder, "violin.png", (120, 60, 10)),
         "modality": "image,text"},
    ]
    path = folder / "corpus.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n", encoding="utf-8")
    return path


def make_state(tmp_path: Path, text_bias: float = 0.8) -> DemoState:
    corpus_path = write_corpus(tmp_path / "corpus")
    settings = Settings(corpus=corpus_path, queries=tmp_path / "no-queries.jsonl", cache_dir=tmp_path / "cache",
                        embedder="keyword", reranker="fake-reranker", fallback_embedder="keyword", rerank_top_k=3)
    return DemoState(settings, corpus=load_mbeir_jsonl(corpus_path),
                     embedders=registry("embedder", keyword=KeywordEmbedder(VOCAB, text_bias=text_bias)),
                     rerankers=registry("reranker", **{"fake-reranker": FakeReranker()}))


def registry(kind: str, **backends: object) -> Registry:
    """A registry holding the given fakes by name (what a test's DemoState takes instead of the real ones)."""
    found: Registry = Registry(kind)
    for name, backend in backends.items():
        found.register_instance(name, backend, f"test {kind}")
    return found


class TargetAwareReranker(FakeReranker):
    """FakeReranker that also halves the score of candidates of the wrong modality, as a good MLLM
    reranker does when asked "does this image match?": reranking then lowers the wrong-modality rate."""

    name = "target-aware"

    def score(self, query, items, *, progress=None):
        base = super().score(query, items, progress=progress)
        return [s if query.target is None or item.modality is query.target else s / 2
                for s, item in zip(base, items, strict=True)]
