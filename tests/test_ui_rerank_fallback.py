"""Offline, the page reranks with the shipped cross-encoder when no MLLM reranker's weights can be had, and
says so; the decision is the library's (mmembed.rerankers.fallback), the page only shows the note."""

from __future__ import annotations

from fakes import KeywordEmbedder
from ui_helpers import VOCAB, TargetAwareReranker, registry

from mmembed.config import Settings
from mmembed.corpus import load_mbeir_jsonl
from mmembed.registry import BackendInfo
from mmembed.ui import handlers as h
from mmembed.ui.events import DemoEvents
from mmembed.ui.state import DemoState


class ShippedFake(TargetAwareReranker):
    """Stands in for the shipped cross-encoder (a keyword reranker that prefers the target modality)."""

    name = "mmembed-mini-rerank"


def offline_state(tmp_path, reranker: str = "smolvlm-256m", fallback: str = "mmembed-mini-rerank") -> DemoState:
    from retrieval_helpers import write_corpus

    corpus_path = write_corpus(tmp_path / "corpus")
    settings = Settings(corpus=corpus_path, queries=tmp_path / "none.jsonl", cache_dir=tmp_path / "cache",
                        embedder="keyword", reranker=reranker, fallback_embedder="keyword",
                        fallback_reranker=fallback, rerank_top_k=5, device="cpu")
    rerankers = registry("reranker", **{"mmembed-mini-rerank": ShippedFake()})
    # an MLLM reranker whose weights are not in the (empty, offline) hub cache
    rerankers.register(BackendInfo(name="smolvlm-256m", factory="mmembed.rerankers.mllm:MLLMReranker",
                                   description="an MLLM", hub_id="HuggingFaceTB/SmolVLM-256M-Instruct"))
    return DemoState(settings, corpus=load_mbeir_jsonl(corpus_path),
                     embedders=registry("embedder", keyword=KeywordEmbedder(VOCAB, text_bias=0.8)),
                     rerankers=rerankers)


def test_page_starts_with_the_shipped_reranker_and_a_note(tmp_path):
    state = offline_state(tmp_path)
    assert state.default_reranker() == "mmembed-mini-rerank"
    note = state.reranker_note("mmembed-mini-rerank")
    assert note.startswith("'smolvlm-256m' is unavailable here (weights not downloaded (offline)); reranked by "
                           "'mmembed-mini-rerank' instead")
    assert "not an MLLM" in note
    assert state.reranker_note("smolvlm-256m") is None  # a user's own pick gets no fallback note
    status = DemoEvents(state, scratch=None).model_status("keyword", "mmembed-mini-rerank")
    assert "reranked by &#x27;mmembed-mini-rerank&#x27; instead" in status and "not an MLLM" in status


def test_reranked_column_is_filled_by_the_fallback_with_movement(tmp_path):
    state = offline_state(tmp_path)
    report = h.search(state, "cat", None, "image", "natural", 3, True, "keyword", state.default_reranker())
    assert report["reranked"]["status"] == "done" and report["reranked"]["reranker"] == "mmembed-mini-rerank"
    first = [hit["id"] for hit in report["first_stage"]["hits"]]
    reranked = [hit["id"] for hit in report["reranked"]["hits"]]
    assert first[0] != "i-cat" and reranked[0] == "i-cat"  # the image asked for moves to the top
    assert any(hit["movement"] != 0 for hit in report["reranked"]["hits"])


def test_no_fallback_when_the_configured_reranker_can_run_or_fallback_is_off(tmp_path):
    assert offline_state(tmp_path / "a", reranker="mmembed-mini-rerank").default_reranker() == "mmembed-mini-rerank"
    off = offline_state(tmp_path / "b", fallback="")
    assert off.default_reranker() == "smolvlm-256m" and off.reranker_note("smolvlm-256m") is None
