import pytest
from fakes import KeywordEmbedder

from mmembed.train.mining import mine_from_vectors, mine_with_embedder, summarize
from mmembed.types import Item, Modality, Query, ValidationError


def _toy_pool():
    # With text_bias=1 the text query "cat" scores: t_cat 1.0, t_catdog .816, i_cat .707 (the positive),
    # i_catdog .5, t_car .316, i_dog 0, i_car 0 (tie broken by pool order)
    return [
        Item("i_dog", image="dog.png"),
        Item("t_car", text="car car"),
        Item("i_cat", image="cat.png"),
        Item("t_catdog", text="cat dog"),
        Item("i_car", image="car.png"),
        Item("t_cat", text="cat"),
        Item("i_catdog", image="cat_dog.png"),
    ]


def test_mining_gives_exact_wrong_modality_and_low_ranked_sets():
    embedder = KeywordEmbedder(["cat", "dog", "car"], text_bias=1.0)
    query = Query(text="cat", target=Modality.IMAGE)
    [mined] = mine_with_embedder(embedder, _toy_pool(), [query], [["i_cat"]], top_n=6, threshold=4)
    # ranks 1, 2, 5 are texts (C1); rank 3 is the positive; rank 4 is an image within the threshold;
    # rank 6 is an image beyond it (C2); i_car (rank 7) is outside the top-6
    assert mined.wrong_modality == ("t_cat", "t_catdog", "t_car")
    assert mined.ranked_low == ("i_dog",)
    assert mined.all == ("t_cat", "t_catdog", "t_car", "i_dog")


def test_positives_are_never_negatives_and_text_targets_flip_the_sets():
    embedder = KeywordEmbedder(["cat", "dog", "car"], text_bias=1.0)
    query = Query(text="cat", target=Modality.TEXT)
    [mined] = mine_with_embedder(embedder, _toy_pool(), [query], [["t_cat", "t_catdog"]], top_n=7, threshold=4)
    assert mined.wrong_modality == ("i_cat", "i_catdog", "i_dog", "i_car")
    assert mined.ranked_low == ("t_car",)  # rank 5 > threshold 4, right modality
    vectors = embedder.embed_items(_toy_pool())
    [again] = mine_from_vectors(embedder.embed_query(query)[None], vectors, [i.id for i in _toy_pool()],
                                [i.modality for i in _toy_pool()], [Modality.TEXT], [["t_cat", "t_catdog"]],
                                top_n=7, threshold=4)
    assert again == mined


def test_summary_counts_and_bad_parameters():
    embedder = KeywordEmbedder(["cat", "dog", "car"], text_bias=1.0)
    queries = [Query(text="cat", target=Modality.IMAGE), Query(text="cat", target=Modality.TEXT)]
    mined = mine_with_embedder(embedder, _toy_pool(), queries, [["i_cat"], ["t_cat", "t_catdog"]], top_n=6,
                               threshold=4)
    assert summarize(mined) == {"queries": 2, "c1_wrong_modality": 6, "c2_ranked_low": 2,
                                "queries_with_negatives": 2, "c1_per_query": 3.0, "c2_per_query": 1.0}
    with pytest.raises(ValidationError, match="target modality"):
        mine_with_embedder(embedder, _toy_pool(), [Query(text="cat")], [["i_cat"]])
    with pytest.raises(ValidationError, match="must be below top_n"):
        mine_with_embedder(embedder, _toy_pool(), queries[:1], [["i_cat"]], top_n=5, threshold=5)
