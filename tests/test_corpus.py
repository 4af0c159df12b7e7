"""Corpus loaders (M-BEIR jsonl, Hugging Face datasets, plain folders), validation and query files."""

from __future__ import annotations

import json

import pytest
from PIL import Image
from retrieval_helpers import png, write_corpus

from mmembed.corpus import (
    CorpusValidationError,
    load_corpus,
    load_folder,
    load_hf_dataset,
    load_mbeir_jsonl,
    load_queries,
)
from mmembed.types import Modality, ValidationError


@pytest.fixture
def corpus(tmp_path):
    return load_mbeir_jsonl(write_corpus(tmp_path / "corpus"))


def test_mbeir_loader_resolves_images_and_keeps_extras(corpus, tmp_path):
    assert len(corpus) == 8
    assert [item.id for item in corpus][:3] == ["t-cat", "t-dog", "t-apple"]
    item = corpus["it-apple"]
    assert item.modality is Modality.IMAGE_TEXT
    assert item.image == (tmp_path / "corpus/images/apple.png").resolve()
    assert item.meta == {"license": "CC0", "source": "test:apple"}
    assert corpus.root == (tmp_path / "corpus").resolve() and corpus.name == "corpus"
    assert corpus.modality_counts() == {Modality.TEXT: 3, Modality.IMAGE: 3, Modality.IMAGE_TEXT: 2}
    assert load_corpus(tmp_path / "corpus").content_hash == corpus.content_hash
    with pytest.raises(KeyError, match="no item 'nope'"):
        corpus["nope"]


def test_content_hash_changes_when_an_image_or_a_text_changes(corpus, tmp_path):
    png(tmp_path / "corpus/images/dog.png", colour=(0, 0, 255))
    changed_image = load_mbeir_jsonl(tmp_path / "corpus/corpus.jsonl")
    assert changed_image.content_hash != corpus.content_hash
    path = tmp_path / "corpus/corpus.jsonl"
    path.write_text(path.read_text().replace("loyal", "faithful"))
    assert load_mbeir_jsonl(path).content_hash not in {corpus.content_hash, changed_image.content_hash}


def test_validation_reports_every_problem_with_its_line(tmp_path):
    (tmp_path / "broken.png").write_text("not an image")
    (tmp_path / "empty.png").write_bytes(b"")
    rows = [
        '{"did": "a", "txt": "fine", "modality": "text"}',
        '{"did": "a", "txt": "again", "modality": "text"}',
        '{"did": "b", "img_path": "missing.png", "modality": "image"}',
        '{"did": "c", "img_path": "broken.png", "modality": "image"}',
        '{"did": "d", "txt": "words", "modality": "image"}',
        '{"did": "e", "txt": "   "}',
        "{not json",
        '{"txt": "no id"}',
        '{"did": "f", "img_path": "empty.png"}',
        '{"did": "g", "txt": "ok", "modality": "video"}',
    ]
    (tmp_path / "c.jsonl").write_text("\n".join(rows))
    with pytest.raises(CorpusValidationError) as caught:
        load_mbeir_jsonl(tmp_path / "c.jsonl")
    problems = caught.value.problems
    assert len(problems) == 9
    assert problems[0] == "line 2 (did 'a'): duplicate id, first seen on line 1"
    assert problems[1].startswith("line 3 (did 'b'): image file not found")
    assert problems[2].startswith("line 4 (did 'c'): unreadable image broken.png")
    assert problems[3] == "line 5 (did 'd'): modality 'image' does not match the fields present ('text')"
    assert problems[4] == "line 6 (did 'e'): empty text and no image"
    assert problems[5].startswith("line 7: not valid JSON")
    assert problems[6] == "line 8: missing or empty 'did'"
    assert problems[7].startswith("line 9 (did 'f'): image file is empty")
    assert problems[8].startswith("line 10 (did 'g'): unknown modality 'video'")
    assert "9 problem(s)" in str(caught.value) and "line 10" in str(caught.value)


def test_oversized_images_are_reported_before_any_embedding(tmp_path, monkeypatch):
    import mmembed.images

    monkeypatch.setattr(mmembed.images, "MAX_PIXELS", 50)  # the 8x8 test images exceed 50 pixels
    with pytest.raises(CorpusValidationError) as caught:
        load_mbeir_jsonl(write_corpus(tmp_path))
    assert len(caught.value.problems) == 5
    assert caught.value.problems[0] == "line 4 (did 'i-cat'): image cat.png is 8x8 pixels; the limit is 50 pixels"


def test_missing_or_empty_corpus_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="corpus file not found"):
        load_mbeir_jsonl(tmp_path / "nope.jsonl")
    with pytest.raises(FileNotFoundError, match="corpus not found"):
        load_corpus(tmp_path / "nope.csv")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    with pytest.raises(CorpusValidationError, match="the file holds no items"):
        load_corpus(tmp_path / "blank.jsonl")


def _dataset(tmp_path, captions, keys):
    import datasets

    images = [Image.new("RGB", (4, 4), (i * 40, 0, 0)) for i in range(len(captions))]
    dataset = datasets.Dataset.from_dict(
        {"picture": images, "caption": captions, "key": keys},
        features=datasets.Features({"picture": datasets.Image(), "caption": datasets.Value("string"),
                                    "key": datasets.Value("string")}),
    )
    dataset.save_to_disk(str(tmp_path / "ds"))
    return tmp_path / "ds"


def test_hf_dataset_loader_with_configurable_columns(tmp_path):
    path = _dataset(tmp_path, ["a cat", "", "a dog"], ["x", "y", "z"])
    corpus = load_hf_dataset(path, image_column="picture", text_column="caption", id_column="key")
    assert [item.modality for item in corpus] == [Modality.IMAGE_TEXT, Modality.IMAGE, Modality.IMAGE_TEXT]
    assert corpus["z"].text == "a dog" and corpus["x"].image.size == (4, 4)
    by_row = load_corpus(path, image_column="picture", text_column="caption")  # no id column: row numbers
    assert [item.id for item in by_row] == ["0", "1", "2"]
    with pytest.raises(ValidationError, match="no text column 'text'; columns are: caption, key, picture"):
        load_hf_dataset(path, image_column="picture")


def test_hf_dataset_duplicates_and_empty_rows_are_all_reported(tmp_path):
    path = _dataset(tmp_path, ["a cat", "b", "c"], ["x", "x", "y"])
    with pytest.raises(CorpusValidationError) as caught:
        load_hf_dataset(path, image_column=None, text_column="caption", id_column="key")
    assert caught.value.problems == ["row 1 (id 'x'): duplicate id, first seen in row 0"]
    import datasets

    datasets.Dataset.from_dict({"text": ["fine", "  ", ""]}).save_to_disk(str(tmp_path / "texts"))
    with pytest.raises(CorpusValidationError) as caught:
        load_hf_dataset(tmp_path / "texts", image_column=None)
    assert [p.split(":")[0] for p in caught.value.problems] == ["row 1 (id '1')", "row 2 (id '2')"]
    assert "needs text, an image, or both" in caught.value.problems[0]


def test_hf_dataset_with_a_column_of_image_paths(tmp_path):
    import datasets

    folder = tmp_path / "paths"
    png(folder / "boat.png")
    datasets.Dataset.from_dict({"image": ["boat.png", "gone.png"], "text": ["a boat", "lost"]}).save_to_disk(
        str(folder))
    with pytest.raises(CorpusValidationError) as caught:
        load_hf_dataset(folder)
    assert len(caught.value.problems) == 1 and caught.value.problems[0].startswith("row 1 (id '1'): image file not")
    (folder / "gone.png").write_bytes((folder / "boat.png").read_bytes())
    assert load_hf_dataset(folder)["0"].image == (folder / "boat.png").resolve()


def test_folder_of_images_and_captions(tmp_path):
    root = tmp_path / "pics"
    png(root / "cat.png")
    (root / "cat.txt").write_text("A cat on a mat.\n")
    png(root / "animals/dog.jpg")
    (root / "notes.txt").write_text("Rockets carry payloads to orbit.")
    (root / "readme.md").write_text("ignored")
    corpus = load_corpus(root)
    assert [(item.id, item.modality) for item in corpus] == [
        ("animals/dog", Modality.IMAGE), ("cat", Modality.IMAGE_TEXT), ("notes", Modality.TEXT)]
    assert corpus["cat"].text == "A cat on a mat."
    (root / "empty.txt").write_text("  ")
    (root / "bad.png").write_text("not a png")
    with pytest.raises(CorpusValidationError) as caught:
        load_folder(root)
    assert [p.split(":")[0] for p in caught.value.problems] == ["bad.png", "empty.txt"]


def test_queries_loader_checks_positives_and_modality(tmp_path, corpus):
    good = {"qid": "q1", "query_txt": "a cat", "query_img_path": None, "query_modality": "text",
            "pos_cand_list": ["i-cat"], "task": "t->i", "target_modality": "image"}
    (tmp_path / "q.jsonl").write_text(json.dumps(good) + "\n")
    [query] = load_queries(tmp_path / "q.jsonl", corpus)
    assert query.query.target is Modality.IMAGE and query.task == "t->i" and query.positives == ("i-cat",)
    assert query.query.text == "a cat" and query.qid == "q1"
    rows = [
        {"qid": "q2", "query_txt": "x", "query_modality": "image", "pos_cand_list": ["i-cat"]},
        {"qid": "q3", "query_txt": "x", "pos_cand_list": ["nope"]},
        {"qid": "q4", "query_txt": "x", "pos_cand_list": []},
        {"qid": "q5", "query_img_path": "missing.png", "pos_cand_list": ["i-cat"]},
    ]
    (tmp_path / "bad.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.raises(CorpusValidationError) as caught:
        load_queries(tmp_path / "bad.jsonl", corpus)
    assert caught.value.problems[0] == "line 1 (qid 'q2'): query_modality 'image' does not match the fields present"
    assert caught.value.problems[1] == "line 2 (qid 'q3'): positives not in the corpus: nope"
    assert caught.value.problems[2] == "line 3 (qid 'q4'): pos_cand_list must be a non-empty list"
    assert caught.value.problems[3].startswith("line 4 (qid 'q5'): image file not found")


def test_query_task_and_target_default_from_the_positive(tmp_path, corpus):
    png(tmp_path / "query_dog.png")
    row = {"qid": "q", "query_img_path": "query_dog.png", "pos_cand_list": ["t-dog"]}
    (tmp_path / "q.jsonl").write_text(json.dumps(row))
    [query] = load_queries(tmp_path / "q.jsonl", corpus)
    assert query.query.target is Modality.TEXT and query.task == "i->t"


def test_image_root_for_the_released_mbeir_layout(tmp_path):
    # M-BEIR/cand_pool/pool.jsonl holds paths like "mbeir_images/x.png", relative to M-BEIR/ itself.
    root = tmp_path / "M-BEIR"
    png(root / "mbeir_images/cat.png")
    (root / "cand_pool").mkdir()
    (root / "cand_pool/pool.jsonl").write_text(json.dumps({"did": "1:1", "txt": None, "modality": "image",
                                                            "img_path": "mbeir_images/cat.png"}) + "\n")
    (root / "query.jsonl").write_text(json.dumps({"qid": "q", "query_txt": "", "query_modality": "image",
                                                   "query_img_path": "mbeir_images/cat.png",
                                                   "pos_cand_list": ["1:1"], "task_id": 4}) + "\n")
    with pytest.raises(CorpusValidationError, match="image file not found"):
        load_mbeir_jsonl(root / "cand_pool/pool.jsonl")
    corpus = load_corpus(root / "cand_pool/pool.jsonl", image_root=root)
    assert corpus["1:1"].image == (root / "mbeir_images/cat.png").resolve()
    [query] = load_queries(root / "query.jsonl", corpus, image_root=root)
    assert query.task == "i->i" and query.query.text is None and query.query.target is Modality.IMAGE
