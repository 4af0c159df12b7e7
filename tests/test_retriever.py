"""Retriever orchestration: natural vs filtered mode, target handling, k, and the offline fallback."""

from __future__ import annotations

import pytest
from fakes import KeywordEmbedder
from retrieval_helpers import VOCAB, write_corpus

from mmembed.config import Settings
from mmembed.corpus import load_mbeir_jsonl
from mmembed.embedders import EMBEDDERS
from mmembed.embedders.base import QueryInfo
from mmembed.hub import WeightsNotAvailableError
from mmembed.registry import BackendUnavailableError
from mmembed.retriever import Retriever, load_embedder_with_fallback
from mmembed.types import Modality, Query, ValidationError


@pytest.fixture
def corpus(tmp_path):
    return load_mbeir_jsonl(write_corpus(tmp_path / "corpus"))


@pytest.fixture
def biased_retriever(corpus, tmp_path):
    # text_bias makes every text-bearing item closer to a text query: modality bias on demand.
    return Retriever(corpus, KeywordEmbedder(VOCAB, text_bias=0.8), cache_dir=tmp_path / "cache")


def test_natural_mode_shows_bias_and_filtered_mode_removes_it(biased_retriever):
    query = Query(text="cat", target="image")
    natural = biased_retriever.search(query, k=3)
    # The text-biased model ranks the cat passage and the captioned cat above the plain cat image.
    assert [hit.item.id for hit in natural.hits] == ["t-cat", "it-cat", "i-cat"]
    assert [hit.rank for hit in natural.hits] == [1, 2, 3]
    assert natural.target is Modality.IMAGE and natural.mode == "natural"
    filtered = biased_retriever.search(query, k=3, mode="filtered")
    assert [hit.item.modality for hit in filtered.hits] == [Modality.IMAGE] * 3
    assert filtered.hits[0].item.id == "i-cat" and {h.item.id for h in filtered.hits[1:]} == {"i-dog", "i-violin"}
    # Same score as in natural mode (1 / sqrt(1 + 0.8^2)): filtering restricts, it does not re-score.
    assert filtered.hits[0].score == pytest.approx(natural.hits[2].score) == pytest.approx(1 / 1.64**0.5)
    assert [hit.rank for hit in filtered.hits] == [1, 2, 3]


def test_without_bias_the_image_query_finds_images_of_the_same_thing(corpus, tmp_path):
    retriever = Retriever(corpus, KeywordEmbedder(VOCAB), cache_dir=tmp_path / "cache")
    result = retriever.search(Query(image=tmp_path / "corpus/images/dog.png"), k=2, target="text", mode="filtered")
    assert [hit.item.id for hit in result.hits] == ["t-dog", "t-cat"]
    assert [round(hit.score, 5) for hit in result.hits] == [1.0, 0.0]


def test_k_beyond_pool_and_filtered_without_target(biased_retriever):
    assert len(biased_retriever.search(Query(text="cat"), k=50).hits) == 8
    assert [h.item.id for h in biased_retriever.search(Query(text="cat"), k=50, target="image,text",
                                                       mode="filtered").hits] == ["it-cat", "it-apple"]
    with pytest.raises(ValidationError, match="filtered mode needs a target modality"):
        biased_retriever.search(Query(text="cat"), mode="filtered")
    with pytest.raises(ValidationError, match="unknown mode 'fuzzy'"):
        biased_retriever.search(Query(text="cat"), mode="fuzzy")
    with pytest.raises(ValidationError, match="k must be a positive integer, got 0"):
        biased_retriever.search(Query(text="cat"), k=0)


class InstructedEmbedder(KeywordEmbedder):
    """Records the target each query arrives with, and names an instruction for it, like MM-Embed."""

    def __init__(self) -> None:
        super().__init__(VOCAB, name="instructed")
        self.targets: list[Modality | None] = []

    def embed_query(self, query):
        self.targets.append(query.target)
        return super().embed_query(query)

    def describe_query(self, query):
        target = query.target.label if query.target else "anything"
        return QueryInfo(instruction=f"Retrieve {target} for the query.", notes=("text truncated",))


def test_target_reaches_the_embedder_and_the_result_carries_its_instruction(corpus, tmp_path):
    embedder = InstructedEmbedder()
    retriever = Retriever(corpus, embedder, cache_dir=tmp_path)
    result = retriever.search(Query(text="apple", target="text"), k=2, target="image+text")
    assert embedder.targets == [Modality.IMAGE_TEXT]  # the explicit target wins over the query's own
    assert result.instruction == "Retrieve image+text for the query." and result.notes == ("text truncated",)
    assert result.query.target is Modality.IMAGE_TEXT and result.target is Modality.IMAGE_TEXT
    assert [h.item.id for h in result.hits] == ["it-apple", "t-apple"]  # natural: other modalities still rank
    default = retriever.search(Query(text="apple", target="text"), k=1)
    assert embedder.targets[-1] is Modality.TEXT and default.instruction == "Retrieve text for the query."


def test_index_is_built_once_and_progress_is_reported(corpus, tmp_path):
    embedder = KeywordEmbedder(VOCAB)
    retriever = Retriever(corpus, embedder, cache_dir=tmp_path)
    seen = []
    retriever.ensure_index(lambda done, total, what: seen.append((what, done, total)))
    retriever.ensure_index()
    retriever.search(Query(text="dog"))
    assert embedder.calls["items"] == 1
    assert ("embedding corpus", 8, 8) in seen and seen[-1] == ("building index", 1, 1)
    hits = retriever.search_by_vector(embedder.embed_query(Query(text="boat rocket dog")), 2, target=Modality.IMAGE,
                                      mode="filtered")
    assert [h.item.id for h in hits] == ["i-dog", hits[1].item.id] and hits[1].item.modality is Modality.IMAGE


class _Offline(KeywordEmbedder):
    def embed_query(self, query):
        raise WeightsNotAvailableError("model 'x/y' is not in the local cache; download it once with: "
                                       "python -m mmembed prefetch --embedder big")


def test_fallback_embedder_when_the_wanted_one_cannot_load(monkeypatch):
    mini = KeywordEmbedder(VOCAB, name="mmembed-mini")

    def get(name, **options):
        if name == "big":
            return _Offline(VOCAB, name="big")
        if name == "gpu-only":
            raise BackendUnavailableError("'gpu-only' needs a GPU")
        if name == "mmembed-mini":
            return mini
        return EMBEDDERS.info(name)

    monkeypatch.setattr(EMBEDDERS, "get", get)
    settings = Settings.from_env(embedder="big", fallback_embedder="mmembed-mini")
    with pytest.warns(UserWarning, match="'big' is not available offline"):
        embedder, note = load_embedder_with_fallback(settings)
    assert embedder is mini and "python -m mmembed prefetch --embedder big" in note
    with pytest.warns(UserWarning, match="'gpu-only' cannot run here"):
        assert load_embedder_with_fallback(settings, "gpu-only")[0] is mini
    assert load_embedder_with_fallback(settings, "mmembed-mini") == (mini, None)
    with pytest.raises(WeightsNotAvailableError, match="prefetch --embedder big"):
        load_embedder_with_fallback(Settings.from_env(embedder="big", fallback_embedder="big"))
    with pytest.raises(Exception, match="unknown embedder 'nope'"):  # a typo is not silently replaced
        load_embedder_with_fallback(settings, "nope")


def test_the_dtype_setting_reaches_backends_that_take_one():
    from mmembed.config import Settings
    from mmembed.retriever import embedder_options

    assert embedder_options(Settings(device="cpu"), "clip-b32") == {"device": "cpu"}  # auto: the backend decides
    assert embedder_options(Settings(device="cpu", dtype="int8"), "clip-b32") == {"device": "cpu", "dtype": "int8"}
    # the shipped model has one float32 path and no dtype option: the setting must not break it
    assert embedder_options(Settings(device="cpu", dtype="int8"), "mmembed-mini") == {"device": "cpu"}
