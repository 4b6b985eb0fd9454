"""dlib.experiments.budget: seconds per step of each network and the ablation's minutes."""

import pytest

from dlib.core import config
from dlib.experiments import ablation_tables, budget


def test_ablation_budget_is_seeds_times_iterations_times_seconds_per_step(monkeypatch):
    cfg = config.resolve("smoke")
    timed = []

    def fake(cfg_, name, *, msc=False, steps=5):
        timed.append((name, msc))
        return 0.01 * (2 if msc else 1)

    monkeypatch.setattr(budget, "step_seconds", fake)
    table = budget.ablation_budget(cfg)
    trainings = list(dict.fromkeys(r.training for rows in ablation_tables.TABLES.values() for r in rows))
    assert list(table["training"]) == [t.key for t in trainings]
    assert len(timed) == len(set(timed))  # each (network, MSC) timed once
    for _, row in table.iterrows():
        assert row["minutes"] == pytest.approx(row["seeds"] * row["iterations"] * row["s/step"] / 60)
    assert set(table["s/step"]) == {0.01, 0.02}


def test_step_seconds_times_a_real_step():
    cfg = config.resolve("smoke")
    plain = budget.step_seconds(cfg, "small_resnet_baseline", steps=2, warmup=1)
    assert 0 < plain < 60
