from __future__ import annotations

import subprocess
import sys

import pytest

from mmembed.config import Settings
from mmembed.embedders import EMBEDDERS
from mmembed.hub import WeightsNotAvailableError, resolve_model_dir, weights_available
from mmembed.registry import BackendInfo, Registry, UnknownBackendError
from mmembed.rerankers import RERANKERS


class Counter:
    made = 0

    def __init__(self, info: BackendInfo, size: int = 1) -> None:
        Counter.made += 1
        self.info, self.size = info, size


def _registry() -> Registry[Counter]:
    registry: Registry[Counter] = Registry("widget")
    registry.register(BackendInfo(name="w", factory=f"{__name__}:Counter", description="a widget"))
    return registry


def test_get_builds_once_per_options():
    registry = _registry()
    Counter.made = 0
    first = registry.get("w", size=2)
    assert registry.get("w", size=2) is first
    assert registry.get("w", size=3) is not first
    assert Counter.made == 2
    assert first.info.name == "w" and first.size == 2


def test_unknown_name_lists_known_names():
    with pytest.raises(UnknownBackendError, match=r"unknown widget 'nope'; known: w"):
        _registry().get("nope")


def test_duplicate_registration_is_an_error():
    registry = _registry()
    with pytest.raises(ValueError, match="registered twice"):
        registry.register(BackendInfo(name="w", factory="x:y", description=""))


def test_builtin_registries_name_the_planned_backends():
    assert {"clip-b32", "mmembed-mini", "gme-2b", "mm-embed"} <= set(EMBEDDERS.names())
    assert {"smolvlm-256m", "qwen2-vl-2b", "llava-next-7b"} <= set(RERANKERS.names())
    assert EMBEDDERS.info("mm-embed").license == "CC-BY-NC-4.0"


def test_unavailable_reason_offline_and_gpu():
    # Tests run with HF_HUB_OFFLINE=1 and an empty HF cache (conftest): hub models are "not downloaded".
    assert EMBEDDERS.unavailable_reason("clip-b32") == "weights not downloaded (offline)"
    assert EMBEDDERS.unavailable_reason("mm-embed", device="cpu") == "needs a GPU"
    assert EMBEDDERS.unavailable_reason("mmembed-mini") is None  # ships with the project


def test_resolve_model_dir_offline_names_the_prefetch_command():
    with pytest.raises(WeightsNotAvailableError, match=r"python -m mmembed prefetch --embedder clip-b32"):
        resolve_model_dir("someone/not-cached-model", backend="clip-b32")
    with pytest.raises(WeightsNotAvailableError, match=r"python -m mmembed prefetch --reranker smolvlm-256m"):
        resolve_model_dir("someone/not-cached-vlm", backend="smolvlm-256m", kind="reranker")


def test_local_directory_counts_as_available(tmp_path):
    assert weights_available(str(tmp_path))
    assert resolve_model_dir(str(tmp_path)) == tmp_path


def test_settings_env_and_overrides(tmp_path):
    env = {"MMEMBED_EMBEDDER": "siglip-b16", "MMEMBED_TOP_K": "7", "MMEMBED_CACHE_DIR": str(tmp_path)}
    settings = Settings.from_env(env, top_k=None, reranker="qwen2-vl-2b")
    assert settings.embedder == "siglip-b16"
    assert settings.top_k == 7
    assert settings.cache_dir == tmp_path
    assert settings.reranker == "qwen2-vl-2b"


def test_settings_bad_integer_is_explained():
    with pytest.raises(ValueError, match="MMEMBED_TOP_K must be an integer, got 'ten'"):
        Settings.from_env({"MMEMBED_TOP_K": "ten"})


def test_import_mmembed_stays_light():
    code = (
        "import sys, mmembed, mmembed.embedders, mmembed.rerankers, mmembed.cli;"
        "heavy = [m for m in ('torch', 'transformers', 'faiss', 'gradio') if m in sys.modules];"
        "print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_register_instance_serves_a_built_object_whatever_the_options():
    registry: Registry[Counter] = Registry("widget")
    built = Counter(BackendInfo("fake", "x:y", ""), size=7)
    registry.register_instance("fake", built, "a fake widget")
    assert registry.get("fake") is built and registry.get("fake", device="cpu") is built
    assert registry.info("fake").description == "a fake widget"
    assert registry.unavailable_reason("fake") is None and registry.names() == ["fake"]
    with pytest.raises(ValueError, match="widget 'fake' is registered twice"):
        registry.register_instance("fake", built)
