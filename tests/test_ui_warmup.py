"""The demo's background warm-up (issue 13.1): after start, the default pipeline and reranker load and the
corpus images are encoded for the reranker on a thread, with its progress on a line of the page."""

from __future__ import annotations

import threading
from dataclasses import replace

import pytest
from fakes import FakeReranker
from ui_helpers import make_state, registry

gr = pytest.importorskip("gradio")

from mmembed.rerankers.precompute import DESCRIPTION  # noqa: E402
from mmembed.ui import build_demo  # noqa: E402
from mmembed.ui.events import DemoEvents  # noqa: E402
from mmembed.ui.scratch import Scratch  # noqa: E402


class CachingReranker(FakeReranker):
    """A fake with an image-feature cache: precompute blocks on `release` after its first image."""

    caches_image_features = True

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict] = []
        self.release = threading.Event()
        self.started = threading.Event()

    def has_cached_features(self, item) -> bool:
        return False

    def precompute_image_features(self, items, *, progress=None, background=False, stop=None) -> int:
        self.calls.append({"ids": [item.id for item in items], "background": background})
        progress(1, len(items), "encoding images for reranking")
        self.started.set()
        self.release.wait(timeout=30)
        progress(len(items), len(items), "encoding images for reranking")
        return len(items)


def test_warmup_loads_the_pipeline_and_encodes_corpus_images_in_the_background(tmp_path):
    state = make_state(tmp_path)
    reranker = CachingReranker()
    state._rerankers_registry = registry("reranker", **{"fake-reranker": reranker})
    events = DemoEvents(state, Scratch(tmp_path / "scratch"))
    assert events.warmup_line()[0] == ""  # nothing started: no line
    job = state.start_warmup()
    assert reranker.started.wait(timeout=30)
    line, timer = events.warmup_line()
    images = [item.id for item in state.corpus.items if item.image is not None]
    assert f"Reranker image features: 1/{len(images)} corpus images encoded (in the background)" in line
    assert timer.active is True and state.warmup_running()
    assert "embedder:keyword" in state.loaded()  # the first query's index was loaded meanwhile
    reranker.release.set()
    assert job.wait(timeout=30) and job.state == "done"
    assert reranker.calls == [{"ids": images, "background": True}]
    assert job.summary is not None and (job.summary.images, job.summary.encoded) == (len(images), len(images))
    line, timer = events.warmup_line()
    assert line == "" and timer.active is False  # done: the line goes away, the polling stops
    assert state.start_warmup() is job  # once per server


def test_no_warmup_for_a_reranker_that_cannot_run(tmp_path):
    from mmembed.registry import BackendInfo, Registry

    state = make_state(tmp_path)
    gpu_only: Registry = Registry("reranker")
    gpu_only.register(BackendInfo(name="gpu-only", factory=lambda **_: CachingReranker(), description="test",
                                  needs_gpu=True))
    state._rerankers_registry = gpu_only
    state.settings = replace(state.settings, reranker="gpu-only", device="cpu")
    assert state.start_warmup() is None and state.warmup_status() == "" and not state.warmup_running()


def test_warmup_line_is_polled_outside_the_model_queue(tmp_path):
    demo = build_demo(make_state(tmp_path))
    deps = {dep["api_name"]: dep for dep in demo.config["dependencies"]}
    assert {"warmup", "warmup_on_load"} <= set(deps)
    fns = {fn.api_name: fn for fn in demo.fns.values()}
    assert fns["warmup"].concurrency_limit is None  # never waits behind a visitor's model call
    assert DESCRIPTION == "reranker image features"
