"""MMEMBED_CACHE_DIR is read in one place (config.default_cache_dir) and everything mmembed caches
goes under it: indexes (also for Retriever(cache_dir=None), the README's library example) and the
reranker's image features."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmembed.config import Settings, default_cache_dir

ROOT = Path(__file__).resolve().parent.parent


def test_the_variable_wins_everywhere(tmp_path, monkeypatch):
    monkeypatch.setenv("MMEMBED_CACHE_DIR", str(tmp_path / "c"))
    assert default_cache_dir() == tmp_path / "c"
    assert Settings().cache_dir == tmp_path / "c"
    assert Settings.from_env().cache_dir == tmp_path / "c"
    assert Settings.from_env({"MMEMBED_CACHE_DIR": "~/x"}).cache_dir == Path("~/x").expanduser()
    assert Settings.from_env({}, cache_dir=tmp_path / "flag").cache_dir == tmp_path / "flag"


def test_reranker_image_features_default_under_the_cache_dir(tmp_path, monkeypatch):
    from mmembed.rerankers.mllm import MLLMReranker

    monkeypatch.setenv("MMEMBED_CACHE_DIR", str(tmp_path))
    assert MLLMReranker(model_id="someone/vlm")._feature_dir() == tmp_path / "rerank-image-features"
    assert MLLMReranker(model_id="someone/vlm", feature_cache_dir=None)._feature_dir() is None


def test_without_the_variable_the_user_cache_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("MMEMBED_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "xdg" / "mmembed"


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


def test_nothing_is_written_outside_the_cache_dir(tmp_path):
    """A library search with the default cache dir and a CLI search with the shipped model, in a process
    whose home and user cache are empty folders: afterwards only MMEMBED_CACHE_DIR holds new files."""
    pytest.importorskip("faiss")
    home, cache, work = tmp_path / "home", tmp_path / "cache", tmp_path / "work"
    for folder in (home, cache, work):
        folder.mkdir()
    env = {**os.environ, "HOME": str(home), "XDG_CACHE_HOME": str(home / ".cache"), "MMEMBED_CACHE_DIR": str(cache),
           "PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "tests")])}
    library = ("from pathlib import Path; from fakes import KeywordEmbedder; "
               "from retrieval_helpers import VOCAB, write_corpus; from mmembed.corpus import load_corpus; "
               "from mmembed.retriever import Retriever; from mmembed.types import Query; "
               "r = Retriever(load_corpus(write_corpus(Path('corpus'))), KeywordEmbedder(VOCAB)); "
               "print(r.search(Query(text='cat'), k=1).hits[0].item.id)")
    out = subprocess.run([sys.executable, "-c", library], cwd=work, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["t-cat"]
    cli = subprocess.run([sys.executable, "-m", "mmembed", "search", "a red apple", "--embedder", "mmembed-mini",
                          "--corpus", str(work / "corpus"), "--json"], cwd=work, env=env, capture_output=True,
                         text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr
    assert _files(home) == []
    assert [f for f in _files(cache) if f.startswith("indexes/")], _files(cache)
    assert {f.split("/")[0] for f in _files(work)} == {"corpus"}


def test_batch_size_setting_reaches_the_embedder():
    from mmembed.retriever import embedder_options

    assert "batch_size" not in embedder_options(Settings.from_env({}), "clip-b32")  # the backend's own default
    settings = Settings.from_env({"MMEMBED_BATCH_SIZE": "5", "MMEMBED_DEVICE": "cpu"})
    assert settings.batch_size == 5
    assert embedder_options(settings, "clip-b32") == {"device": "cpu", "batch_size": 5}
    assert embedder_options(settings, "mmembed-mini")["batch_size"] == 5
