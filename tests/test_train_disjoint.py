"""Nothing of the evaluation corpus (sample_corpus/) may appear in mmembed-mini's training data.

Always checked against the manifest shipped with the model (assets/mmembed-mini/training_sources.txt and
training_image_hashes.txt); also against build/training_set/ when a local build exists."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_corpus"
ASSETS = ROOT / "assets" / "mmembed-mini"
BUILD = ROOT / "build" / "training_set"


def _lines(path: Path) -> set[str]:
    return {line.strip() for line in path.read_text().splitlines() if line.strip()}


def _sample_sources() -> set[str]:
    keys = _lines(SAMPLE / "sources.txt") if (SAMPLE / "sources.txt").is_file() else set()
    for name in ("corpus.jsonl", "queries.jsonl"):
        path = SAMPLE / name
        if path.is_file():
            keys |= {json.loads(line).get("source") for line in path.read_text().splitlines() if line.strip()}
    keys.discard(None)
    return keys


def _sample_image_hashes() -> set[str]:
    from PIL import Image

    from mmembed.models.mini_images import prepare_image

    hashes = set()
    for name, key in (("corpus.jsonl", "img_path"), ("queries.jsonl", "query_img_path")):
        path = SAMPLE / name
        if not path.is_file():
            continue
        for line in path.read_text().splitlines():
            rel = json.loads(line).get(key) if line.strip() else None
            if rel and (SAMPLE / rel).is_file():
                with Image.open(SAMPLE / rel) as image:
                    hashes.add(hashlib.sha256(prepare_image(image, 64).tobytes()).hexdigest())
    return hashes


def _require_sample_corpus():
    if not _sample_sources():
        pytest.skip("sample_corpus/ has no sources.txt or source fields yet: nothing to compare against")


def test_shipped_training_manifest_is_disjoint_from_sample_corpus():
    _require_sample_corpus()
    training = _lines(ASSETS / "training_sources.txt")
    assert len(training) > 1000, "the shipped manifest lists every training source key"
    overlap = training & _sample_sources()
    assert not overlap, f"sample_corpus sources used in training: {sorted(overlap)[:10]}"


def test_shipped_training_images_differ_from_sample_corpus_images():
    _require_sample_corpus()
    training = _lines(ASSETS / "training_image_hashes.txt")
    assert len(training) > 1000
    overlap = training & _sample_image_hashes()
    assert not overlap, f"{len(overlap)} sample_corpus image(s) appear in the training images"


def test_local_training_build_is_disjoint_from_sample_corpus():
    _require_sample_corpus()
    if not (BUILD / "pool.jsonl").is_file():
        pytest.skip("no local training set in build/training_set (build it with scripts/build_training_set.py)")
    sources = set()
    for name in ("pool.jsonl", "queries.jsonl"):
        sources |= {json.loads(line)["source"] for line in (BUILD / name).read_text().splitlines() if line.strip()}
    assert not sources & _sample_sources()
    assert not _lines(BUILD / "image_hashes.txt") & _sample_image_hashes()


def test_builder_collects_every_kind_of_exclusion(tmp_path):
    """The exclusion logic itself, on a fake sample corpus: listed keys, `source` fields and texts."""
    import importlib.util
    import sys

    spec = importlib.util.spec_from_file_location("build_training_set", ROOT / "scripts" / "build_training_set.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    sample = tmp_path / "sample"
    sample.mkdir()
    (sample / "sources.txt").write_text("openclipart:animals/x.svg\nwordnet:dog.n.01\n")
    (sample / "corpus.jsonl").write_text(json.dumps({"did": "1", "txt": "A Red Apple!", "modality": "text",
                                                     "source": "twemoji:1f34e"}) + "\n")
    exclusion = module.Exclusion.from_sample_corpus(sample)
    assert exclusion.keys == {"openclipart:animals/x.svg", "wordnet:dog.n.01", "twemoji:1f34e"}
    assert "a red apple" in exclusion.texts
