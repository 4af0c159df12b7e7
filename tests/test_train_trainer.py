import json

import pytest

torch = pytest.importorskip("torch")

from train_helpers import HashTextEncoder, build_tiny_set, tiny_model_config  # noqa: E402

from mmembed.models.mini import build_model, load_model_dir  # noqa: E402
from mmembed.train.data import TrainingDataError, load_training_set  # noqa: E402
from mmembed.train.pipeline import Pipeline, PipelineConfig  # noqa: E402
from mmembed.train.trainer import StageConfig, Trainer  # noqa: E402


@pytest.fixture
def tiny(tmp_path):
    root = build_tiny_set(tmp_path / "data")
    arrays = load_training_set(root, image_size=16)
    vectors = HashTextEncoder(16).encode(arrays.texts)
    return root, arrays, vectors


def _trainer(arrays, vectors, out, steps=4, seed=0, init_seed=0, **extra):
    torch.manual_seed(init_seed)
    model = build_model(tiny_model_config())
    config = StageConfig(steps=steps, batch_size=6, random_negatives=4, lr=1e-2, head_lr=1e-2, warmup=0.0,
                         checkpoint_every=1, seed=seed, **extra)
    return Trainer(arrays, vectors, model, tiny_model_config(), config, out)


def test_one_step_reduces_the_loss(tiny, tmp_path):
    _, arrays, vectors = tiny
    trainer = _trainer(arrays, vectors, tmp_path / "out", augment=False)
    trainer.model.train()
    with torch.no_grad():
        before = trainer.loss_at(0).item()
    trainer.train_step()
    with torch.no_grad():
        after = trainer.loss_at(0).item()
    assert after < before - 1e-3


def test_resume_continues_the_same_run(tiny, tmp_path):
    _, arrays, vectors = tiny
    whole = _trainer(arrays, vectors, tmp_path / "whole")
    assert whole.run()["finished"] is True

    first = _trainer(arrays, vectors, tmp_path / "split")
    assert first.run(stop_after=2) == {"finished": False, "step": 2}
    # a new process would build a fresh, differently initialised model: the checkpoint must win
    second = _trainer(arrays, vectors, tmp_path / "split", init_seed=123)
    result = second.run()
    assert result["finished"] is True and second.step == 4
    for key, value in whole.model.state_dict().items():
        assert torch.allclose(value.float(), second.model.state_dict()[key].float(), atol=1e-6), key
    assert [h["loss"] for h in whole.history if "loss" in h] == [h["loss"] for h in second.history if "loss" in h]
    _model, config, raw = load_model_dir(tmp_path / "split")
    assert config.dim == 16 and raw["fingerprint"] == result["fingerprint"]
    validation = raw["validation"]  # the same metrics and key names as `mmembed eval`
    assert set(validation) == {"mode", "recall", "queries", "wrong_modality_rate"}
    assert set(validation["recall"]["overall"]) == {"R@1", "R@5", "R@10"}
    assert validation["queries"]["overall"] == sum(n for task, n in validation["queries"].items() if task != "overall")
    assert all("->" in task and not task.startswith(("text", "image")) for task in validation["queries"]
               if task != "overall")
    assert set(validation["wrong_modality_rate"]["overall"]) == {"@1", "@5"}


def test_checkpoint_of_another_configuration_is_not_used(tiny, tmp_path):
    _, arrays, vectors = tiny
    _trainer(arrays, vectors, tmp_path / "out").run(stop_after=2)
    messages = []
    other = _trainer(arrays, vectors, tmp_path / "out", steps=5)
    other.log_fn = messages.append
    assert other.try_resume() is False
    assert "another configuration" in messages[0]


def test_pipeline_runs_all_stages_and_writes_mined_negatives(tiny, tmp_path):
    root, _, _ = tiny
    small = {"batch_size": 6, "checkpoint_every": 2, "warmup": 0.0}
    config = PipelineConfig(
        data=root, out=tmp_path / "mini", model=tiny_model_config(), top_n=6, threshold=3,
        rand=StageConfig(steps=2, random_negatives=4, **small), hard=StageConfig(negatives="hard", steps=2, **small),
        ct=StageConfig(negatives="hard", steps=2, text_task_share=0.5, **small))
    pipeline = Pipeline(config, text_encoder=HashTextEncoder(16), log=lambda m: None)
    with pytest.raises(Exception, match="run it first"):
        pipeline.run("hard")
    results = pipeline.run("all")
    assert results["mine"]["queries"] == 18
    assert results["mine"]["c1_wrong_modality"] > 0
    rows = [json.loads(line) for line in (tmp_path / "mini" / "mined" / "queries.jsonl").read_text().splitlines()]
    pool_modality = {json.loads(line)["did"]: json.loads(line)["modality"]
                     for line in (root / "pool.jsonl").read_text().splitlines()}
    for row in rows:
        assert not set(row["neg_cand_list"]) & set(row["pos_cand_list"])
    assert sum(len(r["neg_cand_list"]) for r in rows) == results["mine"]["negatives_written"]
    assert any(pool_modality[n] != r["target_modality"] for r in rows for n in r["neg_cand_list"])
    for stage in ("m_rand", "m_hard", "m_hard_ct"):
        assert (tmp_path / "mini" / stage / "model.safetensors").is_file()
    # M_hard starts from the very weights M_rand started from
    init = (tmp_path / "mini" / "init" / "model.safetensors").read_bytes()
    assert init and pipeline.run("rand") == {"skipped": True}


def test_bad_training_rows_are_all_reported(tmp_path):
    root = build_tiny_set(tmp_path / "data")
    with (root / "queries.jsonl").open("a") as handle:
        handle.write('{"qid": "x", "query_txt": "a", "target_modality": "image", "pos_cand_list": ["nope"]}\n')
        handle.write("not json\n")
    with pytest.raises(TrainingDataError) as info:
        load_training_set(root, image_size=16)
    assert "line 20: not valid JSON" in str(info.value)


def test_export_ships_weights_config_and_training_manifest(tiny, tmp_path):
    from mmembed.train.export import export_model

    root, arrays, vectors = tiny
    trainer = _trainer(arrays, vectors, tmp_path / "model", steps=1)
    trainer.run()
    (root / "sources.txt").write_text("openclipart:a.svg\nwordnet:cat.n.01\n")
    (root / "image_hashes.txt").write_text("abc\n")
    (root / "manifest.json").write_text(json.dumps({"fingerprint": "f00", "pool": 12}))
    result = export_model(tmp_path / "model", root, tmp_path / "assets", {"shipped_stage": "model"})
    shipped = tmp_path / "assets"
    assert (shipped / "training_sources.txt").read_text() == "openclipart:a.svg\nwordnet:cat.n.01\n"
    config = json.loads((shipped / "config.json").read_text())
    assert config["training_set"]["fingerprint"] == "f00" and config["shipped_stage"] == "model"
    assert config["fingerprint"] == result["fingerprint"]
    assert (shipped / "model.safetensors").stat().st_mode & 0o777 == 0o644
    from safetensors.torch import load_file

    trained = load_file(str(tmp_path / "model" / "model.safetensors"))
    stored = load_file(str(shipped / "model.safetensors"))
    assert config["weights_dtype"] == "float16" and stored.keys() == trained.keys()
    assert all(stored[k].dtype == torch.float16 and torch.allclose(stored[k].float(), trained[k], atol=1e-3, rtol=1e-2)
               for k in trained if trained[k].is_floating_point())
    load_model_dir(shipped)
    (root / "manifest.json").unlink()
    with pytest.raises(Exception, match="lacks manifest.json"):
        export_model(tmp_path / "model", root, tmp_path / "again")
