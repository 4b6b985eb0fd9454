"""dlib.experiments.convergence: the scores at 80% and 100% of a run on the development split, and the plateau
criterion."""

import pytest

from dlib.core import config
from dlib.experiments import ablation, ablation_analysis, ablation_tables, convergence


def test_last_fifth_gain_is_taken_on_the_mean_over_seeds_at_80_percent():
    import pandas as pd

    # Two seeds, checkpoints at 100..500: mean at 400 = (40 + 44) / 2 = 42, at 500 = (41 + 46) / 2 = 43.5.
    curve = pd.DataFrame({"seed": [0] * 5 + [1] * 5, "iteration": [100, 200, 300, 400, 500] * 2,
                          "mean_iou": [10, 20, 30, 40, 41, 12, 22, 33, 44, 46]})
    assert convergence.last_fifth_gain(curve) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="checkpoint_every"):
        convergence.last_fifth_gain(curve[curve["iteration"] != 400])


def test_convergence_summary_takes_every_trainings_gain_on_the_mean_over_seeds():
    import pandas as pd

    # Training a: seeds 0/1 at 800 -> 40/44 (mean 42), at 1000 -> 41/45.5 (mean 43.25): gain 1.25, not converged.
    # Training b: 50/52 -> 50.5/52.3: gain 0.4, converged.
    table = pd.DataFrame({"training": ["a"] * 4 + ["b"] * 4, "seed": [0, 0, 1, 1] * 2,
                          "iteration": [800, 1000] * 4, "miou": [40, 41, 44, 45.5, 50, 50.5, 52, 52.3]})
    s = convergence.convergence_summary(table).set_index("training")
    assert s.loc["a", "last_fifth_gain"] == pytest.approx(1.25) and not s.loc["a", "converged"]
    assert s.loc["b", "last_fifth_gain"] == pytest.approx(0.4) and s.loc["b", "converged"]
    assert s.loc["a", "miou_at_80"] == pytest.approx(42.0) and s.loc["a", "miou_at_100"] == pytest.approx(43.25)
    assert convergence.CONVERGED_POINTS == 1.0


def test_every_training_is_scored_on_the_development_split_at_80_and_100_percent(tmp_path):
    cfg = config.resolve("smoke", overrides={"ablation.seeds": [0]})
    training = ablation_tables.TABLE4[0].training
    res = ablation.run_training(cfg, training, 0, tmp_path)
    table = convergence.convergence_table({(training.key, 0): res}, [training], [0])
    assert list(table.columns) == ["training", "seed", "iteration", "miou"]
    iters = ablation_tables.training_config(cfg, training, 0).train.iterations
    assert sorted(table["iteration"]) == [round(0.8 * iters), iters]
    # Each is that checkpoint scored on the development split, as the per-checkpoint curve scores it.
    curve = ablation_analysis.convergence(cfg, training, [0], tmp_path, split="val").set_index("iteration")
    for row in table.itertuples():
        assert row.miou == pytest.approx(curve.loc[row.iteration, "mean_iou"])
