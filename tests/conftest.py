"""Shared test setup: every test runs offline, with caches in a temp dir, on the CPU."""

from __future__ import annotations

import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# Tests must never reach the network, whatever machine they run on.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# The developer's own hub cache, remembered for the `slow` real-weight tests (tests/test_real_weights.py),
# which read snapshots from it as local folders.
os.environ.setdefault("MMEMBED_TEST_REAL_HUB_CACHE", os.environ.get("HF_HUB_CACHE") or str(
    Path(os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface") / "hub"))
os.environ.pop("HF_HUB_CACHE", None)
# An empty Hugging Face cache: whatever the developer has downloaded must not change test outcomes.
os.environ["HF_HOME"] = tempfile.mkdtemp(prefix="mmembed-test-hf-")
atexit.register(shutil.rmtree, os.environ["HF_HOME"], ignore_errors=True)

sys.path.insert(0, str(Path(__file__).resolve().parent))  # so tests can `from fakes import ...`


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own mmembed cache dir, so no test sees another's index files."""
    cache = tmp_path_factory.mktemp("mmembed-cache")
    monkeypatch.setenv("MMEMBED_CACHE_DIR", str(cache))
    return cache
