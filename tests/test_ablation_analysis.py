"""dlib.ablation_analysis: the diagnoses of the ablation (MSC at train vs test time, look-alike classes, plateau)."""

import numpy as np
import pytest

from dlib import ablation, ablation_analysis, ablation_tables, config


def test_msc_diagnosis_scores_both_networks_both_ways(tmp_path):
    cfg = config.resolve("smoke", overrides={"ablation.seeds": [0]})
    ablation.run_trainings(cfg, [(r.training, 0, None) for r in ablation_tables.TABLE4[:2]], tmp_path)
    df = ablation_analysis.msc_diagnosis(cfg, tmp_path)
    assert df.shape == (2, 2) and ((df.to_numpy() >= 0) & (df.to_numpy() <= 100)).all()
    # The +MSC network scored with MSC at test time is the +MSC row of the table (the same evaluation).
    res = ablation.run_training(cfg, ablation_tables.TABLE4[1].training, 0, tmp_path)
    assert df.iloc[1]["test MSC (max fusion)"] == pytest.approx(100 * res["mean_iou"])


def test_class_group_iou_splits_look_alike_classes_from_the_others():
    # 21 classes: look-alikes (CONTEXT_PAIRS) 6, 8, 10, 11, 12, 17, 18, 19 at 0.2; others (1..20 minus those)
    # at 0.8 except class 3 at NaN (absent) and class 4 at 0.5; background (0) at 0.99 is in neither group.
    iou = np.full(21, 0.8)
    iou[0] = 0.99
    iou[[6, 8, 10, 11, 12, 17, 18, 19]] = 0.2
    iou[3], iou[4] = np.nan, 0.5
    groups = ablation_analysis.class_group_iou(iou, 21)
    others = [0.8] * 10 + [0.5]  # 12 other classes minus the absent one
    assert groups["look-alike classes IoU %"] == pytest.approx(20.0)
    assert groups["other classes IoU %"] == pytest.approx(100 * sum(others) / len(others))


def test_last_fifth_gain_is_taken_on_the_mean_over_seeds_at_80_percent():
    import pandas as pd

    # Two seeds, checkpoints at 100..500: mean at 400 = (40 + 44) / 2 = 42, at 500 = (41 + 46) / 2 = 43.5.
    curve = pd.DataFrame({"seed": [0] * 5 + [1] * 5, "iteration": [100, 200, 300, 400, 500] * 2,
                          "mean_iou": [10, 20, 30, 40, 41, 12, 22, 33, 44, 46]})
    assert ablation_analysis.last_fifth_gain(curve) == pytest.approx(1.5)
    with pytest.raises(ValueError, match="checkpoint_every"):
        ablation_analysis.last_fifth_gain(curve[curve["iteration"] != 400])


def test_convergence_summary_takes_every_trainings_gain_on_the_mean_over_seeds():
    import pandas as pd

    # Training a: seeds 0/1 at 800 -> 40/44 (mean 42), at 1000 -> 41/45.5 (mean 43.25): gain 1.25, not converged.
    # Training b: 50/52 -> 50.5/52.3: gain 0.4, converged.
    table = pd.DataFrame({"training": ["a"] * 4 + ["b"] * 4, "seed": [0, 0, 1, 1] * 2,
                          "iteration": [800, 1000] * 4, "miou": [40, 41, 44, 45.5, 50, 50.5, 52, 52.3]})
    s = ablation_analysis.convergence_summary(table).set_index("training")
    assert s.loc["a", "last_fifth_gain"] == pytest.approx(1.25) and not s.loc["a", "converged"]
    assert s.loc["b", "last_fifth_gain"] == pytest.approx(0.4) and s.loc["b", "converged"]
    assert s.loc["a", "miou_at_80"] == pytest.approx(42.0) and s.loc["a", "miou_at_100"] == pytest.approx(43.25)
    assert ablation_analysis.CONVERGED_POINTS == 1.0


def test_every_training_is_scored_on_the_development_split_at_80_and_100_percent(tmp_path):
    cfg = config.resolve("smoke", overrides={"ablation.seeds": [0]})
    training = ablation_tables.TABLE4[0].training
    res = ablation.run_training(cfg, training, 0, tmp_path)
    table = ablation_analysis.convergence_table({(training.key, 0): res}, [training], [0])
    assert list(table.columns) == ["training", "seed", "iteration", "miou"]
    iters = ablation_tables.training_config(cfg, training, 0).train.iterations
    assert sorted(table["iteration"]) == [round(0.8 * iters), iters]
    # Each is that checkpoint scored on the development split, as the per-checkpoint curve scores it.
    curve = ablation_analysis.convergence(cfg, training, [0], tmp_path, split="val").set_index("iteration")
    for row in table.itertuples():
        assert row.miou == pytest.approx(curve.loc[row.iteration, "mean_iou"])
