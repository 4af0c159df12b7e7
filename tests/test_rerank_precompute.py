"""Reranker image features computed ahead of time (issue 13.1) and the int8 reranker (issue 13.3), on tiny real
Idefics3 / Qwen2-VL checkpoints built in fixtures and loaded from disk."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from tiny_vlms import build_tiny_idefics3, build_tiny_qwen2_vl  # noqa: E402

from mmembed.config import Settings  # noqa: E402
from mmembed.registry import BackendInfo  # noqa: E402
from mmembed.rerankers import RERANKERS, load_reranker  # noqa: E402
from mmembed.rerankers.mllm import MLLMReranker  # noqa: E402
from mmembed.rerankers.precompute import DESCRIPTION, BackgroundPrecompute, precompute_corpus_features  # noqa: E402
from mmembed.types import Item, MMEmbedError, Query  # noqa: E402


@pytest.fixture(scope="module")
def idefics3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_idefics3(tmp_path_factory.mktemp("tiny-idefics3"))


@pytest.fixture(scope="module")
def corpus_items(tmp_path_factory: pytest.TempPathFactory) -> list[Item]:
    from PIL import Image

    folder = tmp_path_factory.mktemp("precompute-images")
    rng = np.random.default_rng(5)
    items = [Item("t0", text="a text-only passage")]
    for i in range(5):
        path = folder / f"img{i}.png"
        Image.fromarray((rng.random((30 + 4 * i, 40, 3)) * 255).astype("uint8")).save(path)
        items.append(Item(f"i{i}", image=str(path)) if i % 2 else Item(f"it{i}", text=f"caption {i}", image=str(path)))
    return items


def _fresh(model_dir: Path, cache: Path, **options) -> MLLMReranker:
    return MLLMReranker(model_id=str(model_dir), device="cpu", feature_cache_dir=cache, **options)


def test_precompute_counts_progress_and_resumes(idefics3_dir, corpus_items, tmp_path) -> None:
    calls: list[tuple[int, int, str]] = []
    reranker = _fresh(idefics3_dir, tmp_path)
    summary = precompute_corpus_features(reranker, corpus_items, progress=lambda *a: calls.append(a))
    assert (summary.supported, summary.images, summary.cached, summary.encoded) == (True, 5, 0, 5)
    assert calls[0] == (0, 5, DESCRIPTION) and calls[-1] == (5, 5, DESCRIPTION)
    assert [done for done, _, _ in calls] == sorted(done for done, _, _ in calls)  # never goes backwards
    assert len(list(reranker.feature_cache.directory.glob("*.safetensors"))) == 5
    # A new process (fresh reranker, same cache dir) finds everything on disk: nothing encoded again ...
    again = precompute_corpus_features(_fresh(idefics3_dir, tmp_path), corpus_items)
    assert (again.cached, again.encoded) == (5, 0)
    # ... and the first query after it encodes no corpus image.
    scorer = _fresh(idefics3_dir, tmp_path)
    scorer.score(Query(text="caption"), corpus_items)
    assert scorer.feature_cache.misses == 0


def test_precompute_stops_and_a_later_run_finishes_the_rest(idefics3_dir, corpus_items, tmp_path) -> None:
    stop = threading.Event()

    def progress(done: int, total: int, description: str) -> None:
        if done >= 2:
            stop.set()

    first = precompute_corpus_features(_fresh(idefics3_dir, tmp_path), corpus_items, progress=progress,
                                       background=True, stop=stop)
    assert first.stopped and first.encoded == 2
    rest = precompute_corpus_features(_fresh(idefics3_dir, tmp_path), corpus_items)
    assert not rest.stopped and (rest.cached, rest.encoded) == (2, 3)


def test_background_precompute_waits_while_a_query_is_scoring(idefics3_dir, corpus_items, tmp_path) -> None:
    reranker = _fresh(idefics3_dir, tmp_path)
    reranker._load()
    marker = reranker._foreground_query()
    marker.__enter__()  # a visitor's query is being scored
    worker = threading.Thread(target=precompute_corpus_features, args=(reranker, corpus_items),
                              kwargs={"background": True})
    worker.start()
    time.sleep(1.0)
    assert reranker.feature_cache.misses == 0  # nothing encoded while the query holds the model
    marker.__exit__(None, None, None)
    worker.join(timeout=60)
    assert not worker.is_alive() and reranker.feature_cache.misses == 5


def test_background_job_status_line(idefics3_dir, corpus_items, tmp_path) -> None:
    reranker = _fresh(idefics3_dir, tmp_path)
    job = BackgroundPrecompute(lambda progress: (reranker, corpus_items))
    assert job.status() == ""
    job._progress(2, 5, DESCRIPTION)
    job.state = "running"
    assert job.status() == "Reranker image features: 2/5 corpus images encoded (in the background)…"
    job.state = "idle"
    assert job.start().wait(timeout=60)
    assert job.state == "done" and job.summary is not None and job.summary.encoded == 5
    assert job.status() == "Reranker image features ready for all 5 corpus images."


def test_background_job_failure_is_reported_not_raised() -> None:
    def load(progress):
        progress(0, 1, "loading reranker smolvlm-256m")
        raise MMEmbedError("weights not downloaded")

    job = BackgroundPrecompute(load).start()
    assert job.wait(timeout=10) and job.state == "failed"
    assert job.status() == ("Reranker warm-up failed (MMEmbedError: weights not downloaded); corpus images are "
                            "encoded on first use instead.")


def test_a_reranker_without_an_image_cache_is_skipped(corpus_items) -> None:
    class TextOnly:
        name = "text-only"

        def score(self, query, items, *, progress=None):
            return [0.5] * len(items)

    summary = precompute_corpus_features(TextOnly(), corpus_items)
    assert (summary.supported, summary.images, summary.encoded) == (False, 5, 0)


def test_index_build_precomputes_the_named_reranker(idefics3_dir, tmp_path, monkeypatch, capsys) -> None:
    from fakes import KeywordEmbedder
    from retrieval_helpers import VOCAB, write_corpus

    from mmembed.cli import main
    from mmembed.embedders import EMBEDDERS

    corpus = write_corpus(tmp_path / "corpus")
    monkeypatch.setattr(EMBEDDERS, "get", lambda name, **options: KeywordEmbedder(VOCAB, name="mmembed-mini"))
    monkeypatch.setitem(RERANKERS._infos, "tiny-vlm", BackendInfo(
        name="tiny-vlm", factory="mmembed.rerankers.mllm:MLLMReranker", description="test", hub_id=str(idefics3_dir)))
    monkeypatch.setenv("MMEMBED_CORPUS", str(corpus))
    monkeypatch.setenv("MMEMBED_RERANKER", "tiny-vlm")
    monkeypatch.setenv("MMEMBED_DEVICE", "cpu")
    assert main(["index", "build", "--embedder", "mmembed-mini", "--reranker", "--json"]) == 0
    features = json.loads(capsys.readouterr().out)["reranker_features"]
    # 5 image items, but write_corpus draws every png in the same colour: one distinct image, encoded once.
    assert features == {"reranker": "tiny-vlm", "supported": True, "images": 5, "already_cached": 0, "encoded": 1,
                        "seconds": features["seconds"], "stopped": False}
    # The app creates the reranker through the same function and finds the features on disk.
    app_reranker = load_reranker("tiny-vlm", Settings.from_env())
    assert precompute_corpus_features(app_reranker, [Item("x", image=str(corpus.parent / "images/cat.png"))]
                                      ).encoded == 0
    assert main(["index", "build", "--embedder", "mmembed-mini", "--reranker", "tiny-vlm"]) == 0
    assert ("reranker tiny-vlm: of 5 corpus images, 5 were cached already; 0 distinct images encoded"
            in capsys.readouterr().out)


def test_index_build_refuses_an_unknown_reranker_before_indexing(tmp_path, monkeypatch, capsys) -> None:
    from mmembed.cli import main

    assert main(["index", "build", "--reranker", "no-such-reranker"]) == 1
    err = capsys.readouterr().err
    assert "unknown reranker 'no-such-reranker'" in err and "smolvlm-256m" in err


@pytest.mark.parametrize("build", [build_tiny_idefics3, build_tiny_qwen2_vl], ids=["idefics3", "qwen2_vl"])
def test_int8_quantises_the_language_model_and_agrees_with_float32(build, corpus_items, tmp_path) -> None:
    model_dir = build(tmp_path / "model")
    fp32 = _fresh(model_dir, tmp_path / "cache")
    int8 = _fresh(model_dir, tmp_path / "cache", dtype="int8")
    def quantised(module) -> int:
        return sum("quantized" in type(m).__module__ for m in module.modules())

    model = int8._load().model
    in_language_model = quantised(int8._language_model())
    assert in_language_model >= 2 * 7  # q, k, v, o, gate, up, down in each of the 2 decoder layers
    vision = getattr(model.model, "vision_model", None) or model.model.visual
    assert quantised(vision) >= 2 * 2  # the vision encoder's attention and MLP projections too
    assert not any("quantized" in type(m).__module__ for m in [model.lm_head])  # the LM head stays float32
    assert quantised(fp32._load().model) == 0
    # int8 image features differ from float32's: never read from the other's feature cache.
    assert int8.fingerprint != fp32.fingerprint and int8.fingerprint.endswith("|int8-dynamic")
    query = Query(text="caption 2")
    a, b = np.asarray(fp32.score(query, corpus_items)), np.asarray(int8.score(query, corpus_items))
    assert np.ptp(a) > 1e-3
    # int8 rounding moves scores a little (these tiny models have widened, extreme weights), not the winner.
    assert np.max(np.abs(a - b)) < 0.1 and np.argmax(a) == np.argmax(b)
    # Activations are quantised per call with one scale per tensor, so the batched fast path and the per-pair
    # naive path no longer agree to 1e-4 under int8, only to the tolerance of float32 vs int8.
    assert np.max(np.abs(np.asarray(int8.score_naive(query, corpus_items)) - a)) < 0.1


def test_int8_refuses_a_gpu_and_unknown_dtypes_are_named(idefics3_dir, tmp_path) -> None:
    with pytest.raises(MMEmbedError, match="unknown reranker dtype 'int4'.*int8"):
        _fresh(idefics3_dir, tmp_path, dtype="int4")
    gpu = MLLMReranker(model_id=str(idefics3_dir), device="cuda", dtype="int8", feature_cache_dir=tmp_path)
    with pytest.raises(MMEmbedError, match="runs on the CPU only"):
        gpu._load()


def test_rerank_dtype_setting_reaches_the_reranker(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("MMEMBED_RERANK_DTYPE", "int8")
    monkeypatch.setenv("MMEMBED_CACHE_DIR", str(tmp_path))
    reranker = load_reranker("smolvlm-256m", Settings.from_env(device="cpu"))
    assert reranker.dtype_option == "int8"
    assert reranker._feature_dir() == tmp_path / "rerank-image-features"
