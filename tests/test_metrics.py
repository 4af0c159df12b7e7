"""mmembed.metrics: Recall@k and the wrong-modality rate on hand-made rankings, and the training
validation going through the same code (same values, same key names)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from mmembed.metrics import MetricsAccumulator, hit_at_k, wrong_modality_share
from mmembed.types import Modality

T, IMG, IT = Modality.TEXT, Modality.IMAGE, Modality.IMAGE_TEXT


def test_hit_at_k_counts_any_positive_in_the_top_k():
    assert hit_at_k(["a", "b", "c"], {"c", "z"}, 3) is True
    assert hit_at_k(["a", "b", "c"], {"c", "z"}, 2) is False
    assert hit_at_k(["a"], {"a"}, 0) is False and hit_at_k(["a"], {"a"}, -1) is False


def test_wrong_modality_share():
    assert wrong_modality_share([T, IMG, IMG, IT], IMG, 2) == 0.5
    assert wrong_modality_share([T, IMG, IMG, IT], IMG) == 0.5
    assert wrong_modality_share([T], IMG, 10) == 1.0
    assert wrong_modality_share([T], None) is None and wrong_modality_share([], IMG) is None


def test_accumulator_averages_per_task_and_target_in_mbeir_order():
    metrics = MetricsAccumulator(ks=(5, 1))
    assert metrics.depth == 5
    metrics.add("t->t", ["x", "p"], {"p"}, T, [T, T])
    metrics.add("t->i", ["p", "y"], {"p"}, IMG, [IMG, T])
    metrics.add("t->i", ["y", "z"], {"p"}, IMG, [T, T])
    metrics.add("custom", ["p"], {"p"})  # no target: recall only
    report = metrics.report("filtered")
    assert list(report.recall) == ["t->i", "t->t", "custom", "overall"]
    assert report.recall["t->i"] == {1: 0.5, 5: 0.5}
    assert report.recall["t->t"] == {1: 0.0, 5: 1.0}
    assert report.recall["overall"] == {1: 0.5, 5: 0.75}
    assert report.query_counts == {"t->i": 2, "t->t": 1, "custom": 1, "overall": 4}
    # image: [image, text] -> 0 @1, 0.5 @5; [text, text] -> 1 @1, 1 @5.  text: [text, text] -> 0, 0
    assert report.wrong_modality == {"image": {1: 0.5, 5: 0.75}, "text": {1: 0.0, 5: 0.0},
                                     "overall": {1: pytest.approx(1 / 3), 5: 0.5}}
    assert report.to_dict()["recall"]["overall"] == {"R@1": 0.5, "R@5": 0.75}
    assert len(metrics) == 4


def test_bad_k_is_refused():
    with pytest.raises(ValueError, match="positive"):
        MetricsAccumulator(ks=(0, 5))


def test_training_validation_uses_the_same_metrics():
    pytest.importorskip("torch")
    from mmembed.models.mini import MODALITY_INDEX
    from mmembed.train.trainer import retrieval_metrics

    # pool: 0 text, 1 image, 2 image; queries: 0 (t->i, positive 2), 1 (t->t, positive 0)
    pool = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)
    queries = np.array([[0.9, 0.1, 0.5], [1, 0, 0]], dtype=np.float32)  # q0 ranks 0, 2, 1; q1 ranks 0 first
    data = SimpleNamespace(
        queries=[SimpleNamespace(task="t->i"), SimpleNamespace(task="t->t")],
        positives=[np.array([2]), np.array([0])],
        query_target=np.array([MODALITY_INDEX[IMG], MODALITY_INDEX[T]]),
        pool_modality=np.array([MODALITY_INDEX[T], MODALITY_INDEX[IMG], MODALITY_INDEX[IMG]]))
    data.not_negative = lambda row: set(data.positives[row].tolist())  # no ignored candidates here
    out = retrieval_metrics(data, np.array([0, 1]), queries, pool, ks=(1, 2))
    assert out["recall"] == {"t->i": {"R@1": 0.0, "R@2": 1.0}, "t->t": {"R@1": 1.0, "R@2": 1.0},
                             "overall": {"R@1": 0.5, "R@2": 1.0}}
    # q0's top-1 is the text item (wrong), its top-3 holds 1 text of 3; q1 asked for text and got text first
    assert out["wrong_modality_rate"]["image"] == {"@1": 1.0, "@5": pytest.approx(0.3333, abs=1e-4)}
    assert out["wrong_modality_rate"]["text"] == {"@1": 0.0, "@5": pytest.approx(0.6667, abs=1e-4)}
    assert out["queries"] == {"t->i": 1, "t->t": 1, "overall": 2}


def test_training_tasks_default_to_the_mbeir_labels(tmp_path):
    from mmembed.train.data import load_training_queries

    (tmp_path / "q.jsonl").write_text('{"qid": "a", "query_txt": "x", "target_modality": "image", '
                                      '"pos_cand_list": ["d"]}\n')
    assert load_training_queries(tmp_path / "q.jsonl")[0].task == "t->i"
