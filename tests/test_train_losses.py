import math

import pytest

torch = pytest.importorskip("torch")

from mmembed.train.losses import info_nce  # noqa: E402


def _three_by_three():
    queries = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    candidates = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0.6, 0.8, 0]])
    return queries, candidates, torch.tensor([0, 1, 2])


def test_info_nce_equals_hand_computed_value():
    queries, candidates, targets = _three_by_three()
    # logits at temperature 0.5: q0 -> [2, 0, 1.2], q1 -> [0, 2, 1.6], q2 -> [0, 0, 0]
    loss0 = -2 + math.log(math.exp(2) + 1 + math.exp(1.2))
    loss1 = -2 + math.log(1 + math.exp(2) + math.exp(1.6))
    loss2 = math.log(3)
    expected = (loss0 + loss1 + loss2) / 3
    assert info_nce(queries, candidates, targets, temperature=0.5).item() == pytest.approx(expected, rel=1e-6)


def test_excluded_false_negatives_do_not_count():
    queries, candidates, targets = _three_by_three()
    exclude = torch.zeros(3, 3, dtype=torch.bool)
    exclude[0, 2] = True  # candidate 2 is another positive of query 0
    exclude[2, 2] = True  # excluding a query's own target must be ignored
    loss0 = -2 + math.log(math.exp(2) + 1)
    loss1 = -2 + math.log(1 + math.exp(2) + math.exp(1.6))
    expected = (loss0 + loss1 + math.log(3)) / 3
    got = info_nce(queries, candidates, targets, temperature=0.5, exclude=exclude).item()
    assert got == pytest.approx(expected, rel=1e-6)


def test_temperature_must_be_positive():
    queries, candidates, targets = _three_by_three()
    with pytest.raises(ValueError, match="temperature must be > 0"):
        info_nce(queries, candidates, targets, temperature=0.0)
