"""One Settings dataclass: defaults, overridden by MMEMBED_* environment variables, overridden by CLI flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent
SAMPLE_CORPUS_DIR = PROJECT_DIR / "sample_corpus"
ASSETS_DIR = PROJECT_DIR / "assets"


def default_cache_dir() -> Path:
    """Where indexes and embedding caches live: $MMEMBED_CACHE_DIR, else the user cache dir."""
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("mmembed"))


@dataclass(frozen=True)
class Settings:
    """Everything a run can be configured with. Each field maps to env var MMEMBED_<FIELD upper>."""

    corpus: Path = SAMPLE_CORPUS_DIR / "corpus.jsonl"
    queries: Path = SAMPLE_CORPUS_DIR / "queries.jsonl"
    embedder: str = "clip-b32"
    reranker: str = "smolvlm-256m"
    # Used when `embedder` cannot be loaded (offline and not cached): the model shipped in assets/.
    fallback_embedder: str = "mmembed-mini"
    # Used when `reranker` cannot run here (weights not downloaded, needs a GPU): the cross-encoder in assets/.
    fallback_reranker: str = "mmembed-mini-rerank"
    cache_dir: Path = field(default_factory=default_cache_dir)
    device: str = "auto"  # auto | cpu | cuda | mps
    # The first-stage embedder's: auto | float32 | float16 | bfloat16, or int8 (CLIP family, CPU). Rerankers use auto.
    dtype: str = "auto"
    index_type: str = "flat"  # flat | hnsw | ivfpq
    batch_size: int = 32
    top_k: int = 10
    rerank_top_k: int = 10

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None, **overrides: object) -> Settings:
        """Defaults, then MMEMBED_* variables, then explicit overrides that are not None."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for f in fields(cls):
            raw = env.get(f"MMEMBED_{f.name.upper()}")
            if raw is None or raw == "":
                continue
            values[f.name] = _convert(f.name, f.type, raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values)


def _convert(name: str, annotation: object, raw: str) -> object:
    kind = str(annotation)
    if "Path" in kind:
        return Path(raw).expanduser()
    if "int" in kind:
        try:
            return int(raw)
        except ValueError as exc:
            raise ValueError(f"MMEMBED_{name.upper()} must be an integer, got {raw!r}") from exc
    return raw
