"""The recipe on real backbones (mmembed finetune), with tiny checkpoints built here: full fine-tuning of a
tiny CLIP and LoRA on a tiny GME; 2 gloo processes equal 1 process with the same global batch; a stopped
run resumes exactly; mining writes modality-aware negatives; trained models load back through the registry."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmembed.embedders import EMBEDDERS
from mmembed.train.recipe import RecipeConfig
from mmembed.train.run_recipe import RecipeRun, run_stage
from mmembed.types import Item, Query

HERE = Path(__file__).resolve().parent
PROJECT = HERE.parent
WORDS = ["cat", "the", "dog", "sun", "car", "tree"]
COLOURS = {"cat": (200, 30, 30), "the": (30, 200, 30), "dog": (30, 30, 200), "sun": (220, 220, 20),
           "car": (20, 200, 200), "tree": (120, 60, 160)}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, Path]:
    """A pool with text, image and image+text candidates and queries over four task types."""
    from PIL import Image

    root = tmp_path_factory.mktemp("ft-data")
    (root / "img").mkdir()
    pool, queries = [], []
    for i, word in enumerate(WORDS):
        Image.new("RGB", (40, 40), COLOURS[word]).save(root / "img" / f"{word}.png")
        pool += [{"did": f"t-{word}", "txt": f"a {word} here", "img_path": None, "modality": "text"},
                 {"did": f"i-{word}", "txt": None, "img_path": f"img/{word}.png", "modality": "image"},
                 {"did": f"it-{word}", "txt": f"the {word}", "img_path": f"img/{word}.png", "modality": "image,text"}]
        queries += [
            {"qid": f"q{i}a", "query_txt": f"{word}", "query_img_path": None, "query_modality": "text",
             "pos_cand_list": [f"i-{word}"], "task": "t->i", "target_modality": "image"},
            {"qid": f"q{i}b", "query_txt": f"about a {word}", "query_img_path": None, "query_modality": "text",
             "pos_cand_list": [f"t-{word}"], "task": "t->t", "target_modality": "text"},
            {"qid": f"q{i}c", "query_txt": None, "query_img_path": f"img/{word}.png", "query_modality": "image",
             "pos_cand_list": [f"t-{word}"], "task": "i->t", "target_modality": "text"},
            {"qid": f"q{i}d", "query_txt": f"{word} picture", "query_img_path": None, "query_modality": "text",
             "pos_cand_list": [f"it-{word}"], "task": "t->(i,t)", "target_modality": "image,text"}]
    (root / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in pool))
    (root / "queries.jsonl").write_text("".join(json.dumps(r) + "\n" for r in queries))
    return root / "pool.jsonl", root / "queries.jsonl"


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory) -> Path:
    from test_clip_embedder import _build_clip

    return _build_clip(tmp_path_factory.mktemp("ft-clip"))


CONFIG = RecipeConfig(steps=4, ct_steps=2, global_batch=8, accumulation=2, lr=1e-3, checkpoint_every=100,
                      top_n=10, threshold=5)


def weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return {k: v for f in sorted(folder.glob("*.safetensors")) for k, v in load_file(str(f)).items()}


def embed(embedder) -> np.ndarray:
    items = [Item("x", text="a cat here"), Item("y", image=None, text="the sun")]
    return np.vstack([embedder.embed_items(items), embedder.embed_query(Query(text="dog", target="image"))])


def test_full_fine_tuning_changes_the_model_and_loads_back_through_the_registry(data, tiny_clip, tmp_path):
    pool, queries = data
    run = RecipeRun("clip-b32", pool, queries, tmp_path / "run", model_id=str(tiny_clip))
    summary = run_stage(run, "rand", CONFIG)
    assert summary["steps"] == 4 and np.isfinite(summary["final_loss"])
    log = json.loads((tmp_path / "run" / "rand" / "train_log.json").read_text())
    assert [row["step"] for row in log["history"]] == [1, 2, 3, 4]
    trained = EMBEDDERS.factory("clip-b32")(info=EMBEDDERS.info("clip-b32"), model_id=str(tmp_path / "run/rand/model"),
                                             device="cpu")
    base = EMBEDDERS.factory("clip-b32")(info=EMBEDDERS.info("clip-b32"), model_id=str(tiny_clip), device="cpu")
    assert trained.fingerprint != base.fingerprint
    assert np.abs(embed(trained) - embed(base)).max() > 1e-3


def test_stopped_run_resumes_exactly(data, tiny_clip, tmp_path):
    pool, queries = data
    whole = RecipeRun("clip-b32", pool, queries, tmp_path / "whole", model_id=str(tiny_clip))
    run_stage(whole, "rand", CONFIG)
    from mmembed.train.backbone import trainable_for
    from mmembed.train.recipe import StageTrainer, load_examples

    split = RecipeRun("clip-b32", pool, queries, tmp_path / "split", model_id=str(tiny_clip))
    from mmembed.corpus import load_corpus

    corpus = load_corpus(pool)
    first = StageTrainer(trainable_for(split.fresh_embedder()), load_examples(queries, corpus), corpus, CONFIG,
                         "rand", tmp_path / "split" / "rand")
    assert first.run(stop_after=2) == {"stage": "rand", "stopped_at": 2}
    assert json.loads((tmp_path / "split/rand/checkpoint/state.json").read_text())["step"] == 2
    run_stage(split, "rand", CONFIG)  # a fresh process would do the same: load the checkpoint, go on
    a, b = weights(tmp_path / "whole/rand/model"), weights(tmp_path / "split/rand/model")
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_allclose(a[key], b[key], atol=1e-6, err_msg=key)


def test_mining_writes_modality_aware_negatives_and_hard_and_ct_run(data, tiny_clip, tmp_path):
    pool, queries = data
    run = RecipeRun("clip-b32", pool, queries, tmp_path / "run", model_id=str(tiny_clip))
    run_stage(run, "all", CONFIG)
    summary = json.loads((tmp_path / "run/mine/summary.json").read_text())
    assert summary["queries"] == 24
    rows = [json.loads(line) for line in (tmp_path / "run/mine/queries.jsonl").read_text().splitlines()]
    assert [r["qid"] for r in rows] == [json.loads(line)["qid"] for line in queries.read_text().splitlines()]
    modality = {json.loads(line)["did"]: json.loads(line)["modality"] for line in pool.read_text().splitlines()}
    for row in rows:
        assert not set(row["neg_cand_list"]) & set(row["pos_cand_list"])
        c1 = [n for n in row["neg_cand_list"] if modality[n] != row["target_modality"]]
        assert len(c1) <= CONFIG.max_c1
    assert sum(len(r["neg_cand_list"]) for r in rows) == summary["negatives_written"] > 0
    for stage in ("hard", "ct"):
        assert json.loads((tmp_path / f"run/{stage}/train_log.json").read_text())["steps"] == \
            (CONFIG.ct_steps if stage == "ct" else CONFIG.steps)
    assert (tmp_path / "run/ct/model/model.safetensors").is_file()


def test_two_gloo_processes_equal_one_process_with_the_same_global_batch(data, tiny_clip, tmp_path):
    pool, queries = data
    single = RecipeRun("clip-b32", pool, queries, tmp_path / "one", model_id=str(tiny_clip), device="cpu")
    run_stage(single, "rand", CONFIG)
    env = {**os.environ, "PYTHONPATH": str(PROJECT), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "mmembed", "finetune", "--embedder", "clip-b32", "--model-id", str(tiny_clip),
               "--pool", str(pool), "--queries", str(queries), "--out", str(tmp_path / "two"), "--stage", "rand",
               "--device", "cpu", "--steps", str(CONFIG.steps), "--global-batch", str(CONFIG.global_batch),
               "--accumulation", str(CONFIG.accumulation), "--lr", str(CONFIG.lr)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=600, cwd=PROJECT)
    assert done.returncode == 0, done.stderr[-3000:]
    one_log = json.loads((tmp_path / "one/rand/train_log.json").read_text())
    two_log = json.loads((tmp_path / "two/rand/train_log.json").read_text())
    assert two_log["world_size"] == 2 and one_log["world_size"] == 1
    np.testing.assert_allclose([r["loss"] for r in two_log["history"]], [r["loss"] for r in one_log["history"]],
                               atol=1e-4)
    a, b = weights(tmp_path / "one/rand/model"), weights(tmp_path / "two/rand/model")
    for key in a:
        # An attention key bias adds q·b to every key alike, which softmax ignores: its true gradient is 0 and
        # what it gets is rounding noise, which Adam scales up to full-size steps. It changes no output.
        if not key.endswith("k_proj.bias"):
            np.testing.assert_allclose(a[key], b[key], atol=1e-4, err_msg=key)
    factory, info = EMBEDDERS.factory("clip-b32"), EMBEDDERS.info("clip-b32")
    one = factory(info=info, model_id=str(tmp_path / "one/rand/model"), device="cpu")
    two = factory(info=info, model_id=str(tmp_path / "two/rand/model"), device="cpu")
    np.testing.assert_allclose(embed(one), embed(two), atol=1e-4)


def test_lora_adapters_train_save_and_load_back_changing_the_embeddings(data, tmp_path_factory, tmp_path):
    pytest.importorskip("peft")
    from test_gme import CAP, build_tiny_gme

    gme_dir = tmp_path_factory.mktemp("ft-gme")
    build_tiny_gme(gme_dir)
    pool, queries = data
    config = RecipeConfig(steps=2, global_batch=4, accumulation=1, lr=5e-3, checkpoint_every=100)
    run = RecipeRun("gme-2b", pool, queries, tmp_path / "run", model_id=str(gme_dir), device="cpu", lora_rank=4)
    summary = run_stage(run, "rand", config)
    assert np.isfinite(summary["final_loss"])
    adapter = tmp_path / "run/rand/model"
    assert (adapter / "adapter_config.json").is_file() and (adapter / "adapter_model.safetensors").is_file()
    tensors = weights(adapter)
    assert tensors and all("lora_" in key for key in tensors)
    factory, info = EMBEDDERS.factory("gme-2b"), EMBEDDERS.info("gme-2b")
    base = factory(info=info, model_id=str(gme_dir), device="cpu", **CAP)
    tuned = factory(info=info, model_id=str(gme_dir), device="cpu", adapter=str(adapter), **CAP)
    assert tuned.fingerprint != base.fingerprint
    assert np.abs(embed(tuned) - embed(base)).max() > 1e-4
