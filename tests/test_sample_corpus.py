"""Integrity of the shipped sample_corpus/ (built by scripts/build_sample_corpus.py) and its evaluation queries."""

from __future__ import annotations

import hashlib
import json
import re
import sys
from collections import Counter
from pathlib import Path

import pytest

from mmembed.corpus import TASK_NAMES, load_mbeir_jsonl, load_queries
from mmembed.types import Modality

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "sample_corpus"
ALLOWED_LICENSE = re.compile(r"^(public domain|CC0-1\.0|CC-BY-\d\.\d|WordNet-3\.0)$")
QUERY_IMAGE_LICENSE = re.compile(r"^(public domain|CC0-1\.0|CC-BY-\d\.\d|Apache-2\.0)$")
PHOTO_SOURCES = ("skimage:", "sklearn:", "stdlib:")
TRAINING_HASHES = ROOT / "assets" / "mmembed-mini" / "training_image_hashes.txt"


def _scripts(name: str):
    """A module of scripts/ (the builder and its data tables)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        return __import__(name)
    finally:
        sys.path.remove(str(ROOT / "scripts"))


@pytest.fixture(scope="module")
def corpus():
    return load_mbeir_jsonl(SAMPLE / "corpus.jsonl")


@pytest.fixture(scope="module")
def rows():
    return [json.loads(line) for line in (SAMPLE / "corpus.jsonl").read_text(encoding="utf-8").splitlines() if line]


@pytest.fixture(scope="module")
def query_rows():
    return [json.loads(line) for line in (SAMPLE / "queries.jsonl").read_text(encoding="utf-8").splitlines() if line]


def test_every_manifest_row_loads_with_unique_ids(corpus, rows):
    assert len(corpus) == len(rows)
    assert 300 <= len(rows) <= 600
    ids = [row["did"] for row in rows]
    assert len(set(ids)) == len(ids)
    assert all(re.fullmatch(r"sc-\d{4}", did) for did in ids)
    for row, item in zip(rows, corpus, strict=True):
        assert item.id == row["did"]
        assert item.modality is Modality.parse(row["modality"])
        assert item.meta["topic"] == row["topic"]


def test_images_are_relative_exist_open_and_are_small():
    from PIL import Image

    for name in ("corpus.jsonl", "queries.jsonl"):
        for line in (SAMPLE / name).read_text().splitlines():
            row = json.loads(line)
            rel = row.get("img_path") or row.get("query_img_path")
            if not rel:
                continue
            assert not Path(rel).is_absolute() and ".." not in Path(rel).parts, rel
            with Image.open(SAMPLE / rel) as image:
                assert max(image.size) <= 512, (rel, image.size)
                assert min(image.size) >= 32, (rel, image.size)


def test_modality_shares_and_topics(corpus, rows):
    counts = corpus.modality_counts()
    assert set(counts) == {Modality.TEXT, Modality.IMAGE, Modality.IMAGE_TEXT}
    for modality, count in counts.items():
        assert count / len(corpus) >= 0.20, f"{modality.value}: {count}/{len(corpus)}"
    topics = Counter(row["topic"] for row in rows)
    assert 6 <= len(topics) <= 10, topics
    assert min(topics.values()) >= 20, topics


def test_concepts_appear_in_every_modality(rows):
    """Cross-modal retrieval is meaningful: many concepts have an image, a passage and a captioned picture."""
    modalities: dict[str, set[str]] = {}
    for row in rows:
        modalities.setdefault(row["concept"], set()).add(row["modality"])
    full = [c for c, mods in modalities.items() if mods == {"text", "image", "image,text"}]
    assert len(full) >= 40, len(full)
    distractors = _scripts("sample_corpus_concepts").DISTRACTORS
    assert all("text" in mods for concept, mods in modalities.items() if concept not in distractors)


def test_text_passages_are_short_encyclopedia_style(rows):
    for row in rows:
        if row["modality"] != "text":
            continue
        sentences = re.findall(r"[.!?](?:\"|)(?=\s+[A-Z\"]|$)", row["txt"])
        assert 1 <= len(sentences) <= 4, row["txt"]
        assert row["txt"][0].isupper()


def test_real_photographs_are_included(rows):
    photos = {row["source"] for row in rows if row["source"].startswith(PHOTO_SOURCES)}
    assert len(photos) >= 15, sorted(photos)
    assert "skimage:chelsea" in photos and "sklearn:china" in photos


def test_licences_allowed_with_credits(rows, query_rows):
    for row in rows:
        assert ALLOWED_LICENSE.match(row["license"]), (row["did"], row["license"])
        assert not re.search(r"SA|GPL|NC|ND", row["license"])
        assert row["credit"].strip() and row["source"].strip(), row["did"]
    by_kind = {row["source"].split(":")[0]: row["license"] for row in rows}
    assert by_kind["openclipart"] == "public domain"
    assert by_kind["twemoji"] == "CC-BY-4.0"
    assert by_kind["sklearn"] == "CC-BY-2.0"
    assert by_kind["wordnet"] == "WordNet-3.0"


def test_attribution_lists_every_item_and_query_image(rows, query_rows):
    text = (SAMPLE / "ATTRIBUTION.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| (\S+) \| (\S+) \| ([^|]+) \|", text, re.M))
    listed_ids = {entry[0]: entry for entry in listed}
    for row in rows:
        assert row["did"] in listed_ids, row["did"]
        assert listed_ids[row["did"]][1] == row["source"]
        assert listed_ids[row["did"]][2].strip() == row["license"]
    for query in query_rows:
        if query["query_img_path"]:
            assert query["query_img_path"] in listed_ids, query["query_img_path"]
    for licence in ("CC-BY-2.0", "CC-BY-4.0", "CC0-1.0", "WordNet-3.0"):
        assert f"**{licence}**" in text
    # the WordNet licence asks for its notice and disclaimer on every copy of derived data
    assert "WordNet 3.0 Copyright 2006 by Princeton University" in text
    assert 'PROVIDED "AS IS"' in text


def test_total_size_under_30_mb():
    total = sum(p.stat().st_size for p in SAMPLE.rglob("*") if p.is_file())
    assert total <= 30 * 2**20, total


def test_sources_txt_lists_every_source_key_sorted(rows, query_rows):
    """sources.txt is what build_training_set.py excludes: every key in use and every key reserved for the
    evaluation set (scripts/sample_corpus_reserved.txt), and nothing else."""
    reserved_sources = _scripts("build_sample_corpus").reserved_sources
    lines = (SAMPLE / "sources.txt").read_text().splitlines()
    assert lines == sorted(set(lines))
    used = {row["source"] for row in rows} | {q["source"] for q in query_rows if q.get("source")}
    reserved = reserved_sources()
    assert len(reserved) >= 300
    assert set(lines) == used | reserved
    for key in lines:
        assert re.match(r"^(openclipart|twemoji|notoemoji|kenney|sunpy|kivy|wordnet|skimage|sklearn|stdlib):\S",
                        key), key


def test_queries_load_and_cover_all_tasks(corpus, query_rows):
    queries = load_queries(SAMPLE / "queries.jsonl", corpus)
    assert len(queries) == len(query_rows) >= 240
    tasks = Counter(q.task for q in queries)
    assert set(tasks) == set(TASK_NAMES)
    assert min(tasks.values()) >= 24, tasks
    assert len({q.qid for q in queries}) == len(queries)
    for query in queries:
        assert query.query.target is not None
        short = {"text": "t", "image": "i", "image,text": "(i,t)"}
        assert query.task == f"{short[query.query.modality.value]}->{short[query.query.target.value]}"


def test_positives_have_target_modality_and_follow_the_written_rule(rows, query_rows):
    """Every concept query's positives are exactly what build_sample_corpus.positives() says answers it (the
    rule is written there: kinds answer a text query; an image query is answered by its own concept, by kinds
    it shows, never by another kind), and always of the target modality and the query's concepts."""
    build, table, curated = _scripts("build_sample_corpus"), _scripts("sample_corpus_concepts"), \
        _scripts("sample_corpus_queries")
    concepts = (*table.CONCEPTS, *table.EXTRA_CONCEPTS)
    narrower = {c.name: c.narrower for c in concepts}
    definitions = {c.name: table.definition_key(c) for c in concepts}
    by_id = {row["did"]: row for row in rows}
    generated = len(query_rows) - len(curated.QUERIES)
    for index, query in enumerate(query_rows):
        positives = query["pos_cand_list"]
        assert positives and positives == sorted(set(positives)), query["qid"]
        assert query["concepts"][0] == query["concept"]
        for did in positives:
            assert by_id[did]["modality"] == query["target_modality"], (query["qid"], did)
            assert by_id[did]["concept"] in query["concepts"], (query["qid"], did)
        if query["kind"] == "photo":  # describes one photo in other words: that photo is the only positive
            assert len(positives) == 1 and by_id[positives[0]]["source"].startswith(PHOTO_SOURCES)
            continue
        assert query["kind"] == "concept"
        if index >= generated:
            spec = curated.QUERIES[index - generated]
            only, defines = spec.only, spec.defines
            assert (spec.task, spec.concept, spec.text) == (query["task"], query["concept"], query["query_txt"])
        else:
            defines = query["task"] == "t->t" and any(
                query["query_txt"] == t.format(a=build.a(query["concept"]), n=query["concept"]) for t in build.DEFINING)
            only = ()
        expected, allowed = build.positives(query, rows, narrower, definitions, only, defines)
        assert (positives, query["concepts"]) == (expected, allowed), query["qid"]
    photo_queries = [q for q in query_rows if q["kind"] == "photo"]
    assert len({q["pos_cand_list"][0] for q in photo_queries}) == len(photo_queries) >= 15


def test_positives_fixed_for_issue_11(rows, query_rows):
    """The wrong or inconsistent positives found by reading the corpus stay fixed."""
    by_qid = {q["qid"]: q for q in query_rows}
    by_id = {row["did"]: row for row in rows}
    assert by_qid["scq-0052"]["pos_cand_list"] == ["sc-0204"]  # a star, not the sun sc-0217
    assert by_qid["scq-0096"]["pos_cand_list"] == ["sc-0208"]  # Saturn shown: the Earth globes do not answer
    assert "sc-0378" not in by_qid["scq-0044"]["pos_cand_list"]  # upright piano shown, not the grand-piano passage
    assert by_qid["scq-0046"]["pos_cand_list"] == ["sc-0114"]  # pepperoni shown, not the anchovy-pizza passage
    # one generic flower: any flower picture is another picture of it, but only the flower passage describes
    # it (not pheasant's-eye, rose or tulip, each a particular kind)
    assert {"sc-0154", "sc-0160"} <= set(by_qid["scq-0071"]["pos_cand_list"])
    assert by_qid["scq-0075"]["pos_cand_list"] == ["sc-0145"]
    assert by_id["sc-0288"]["concept"] == "apartment building"  # a block of flats
    assert by_id["sc-0379"]["concept"] != "drum" and by_id["sc-0407"]["concept"] != "headphones"
    assert all("sc-0288" not in q["pos_cand_list"] for q in query_rows if q["concept"] == "house")
    # the ram emoji shows a ram: the ram passage describes it; a generic frog face is not a "true toad"
    assert by_qid["scq-0045"]["pos_cand_list"] == ["sc-0031", "sc-0032"]
    assert by_qid["scq-0037"]["pos_cand_list"] == ["sc-0065"]
    # "What is a bridge?" asks for the definition; "Tell me about the tree." is answered by kinds of trees too
    assert by_qid["scq-0018"]["pos_cand_list"] == ["sc-0317"]
    assert {"sc-0168", "sc-0169", "sc-0171"} <= set(by_qid["scq-0015"]["pos_cand_list"])


def test_queries_are_worded_variously_and_describe_their_images(query_rows):
    by_task: dict[str, list[dict]] = {}
    for query in query_rows:
        by_task.setdefault(query["task"], []).append(query)
    for task, queries in by_task.items():
        texts = [q["query_txt"] for q in queries if q["query_txt"]]
        if texts:  # no task is one template: at least half of its queries are worded differently
            assert len(set(texts)) >= len(texts) // 2, (task, Counter(texts).most_common(3))
    for query in query_rows:
        if query["query_img_path"]:
            desc = query["query_img_desc"]
            assert re.fullmatch(r"(a|an) [A-Za-z][\w' -]+", desc) and "q-" not in desc, (query["qid"], desc)


def test_query_images_are_not_corpus_images(rows, query_rows):
    corpus_hashes = {hashlib.sha256((SAMPLE / r["img_path"]).read_bytes()).hexdigest() for r in rows if r["img_path"]}
    corpus_sources = {row["source"] for row in rows}
    image_queries = [q for q in query_rows if q["query_img_path"]]
    assert len(image_queries) >= 120
    for query in image_queries:
        assert query["query_img_path"].startswith("query_images/")
        digest = hashlib.sha256((SAMPLE / query["query_img_path"]).read_bytes()).hexdigest()
        assert digest not in corpus_hashes, query["qid"]
        assert query["source"] not in corpus_sources, query["qid"]
    for query in query_rows:
        if query["query_txt"]:
            assert query["query_txt"] not in {row["txt"] for row in rows}


def test_build_helpers_word_articles():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import build_sample_corpus as build
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    fur = "feline mammal usually having thick soft fur"
    assert build._article(fur) == "a " + fur
    assert build._article("oval reproductive body") == "an oval reproductive body"
    assert build._article("(astronomy) a celestial body") == "(astronomy) a celestial body"
    assert build._article("mushrooms and related fleshy fungi") == "mushrooms and related fleshy fungi"
    assert build.a("owl") == "an owl" and build.a("violin") == "a violin"
    assert build.a("scissors") == "scissors" and build.a("earth") == "the Earth"


def test_query_images_are_credited_photos_and_drawings_never_trained_on(query_rows):
    """Every query image's source, licence and credit is in ATTRIBUTION.md with a permissive licence; some are
    photographs, most drawings; none is an image of mmembed-mini's training set (pixel hash) nor a source
    key outside sources.txt (what the training-set builder excludes)."""
    from PIL import Image

    from mmembed.models.mini_images import prepare_image

    text = (SAMPLE / "ATTRIBUTION.md").read_text(encoding="utf-8")
    listed = {m[0]: m for m in re.findall(r"^\| (query_images/\S+) \| (\S+) \| ([^|]+) \| ([^|]+) \|", text, re.M)}
    sources = set((SAMPLE / "sources.txt").read_text().split())
    training = {line.strip() for line in TRAINING_HASHES.read_text().splitlines() if line.strip()}
    paths = {q["query_img_path"]: q["source"] for q in query_rows if q["query_img_path"]}
    assert len(paths) >= 100
    for path, source in paths.items():
        assert path in listed, path
        _, key, licence, credit = listed[path]
        assert key == source and source in sources, path
        assert QUERY_IMAGE_LICENSE.match(licence.strip()) and credit.strip(), (path, licence)
        with Image.open(SAMPLE / path) as image:
            assert hashlib.sha256(prepare_image(image, 64).tobytes()).hexdigest() not in training, path
    kinds = Counter(source.split(":")[0] for source in paths.values())
    assert kinds["sunpy"] >= 2 and kinds["openclipart"] + kinds["twemoji"] + kinds["notoemoji"] >= 80, kinds
