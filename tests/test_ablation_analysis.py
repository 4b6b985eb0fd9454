"""dlib.experiments.ablation_analysis: the diagnoses of the ablation (MSC at train vs test time, look-alike classes,
plateau)."""

import numpy as np
import pytest

from dlib.core import config
from dlib.experiments import ablation, ablation_analysis, ablation_runs, ablation_tables


def test_msc_diagnosis_scores_both_networks_both_ways(tmp_path):
    cfg = config.resolve("smoke", overrides={"ablation.seeds": [0]})
    ablation_runs.run_trainings(cfg, [(r.training, 0, None) for r in ablation_tables.TABLE4[:2]], tmp_path)
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
