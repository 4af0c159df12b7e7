from __future__ import annotations

from pathlib import Path

import pytest

from mmembed.instructions import INSTRUCTIONS, instruction_for
from mmembed.types import Hit, Item, Modality, Query, ValidationError


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [("text", Modality.TEXT), ("IMAGE", Modality.IMAGE), ("image+text", Modality.IMAGE_TEXT),
     ("image,text", Modality.IMAGE_TEXT), (" it ", Modality.IMAGE_TEXT), (Modality.TEXT, Modality.TEXT)],
)
def test_modality_parse_accepts_mbeir_and_friendly_spellings(spelling, expected):
    assert Modality.parse(spelling) is expected


def test_modality_parse_rejects_unknown_with_the_known_list():
    with pytest.raises(ValidationError, match=r"unknown modality 'video'.*text, image, image,text"):
        Modality.parse("video")


def test_modality_label_uses_plus_for_display():
    assert [m.label for m in Modality] == ["text", "image", "image+text"]


def test_item_infers_modality_from_fields():
    assert Item("a", text="hello").modality is Modality.TEXT
    assert Item("b", image=Path("x.png")).modality is Modality.IMAGE
    assert Item("c", text="cap", image="x.png").modality is Modality.IMAGE_TEXT


def test_item_with_neither_text_nor_image_is_rejected():
    with pytest.raises(ValidationError, match="item 'empty': needs text, an image, or both"):
        Item("empty", text="   ")


def test_item_modality_must_match_fields():
    with pytest.raises(ValidationError, match=r"modality 'image' does not match the fields present \('text'\)"):
        Item("x", text="only text", modality="image")


def test_item_rejects_blank_id():
    with pytest.raises(ValidationError, match="id must be a non-empty string"):
        Item(" ", text="t")


def test_query_blank_text_counts_as_absent():
    query = Query(text="  ", image="q.png", target="image+text")
    assert query.text is None
    assert query.modality is Modality.IMAGE
    assert query.target is Modality.IMAGE_TEXT


def test_empty_query_is_rejected():
    with pytest.raises(ValidationError, match="query: needs text, an image, or both"):
        Query(text="")


def test_hit_movement_is_positive_when_moving_up():
    item = Item("a", text="t")
    assert Hit(item, 0.5, rank=2, original_rank=5).movement == 3
    assert Hit(item, 0.5, rank=4, original_rank=1).movement == -3
    assert Hit(item, 0.5, rank=1).movement is None


def test_instruction_table_covers_every_query_and_target_pair():
    for query_modality in Modality:
        for target in [*Modality, None]:
            assert (query_modality, target) in INSTRUCTIONS


def test_instruction_follows_target_and_user_override_wins():
    query = Query(text="a red apple", target="image")
    assert instruction_for(query) == "Retrieve an image that matches the given caption."
    assert instruction_for(query, Modality.TEXT).startswith("Retrieve a text passage")
    custom = Query(text="a red apple", target="image", instruction="  Find fruit pictures.  ")
    assert instruction_for(custom) == "Find fruit pictures."
