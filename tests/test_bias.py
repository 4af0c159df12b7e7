"""Modality-bias metrics on hand-made hit lists."""

from __future__ import annotations

import math

import pytest

from mmembed.bias import MIX_COLUMNS, modality_mix, wrong_modality_rate
from mmembed.types import Hit, Item, Modality

_FIELDS = {"text": {"text": "t"}, "image": {"image": "x.png"}, "image,text": {"text": "t", "image": "x.png"}}


def hits_of(*modalities: str) -> list[Hit]:
    return [Hit(Item(f"id{i}", **_FIELDS[m]), 1.0 - i / 10, rank=i + 1) for i, m in enumerate(modalities)]


def test_modality_mix_counts_shares_and_skew():
    hits = hits_of("text", "text", "image", "text")
    pool = [hit.item for hit in hits_of("text", "image", "image", "image,text")]
    mix = modality_mix(hits, pool)
    assert list(mix.columns) == list(MIX_COLUMNS)
    assert mix["modality"].tolist() == ["text", "image", "image,text"]
    assert mix["label"].tolist() == ["text", "image", "image+text"]
    assert mix["count"].tolist() == [3, 1, 0]
    assert mix["share"].tolist() == [0.75, 0.25, 0.0]
    assert mix["pool_share"].tolist() == [0.25, 0.5, 0.25]
    assert mix["skew"].tolist() == [3.0, 0.5, 0.0]  # text over-retrieved 3x, image under-retrieved


def test_modality_mix_without_a_pool_or_hits():
    mix = modality_mix(hits_of("image"))
    assert mix["share"].tolist() == [0.0, 1.0, 0.0]
    assert all(math.isnan(v) for v in mix["pool_share"]) and all(math.isnan(v) for v in mix["skew"])
    empty = modality_mix([], [hit.item for hit in hits_of("text", "image")])
    assert empty["count"].tolist() == [0, 0, 0] and empty["pool_share"].tolist() == [0.5, 0.5, 0.0]
    assert math.isnan(empty.loc[2, "skew"])  # the pool has no image+text: skew undefined, not infinite


def test_modality_mix_accepts_a_corpus(tmp_path):
    from retrieval_helpers import write_corpus

    from mmembed.corpus import load_mbeir_jsonl

    corpus = load_mbeir_jsonl(write_corpus(tmp_path))
    mix = modality_mix(hits_of("image,text", "image,text"), corpus).set_index("modality")
    assert mix.loc["image,text", "pool_share"] == 0.25 and mix.loc["image,text", "skew"] == 4.0


def test_wrong_modality_rate():
    hits = hits_of("text", "image", "text", "text")
    assert wrong_modality_rate(hits, Modality.IMAGE) == 0.75
    assert wrong_modality_rate(hits, Modality.IMAGE, k=2) == 0.5
    assert wrong_modality_rate(hits, Modality.IMAGE, k=1) == 1.0
    assert wrong_modality_rate(hits, Modality.TEXT, k=10) == 0.25  # k beyond the list: over what exists
    assert wrong_modality_rate(hits, Modality.IMAGE_TEXT) == 1.0
    assert wrong_modality_rate(hits, None) is None
    assert wrong_modality_rate([], Modality.TEXT) is None


@pytest.mark.parametrize("k", [0, -1])
def test_wrong_modality_rate_with_no_hits_in_range(k):
    assert wrong_modality_rate(hits_of("text", "image", "image"), Modality.TEXT, k=k) is None
