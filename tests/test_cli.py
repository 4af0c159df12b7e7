"""The command line: output for people, --json for machines, one-line errors with exit code 1."""

from __future__ import annotations

import json

import pytest
from fakes import KeywordEmbedder
from retrieval_helpers import VOCAB, write_corpus

from mmembed.cli import main
from mmembed.embedders import EMBEDDERS
from mmembed.hub import WeightsNotAvailableError


@pytest.fixture
def cli_env(tmp_path, monkeypatch):
    """A tiny corpus and queries; every embedder name resolves to the keyword fake, except 'clip-b32',
    which behaves like a hub model that is not cached while offline."""
    corpus_path = write_corpus(tmp_path / "corpus")
    queries = tmp_path / "corpus/queries.jsonl"
    queries.write_text(json.dumps({"qid": "q1", "query_txt": "violin", "pos_cand_list": ["i-violin"],
                                   "task": "t->i", "target_modality": "image"}) + "\n")
    fake = KeywordEmbedder(VOCAB, text_bias=0.8, name="mmembed-mini")

    class Offline(KeywordEmbedder):
        def embed_query(self, query):
            raise WeightsNotAvailableError("model 'openai/clip-vit-base-patch32' is not in the local cache; "
                                           "download it once with: python -m mmembed prefetch --embedder clip-b32")

    def get(name, **options):
        if name == "clip-b32":
            return Offline(VOCAB, name="clip-b32")
        if name == "mmembed-mini":
            return fake
        return EMBEDDERS.info(name)  # unknown names raise UnknownBackendError as for real

    monkeypatch.setattr(EMBEDDERS, "get", get)
    monkeypatch.setenv("MMEMBED_CORPUS", str(corpus_path))
    monkeypatch.setenv("MMEMBED_QUERIES", str(queries))
    return tmp_path


def test_search_human_output_marks_wrong_modality(cli_env, capsys):
    assert main(["search", "cat", "--target", "image", "-k", "3", "--embedder", "mmembed-mini"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "3 results (mmembed-mini, mode natural, target image)"
    assert out[1].startswith("  1. +1.0000 !text") and "t-cat" in out[1]
    assert "it-cat" in out[2] and "cat_2.png] A sleeping cat." in out[2]
    assert out[3].startswith("  3. ") and " image " in out[3] and "i-cat" in out[3]
    assert out[3].endswith(str(cli_env / "corpus/images/cat.png"))  # a path a person can open
    assert out[-1] == "wrong-modality rate: 67% of the top 3 ('!' marks them)"


def test_search_top_k_comes_from_the_environment_unless_given(cli_env, capsys, monkeypatch):
    monkeypatch.setenv("MMEMBED_TOP_K", "2")
    assert main(["search", "cat", "--json", "--embedder", "mmembed-mini"]) == 0
    assert len(json.loads(capsys.readouterr().out)["first_stage"]["hits"]) == 2
    assert main(["search", "cat", "--json", "-k", "4", "--embedder", "mmembed-mini"]) == 0
    assert len(json.loads(capsys.readouterr().out)["first_stage"]["hits"]) == 4


def test_search_json_filtered(cli_env, capsys):
    assert main(["search", "cat", "--target", "image", "--mode", "filtered", "--json",
                 "--embedder", "mmembed-mini"]) == 0
    data = json.loads(capsys.readouterr().out)  # the demo API's object (SearchReport.to_dict)
    first = data["first_stage"]
    assert [hit["modality"] for hit in first["hits"]] == ["image"] * 3
    assert first["hits"][0]["id"] == "i-cat" and first["wrong_modality_rate"] == 0.0
    assert data["query"]["mode"] == "filtered" and data["reranked"]["status"] == "off"


def test_default_embedder_offline_falls_back_with_a_note(cli_env, capsys):
    assert main(["search", "violin", "--json"]) == 0
    captured = capsys.readouterr()
    err = captured.err.splitlines()
    assert err[0].startswith("note: 'clip-b32' is not available offline (model 'openai/clip-vit-base-patch32'")
    assert err[0].endswith("using the offline model 'mmembed-mini' shipped with mmembed instead")
    assert not any("UserWarning" in line for line in err)  # said once, as a note, not also as a warning
    assert json.loads(captured.out)["first_stage"]["hits"][0]["id"] == "i-violin"


def test_index_build_and_eval(cli_env, capsys):
    assert main(["index", "build", "--embedder", "mmembed-mini", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["items"] == 8
    assert main(["eval", "--embedder", "mmembed-mini", "-k", "1,5"]) == 0
    out = capsys.readouterr().out
    assert "| t->i | 1 | 100.0 | 100.0 |" in out


def test_eval_with_a_reranker_reports_both_stages(cli_env, capsys, monkeypatch):
    from fakes import FakeReranker

    from mmembed.rerankers import RERANKERS

    class TargetFirst(FakeReranker):
        name = "target-first"

        def score(self, query, items, *, progress=None):
            return [1.0 if item.modality is query.target else 0.0 for item in items]

    monkeypatch.setattr(RERANKERS, "get", lambda name, **options: TargetFirst())
    assert main(["eval", "--embedder", "mmembed-mini", "--reranker", "mmembed-mini-rerank", "--rerank-depth", "5",
                 "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert set(data["reranked"]) == set(data) - {"reranked", "reranker"}  # the same keys as the first stage's
    assert data["reranker"] == {"name": "target-first", "depth": 5}
    assert data["reranked"]["queries"] == data["queries"] and data["reranked"]["embedder"] == "mmembed-mini"
    assert data["reranked"]["wrong_modality_rate"]["overall"]["@1"] == 0.0  # the target is always ranked first
    assert main(["eval", "--embedder", "mmembed-mini", "--reranker", "mmembed-mini-rerank", "-k", "1"]) == 0
    out = capsys.readouterr().out
    assert "first stage → reranked by target-first (top 20)" in out.splitlines()[0]
    overall = [line for line in out.splitlines() if line.startswith("| overall |")]
    assert len(overall) == 2 and all(" → " in line for line in overall)  # recall and wrong-modality rows
    assert main(["eval", "--embedder", "mmembed-mini", "--reranker", "smolvlm-256m"]) == 1
    assert capsys.readouterr().err.strip() == (
        "error: reranker 'smolvlm-256m' can't run here: weights not downloaded (offline) "
        "(python -m mmembed prefetch --reranker smolvlm-256m; offline, use mmembed-mini-rerank)")
    assert main(["eval", "--embedder", "mmembed-mini", "--reranker", "x", "--rerank-depth", "0"]) == 1
    assert "--rerank-depth must be a positive integer, got 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "--embedder", "mmembed-mini"], "error: query: needs text, an image, or both; got neither"),
        (["search", "x", "--embedder", "nope"], "error: unknown embedder 'nope'; known: clip-b32"),
        (["search", "x", "--target", "video", "--embedder", "mmembed-mini"], "error: unknown modality 'video'"),
        (["search", "x", "--image", "missing.png", "--embedder", "mmembed-mini"], "error: image file not found"),
        (["eval", "--embedder", "mmembed-mini", "--ks", "1,x"], "error: --ks must be comma-separated integers"),
    ],
)
def test_errors_are_one_line_and_exit_1(cli_env, capsys, argv, message):
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(message)


def test_debug_shows_the_traceback(cli_env):
    with pytest.raises(Exception, match="unknown embedder 'nope'"):
        main(["--debug", "search", "x", "--embedder", "nope"])


def test_image_query_and_relative_paths(cli_env, capsys, monkeypatch):
    monkeypatch.chdir(cli_env)
    assert main(["search", "--image", "corpus/images/violin.png", "--target", "text", "-k", "2",
                 "--embedder", "mmembed-mini"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "2 results (mmembed-mini, mode natural, target text)"
    assert "i-violin" in out[1] and out[1].endswith(" corpus/images/violin.png") and " !image " in out[1]


def test_index_build_with_hnsw_and_eval_json(cli_env, capsys):
    assert main(["index", "build", "--embedder", "mmembed-mini", "--index-type", "hnsw"]) == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("indexed 8 items of 'corpus' with mmembed-mini (7-d, hnsw)")
    assert "embedding corpus" in captured.err  # the tqdm progress bar goes to stderr
    assert main(["eval", "--embedder", "mmembed-mini", "--mode", "filtered", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["mode"] == "filtered" and data["recall"]["t->i"] == {"R@1": 1.0, "R@5": 1.0, "R@10": 1.0}


def test_bad_corpus_lists_its_problems_and_exits_1(cli_env, capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"did": "a", "txt": "x"}\n{"did": "a", "txt": "y"}\n')
    assert main(["search", "x", "--corpus", str(bad), "--embedder", "mmembed-mini"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: {bad}: 1 problem(s):") and "line 2 (did 'a'): duplicate id" in err


def test_cache_rebuild_warning_is_one_readable_line(cli_env, capsys):
    import glob

    assert main(["index", "build", "--embedder", "mmembed-mini", "--json"]) == 0
    cache = json.loads(capsys.readouterr().out)["cache_dir"]
    [index_file] = glob.glob(f"{cache}/indexes/corpus/*/index-flat.faiss")
    with open(index_file, "wb") as handle:
        handle.write(b"garbage")
    assert main(["index", "build", "--embedder", "mmembed-mini", "--json"]) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    assert len(warned) == 1 and warned[0].startswith("warning: cached index ") and "is corrupt" in warned[0]


def test_image_root_flag(cli_env, capsys, tmp_path):
    from retrieval_helpers import png

    png(tmp_path / "root/imgs/boat.png")
    pool = tmp_path / "root/pool/pool.jsonl"
    pool.parent.mkdir()
    pool.write_text(json.dumps({"did": "b", "img_path": "imgs/boat.png", "modality": "image"}) + "\n")
    assert main(["search", "boat", "--corpus", str(pool), "--embedder", "mmembed-mini"]) == 1
    assert "image file not found" in capsys.readouterr().err
    assert main(["search", "boat", "--corpus", str(pool), "--image-root", str(tmp_path / "root"),
                 "--embedder", "mmembed-mini", "--json"]) == 0
    assert [hit["id"] for hit in json.loads(capsys.readouterr().out)["first_stage"]["hits"]] == ["b"]


def test_search_rerank_prints_both_stages(cli_env, capsys, monkeypatch):
    from fakes import FakeReranker

    from mmembed.rerankers import RERANKERS

    class TargetAware(FakeReranker):
        name = "target-aware"

        def score(self, query, items, *, progress=None):
            base = super().score(query, items, progress=progress)
            return [s if item.modality is query.target else s / 2 for s, item in zip(base, items, strict=True)]

    monkeypatch.setattr(RERANKERS, "unavailable_reason", lambda name, device="auto": None)
    monkeypatch.setattr(RERANKERS, "get", lambda name, **options: TargetAware())
    assert main(["search", "cat", "--target", "image", "-k", "3", "--depth", "5", "--rerank", "smolvlm-256m",
                 "--embedder", "mmembed-mini"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "3 results (mmembed-mini, mode natural, target image)"
    assert out[4] == "wrong-modality rate: 67% of the top 3 ('!' marks them)"
    assert out[5] == "reranked by target-aware (top 5 candidates):"
    assert out[6].startswith("  1.  ↑2 +1.0000  image") and "i-cat" in out[6]
    assert out[7].startswith("  2.  ↓1 +0.5000 !text") and "t-cat" in out[7]
    assert out[-1] == "wrong-modality rate: 67% of the top 3 ('!' marks them)"
    assert main(["search", "cat", "--target", "image", "-k", "2", "--rerank", "--json",
                 "--embedder", "mmembed-mini"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["reranked"]["status"] == "done" and data["query"]["rerank_depth"] == 10
    assert [hit["id"] for hit in data["reranked"]["hits"]] == ["i-cat", "t-cat"]


def test_search_rerank_unavailable_is_one_clear_line(cli_env, capsys):
    assert main(["search", "cat", "--rerank", "smolvlm-256m", "--embedder", "mmembed-mini"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["error: reranker 'smolvlm-256m' can't run here: weights not downloaded (offline) "
                   "(python -m mmembed prefetch --reranker smolvlm-256m)"]
    assert main(["search", "cat", "--rerank", "nope", "--embedder", "mmembed-mini"]) == 1
    assert capsys.readouterr().err.startswith("error: unknown reranker 'nope'; known: smolvlm-256m")
