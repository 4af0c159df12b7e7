"""`python -m mmembed prefetch`, with huggingface_hub.snapshot_download replaced: no network."""

from __future__ import annotations

import argparse
from pathlib import Path

import huggingface_hub
import pytest

from mmembed.cli import prefetch as prefetch_cli
from mmembed.hub import WeightsNotAvailableError
from mmembed.registry import UnknownBackendError
from mmembed.types import MMEmbedError


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    prefetch_cli.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["prefetch", *argv])


@pytest.fixture
def downloads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict]:
    """Record snapshot_download calls; each 'downloads' a 3 MB weights file into a fake snapshot dir."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("MMEMBED_EMBEDDER", raising=False)
    monkeypatch.delenv("MMEMBED_RERANKER", raising=False)
    calls: list[dict] = []

    def fake_snapshot_download(repo_id: str, **kwargs) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        snapshot = tmp_path / repo_id.replace("/", "--") / "snapshots" / "0123abcd"
        snapshot.mkdir(parents=True, exist_ok=True)
        (snapshot / "model.safetensors").write_bytes(b"\0" * (3 * 2**20))
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    return calls


def test_downloads_only_the_needed_files_and_says_where(downloads, capsys):
    assert prefetch_cli.run(_parse("--embedder", "clip-b32")) == 0
    assert downloads == [
        {"repo_id": "openai/clip-vit-base-patch32", "revision": None,
         "allow_patterns": ["*.json", "*.txt", "model.safetensors"]}
    ]
    out, err = capsys.readouterr()
    assert "clip-b32: downloading openai/clip-vit-base-patch32" in err
    assert out.strip().endswith("openai--clip-vit-base-patch32/snapshots/0123abcd (3.0 MB)")


def test_embedders_and_rerankers_in_order_without_duplicates(downloads):
    args = _parse("--embedder", "siglip-b16", "--reranker", "smolvlm-256m", "--embedder", "siglip-b16")
    assert prefetch_cli.run(args) == 0
    assert [call["repo_id"] for call in downloads] == [
        "google/siglip-base-patch16-224",
        "HuggingFaceTB/SmolVLM-256M-Instruct",
    ]
    assert downloads[0]["allow_patterns"] == ["*.json", "*.model", "model.safetensors"]
    assert "*.safetensors" in downloads[1]["allow_patterns"]
    assert not any(p.endswith(".onnx") or p == "*" for p in downloads[1]["allow_patterns"])


def test_all_defaults_fetches_the_default_embedder_and_reranker(downloads, monkeypatch):
    assert prefetch_cli.run(_parse("--all-defaults")) == 0
    assert [call["repo_id"] for call in downloads] == [
        "openai/clip-vit-base-patch32",
        "HuggingFaceTB/SmolVLM-256M-Instruct",
    ]
    downloads.clear()
    monkeypatch.setenv("MMEMBED_EMBEDDER", "siglip2-b16")
    prefetch_cli.run(_parse("--all-defaults"))
    assert downloads[0]["repo_id"] == "google/siglip2-base-patch16-224"


def test_shipped_model_has_nothing_to_download(downloads, capsys):
    assert prefetch_cli.run(_parse("--embedder", "mmembed-mini")) == 0
    assert downloads == []
    assert capsys.readouterr().out.strip() == "mmembed-mini: nothing to download (ships with mmembed)"


def test_unknown_name_fails_before_anything_is_downloaded(downloads):
    with pytest.raises(UnknownBackendError, match="unknown reranker 'nope'; known: smolvlm-256m"):
        prefetch_cli.run(_parse("--embedder", "clip-b32", "--reranker", "nope"))
    assert downloads == []


def test_offline_is_refused_with_a_clear_message(downloads, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsNotAvailableError, match="cannot download with HF_HUB_OFFLINE set; unset it"):
        prefetch_cli.run(_parse("--embedder", "clip-b32"))
    assert downloads == []
    assert capsys.readouterr().err == ""  # no "downloading ..." line before the refusal
    assert prefetch_cli.run(_parse("--embedder", "mmembed-mini")) == 0  # nothing to download: fine offline


def test_network_failure_becomes_one_line_naming_the_model(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def failing(repo_id: str, **kwargs) -> str:
        raise ConnectionError("Max retries exceeded with url: /api/models\nsecond line of noise")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", failing)
    with pytest.raises(WeightsNotAvailableError) as caught:
        prefetch_cli.run(_parse("--embedder", "clip-b32"))
    message = str(caught.value)
    assert message == (
        "could not download embedder 'clip-b32' (openai/clip-vit-base-patch32): "
        "Max retries exceeded with url: /api/models"
    )


def test_no_names_is_an_error_that_says_what_to_pass():
    with pytest.raises(MMEmbedError, match="nothing to prefetch: name --embedder NAME"):
        prefetch_cli.run(_parse())


def test_list_shows_every_backend_and_its_state(capsys):
    assert prefetch_cli.run(_parse("--list")) == 0
    lines = capsys.readouterr().out.splitlines()
    by_name = {line.split()[1]: line for line in lines}
    assert "openai/clip-vit-base-patch32" in by_name["clip-b32"] and by_name["clip-b32"].endswith("not downloaded")
    assert by_name["mmembed-mini"].endswith("ships with mmembed")
    assert by_name["mmembed-mini-rand"].startswith("embedder") and by_name["mmembed-mini-rand"].endswith(
        "Apache-2.0      ships with mmembed")
    assert by_name["smolvlm-256m"].startswith("reranker")
    assert "CC-BY-NC-4.0" in by_name["mm-embed"] and "Apache-2.0" in by_name["gme-2b"]


def test_importing_the_command_and_the_clip_backend_loads_nothing_heavy():
    import subprocess
    import sys

    code = (
        "import sys, mmembed.cli.prefetch, mmembed.embedders.clip; "
        "print(sorted(m for m in ('torch', 'transformers', 'faiss', 'huggingface_hub') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "[]"


def test_mllm_embedders_fetch_weights_tokenizer_and_processor_files_only(downloads, capsys):
    assert prefetch_cli.run(_parse("--embedder", "mm-embed", "--embedder", "gme-2b")) == 0
    assert [call["repo_id"] for call in downloads] == ["nvidia/MM-Embed", "Alibaba-NLP/gme-Qwen2-VL-2B-Instruct"]
    for call in downloads:
        patterns = call["allow_patterns"]
        # config + preprocessor + tokenizer json, safetensors shards; never the remote code or pickled weights
        assert {"*.json", "*.safetensors"} <= set(patterns)
        assert not any(p in ("*", "*.py", "*.bin", "*.pt") for p in patterns)
    assert "*.model" in downloads[0]["allow_patterns"]  # MM-Embed's SentencePiece tokenizer
    assert "*.txt" in downloads[1]["allow_patterns"]  # Qwen's merges.txt
    err = capsys.readouterr().err
    assert "mm-embed: downloading nvidia/MM-Embed (" in err and "licence CC-BY-NC-4.0" in err
