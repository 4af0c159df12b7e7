"""One Settings dataclass: defaults, overridden by MMEMBED_* environment variables, overridden by CLI flags."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import get_args, get_type_hints

PACKAGE_DIR = Path(__file__).resolve().parent
PROJECT_DIR = PACKAGE_DIR.parent


def _data_dir(name: str) -> Path:
    """A top-level data folder of the repository (assets/, sample_corpus/). An installed wheel carries it
    inside the package (mmembed/_data/<name>, see pyproject.toml); a checkout has it beside the package."""
    installed = PACKAGE_DIR / "_data" / name
    return installed if installed.is_dir() else PROJECT_DIR / name


SAMPLE_CORPUS_DIR = _data_dir("sample_corpus")
ASSETS_DIR = _data_dir("assets")


CACHE_DIR_VAR = "MMEMBED_CACHE_DIR"


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where mmembed keeps everything it caches (indexes, embeddings, reranker image features):
    $MMEMBED_CACHE_DIR, else the user cache dir. The one place that reads the variable."""
    env = os.environ if environ is None else environ
    if raw := env.get(CACHE_DIR_VAR, "").strip():
        return Path(raw).expanduser()
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
    # The first-stage embedder's: auto | float32 | float16 | bfloat16, or int8 (CLIP family, CPU).
    dtype: str = "auto"
    # The MLLM reranker's: auto | float32 | float16 | bfloat16, or int8 (dynamic quantisation of its language
    # model on CPU; see README for its measured speed and agreement with float32).
    rerank_dtype: str = "auto"
    index_type: str = "flat"  # flat | hnsw | ivfpq
    # The first-stage embedder's batch size when embedding the corpus; None: the backend's own default
    # (64 for mmembed-mini, 32 for the CLIP family, 4 for the 2B+ MLLM embedders).
    batch_size: int | None = None
    top_k: int = 10
    rerank_top_k: int = 10

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Defaults, then MMEMBED_* variables, then explicit overrides that are not None."""
        env = os.environ if environ is None else environ
        types = get_type_hints(cls)
        values: dict[str, object] = {"cache_dir": default_cache_dir(env)}
        for f in fields(cls):
            raw = env.get(f"MMEMBED_{f.name.upper()}")
            if f.name == "cache_dir" or raw is None or raw == "":
                continue
            values[f.name] = _convert(f.name, types[f.name], raw)
        values.update({k: v for k, v in overrides.items() if v is not None})
        return replace(cls(), **values)


def _convert(name: str, kind: object, raw: str) -> object:
    """`raw` as the field's declared type (`int | None` converts like int)."""
    options = [t for t in get_args(kind) if t is not type(None)] or [kind]
    if Path in options:
        return Path(raw).expanduser()
    if int in options:
        try:
            return int(raw)
        except ValueError as exc:
            raise ValueError(f"MMEMBED_{name.upper()} must be an integer, got {raw!r}") from exc
    return raw
