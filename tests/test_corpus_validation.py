"""Corpus validation gaps an operator's soak found (issue 9, item 8): a non-UTF-8 byte and image paths that
leave the corpus folder are refused with their line named, like every other problem of the file."""

from __future__ import annotations

import json

import pytest
from retrieval_helpers import png

from mmembed.corpus import CorpusValidationError, load_corpus, load_mbeir_jsonl


def _lines(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"".join(row if isinstance(row, bytes) else (json.dumps(row) + "\n").encode() for row in rows))
    return path


def test_a_non_utf8_byte_names_its_line_and_the_other_problems_still_show(tmp_path):
    path = _lines(tmp_path / "corpus.jsonl", [
        {"did": "a", "txt": "fine", "modality": "text"},
        b'{"did": "b", "txt": "caf\xe9 au lait", "modality": "text"}\n',  # Latin-1, not UTF-8
        {"did": "c", "txt": "", "modality": "text"},
    ])
    with pytest.raises(CorpusValidationError) as caught:
        load_mbeir_jsonl(path)
    assert caught.value.problems == [
        "line 2: not valid UTF-8 (byte 0xe9 at column 25); save the file as UTF-8",
        "line 3 (did 'c'): empty text and no image",
    ]


def test_utf8_text_still_loads(tmp_path):
    path = _lines(tmp_path / "corpus.jsonl", [{"did": "a", "txt": "café au lait — ☕", "modality": "text"}])
    assert load_mbeir_jsonl(path)["a"].text == "café au lait — ☕"


@pytest.mark.parametrize("escape", ["../outside.png", "images/../../outside.png", "ABSOLUTE"])
def test_an_image_path_leaving_the_corpus_folder_is_refused(tmp_path, escape):
    png(tmp_path / "outside.png")  # a real image: only where it lies is wrong
    png(tmp_path / "corpus/images/ok.png")
    img_path = str(tmp_path / "outside.png") if escape == "ABSOLUTE" else escape
    path = _lines(tmp_path / "corpus/corpus.jsonl", [
        {"did": "ok", "img_path": "images/ok.png", "modality": "image"},
        {"did": "x", "img_path": img_path, "modality": "image"},
    ])
    with pytest.raises(CorpusValidationError) as caught:
        load_mbeir_jsonl(path)
    assert caught.value.problems == [
        f"line 2 (did 'x'): image path {img_path!r} leads outside the corpus folder {tmp_path / 'corpus'}; keep "
        "the images inside it, or pass --image-root with a folder that holds them"]


def test_image_root_covers_paths_inside_it_and_no_further(tmp_path):
    png(tmp_path / "root/shared/cat.png")
    png(tmp_path / "elsewhere.png")
    pool = _lines(tmp_path / "root/pool/pool.jsonl", [
        {"did": "cat", "img_path": "shared/cat.png", "modality": "image"},
        {"did": "abs", "img_path": str(tmp_path / "root/shared/cat.png"), "modality": "image"},
    ])
    corpus = load_corpus(pool, image_root=tmp_path / "root")  # inside --image-root: fine, absolute or not
    assert corpus["cat"].image == corpus["abs"].image == (tmp_path / "root/shared/cat.png").resolve()
    _lines(pool, [{"did": "far", "img_path": "../elsewhere.png", "modality": "image"}])
    with pytest.raises(CorpusValidationError) as caught:
        load_corpus(pool, image_root=tmp_path / "root")
    assert caught.value.problems == [
        f"line 1 (did 'far'): image path '../elsewhere.png' leads outside the --image-root folder "
        f"{tmp_path / 'root'}; keep the images inside it"]


def test_a_symlinked_image_folder_inside_the_corpus_is_still_fine(tmp_path):
    png(tmp_path / "store/cat.png")
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus/images").symlink_to(tmp_path / "store")  # written inside; the operator's own link
    path = _lines(tmp_path / "corpus/corpus.jsonl", [{"did": "c", "img_path": "images/cat.png", "modality": "image"}])
    assert load_mbeir_jsonl(path)["c"].image == (tmp_path / "store/cat.png").resolve()


def test_a_dataset_column_of_paths_may_not_leave_its_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    png(tmp_path / "outside.png")
    png(tmp_path / "ds/inside.png")
    datasets.Dataset.from_dict({"image": ["inside.png", "../outside.png"], "text": ["in", "out"]}).save_to_disk(
        str(tmp_path / "ds"))
    with pytest.raises(CorpusValidationError) as caught:
        load_corpus(tmp_path / "ds")
    assert caught.value.problems == [
        f"row 1 (id '1'): image path '../outside.png' leads outside the dataset folder {tmp_path / 'ds'}; "
        "keep the images inside it"]
