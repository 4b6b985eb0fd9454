"""The papers' coarse-to-fine CRF parameter search (dlib.crf.crossval), against the CRF run point by point."""

import numpy as np
import pandas as pd
import pytest
from crf_helpers import scene

from dlib import crf
from dlib.crf.crossval import (
    PAPER_SEARCH_RANGES,
    _widened,
    best_on_edge,
    cross_validate,
    edges,
    one_at_a_time,
    searched_values,
)
from dlib.evaluation import metrics


def _three_class_scenes(n=2):
    scenes = [scene(k, h=24, w=32, classes=3) for k in range(n)]
    return [s[0] for s in scenes], [s[2] for s in scenes], [s[1] for s in scenes]  # images, probs, labels


def _miou(model, images, probs, labels, num_classes=3):
    """The VOC measure of ``model`` over the images, by the one-image call and a confusion matrix."""
    conf = sum(metrics.confusion_matrix(model.predict(i, p), lab, num_classes)
               for i, p, lab in zip(images, probs, labels))
    return metrics.scores(conf)["mean_iou"]


def test_the_paper_ranges_are_the_matlab_ranges_expanded():
    # DeepLab v2, Sec. 4.1: w1 in [3:6], theta_alpha in [30:10:100], theta_beta in [3:6]: 4 x 8 x 4 points.
    v2 = PAPER_SEARCH_RANGES["v2"]
    assert v2["w1"] == (3, 4, 5, 6) and v2["theta_alpha"] == (30, 40, 50, 60, 70, 80, 90, 100)
    assert len(v2["w1"]) * len(v2["theta_alpha"]) * len(v2["theta_beta"]) == 128
    # DeepLab v1, Sec. 5: w1 in [5:10], theta_alpha in [50:10:100], theta_beta in [3:10].
    v1 = PAPER_SEARCH_RANGES["v1"]
    assert (v1["w1"][0], v1["w1"][-1], len(v1["theta_alpha"]), len(v1["theta_beta"])) == (5, 10, 6, 8)


def test_cross_validation_is_the_coarse_to_fine_grid_search():
    scenes = [scene(k, h=24, w=32, classes=3) for k in range(2)]
    images, labels, probs = [s[0] for s in scenes], [s[1] for s in scenes], [s[2] for s in scenes]
    kwargs = dict(w1_grid=(2, 6), theta_alpha_grid=(5, 15), theta_beta_grid=(5,), iterations=3, progress=False)
    result = cross_validate(images, probs, labels, workers=2, **kwargs)
    table = result.table
    coarse = table[table.stage == 1]
    assert sorted(zip(coarse.w1, coarse.theta_alpha)) == [(2, 5), (2, 15), (6, 5), (6, 15)]
    best1 = coarse.loc[coarse.mean_iou.idxmax()]
    fine = table[table.stage == 2]
    # Stage 2: half the coarse step (2 for w1, 5 for theta_alpha) around stage 1's best, positive values only.
    assert set(fine.w1) <= {best1.w1 - 2, best1.w1, best1.w1 + 2} and (fine.theta_alpha > 0).all()
    assert set(fine.theta_alpha) <= {best1.theta_alpha - 5, best1.theta_alpha, best1.theta_alpha + 5}
    assert len(fine) >= 2 and not set(zip(fine.w1, fine.theta_alpha)) & set(zip(coarse.w1, coarse.theta_alpha))
    # Every row is the mIoU of the CRF with those parameters, accumulated over both images.
    for row in table.itertuples():
        model = crf.DenseCRF(w1=row.w1, theta_alpha=row.theta_alpha, theta_beta=row.theta_beta, iterations=3)
        conf = sum(metrics.confusion_matrix(model.predict(i, p), lab, 3) for i, p, lab in zip(images, probs, labels))
        assert row.mean_iou == pytest.approx(metrics.scores(conf)["mean_iou"])
    assert result.best["mean_iou"] == table.mean_iou.max()
    base = sum(metrics.confusion_matrix(p.argmax(0), lab, 3) for p, lab in zip(probs, labels))
    assert result.baseline["mean_iou"] == pytest.approx(metrics.scores(base)["mean_iou"])
    serial = cross_validate(images, probs, labels, workers=1, **kwargs)
    assert serial.table.equals(table)


def test_widening_extends_a_grid_past_an_edge_optimum_until_it_is_bracketed():
    assert _widened([4, 8, 12], 12) == [4, 8, 12, 16]  # the last step again
    assert _widened([4, 8, 12], 4) == [2, 4, 8, 12]  # half the smallest: every parameter is positive
    assert _widened([4, 8, 12], 8) == [4, 8, 12]
    scenes = [scene(k, h=24, w=32, classes=3) for k in range(2)]
    images, labels, probs = [s[0] for s in scenes], [s[1] for s in scenes], [s[2] for s in scenes]
    kwargs = dict(theta_alpha_grid=(5,), theta_beta_grid=(5,), iterations=3, progress=False, refine=False, workers=1)
    # Start from the two smallest w1 values: the best sits on an edge and the grid grows toward it.
    narrow = cross_validate(images, probs, labels, w1_grid=(0.5, 1.0), widen=0, **kwargs)
    wide = cross_validate(images, probs, labels, w1_grid=(0.5, 1.0), widen=4, **kwargs)
    assert set(narrow.table.w1) == {0.5, 1.0} and len(wide.table) > len(narrow.table)
    assert wide.best["mean_iou"] >= narrow.best["mean_iou"]
    # Each added point is the CRF at that setting, like every other row; and widening stops once bracketed
    # or after 4 extensions.
    assert len(set(wide.table.w1)) <= 2 + 4
    if "w1" not in edges(wide.table):
        w = sorted(set(wide.table.w1))
        assert w[0] < wide.best["w1"] < w[-1]
    for row in wide.table.itertuples():
        model = crf.DenseCRF(w1=row.w1, theta_alpha=row.theta_alpha, theta_beta=row.theta_beta, iterations=3)
        conf = sum(metrics.confusion_matrix(model.predict(i, p), lab, 3) for i, p, lab in zip(images, probs, labels))
        assert row.mean_iou == pytest.approx(metrics.scores(conf)["mean_iou"])


def test_edges_names_the_parameters_whose_optimum_is_not_bracketed():
    import pandas as pd

    table = pd.DataFrame({"stage": [1] * 4, "w1": [4, 4, 8, 8], "theta_alpha": [10, 20, 10, 20],
                          "theta_beta": [3, 3, 3, 3], "mean_iou": [0.1, 0.2, 0.3, 0.25]})
    assert edges(table) == ["w1", "theta_alpha"]  # best (8, 10): both on an edge; theta_beta has one value


def test_searched_values_and_best_on_edge_by_hand():
    table = pd.DataFrame({"stage": [1, 1, 1, 2], "w1": [4.0, 8.0, 12.0, 10.0], "theta_alpha": [10.0, 10.0, 10.0, 10.0],
                          "theta_beta": [3.0, 5.0, 3.0, 4.0], "mean_iou": [0.1, 0.2, 0.3, 0.25]})
    searched = searched_values(table)
    assert searched == {"w1": [4.0, 8.0, 10.0, 12.0], "theta_alpha": [10.0], "theta_beta": [3.0, 4.0, 5.0]}
    # Best (12, 10, 3): w1 on the top edge, theta_beta on the bottom edge, theta_alpha scored at one value only.
    assert best_on_edge(searched, {"w1": 12.0, "theta_alpha": 10.0, "theta_beta": 3.0}) == ["w1", "theta_beta"]
    assert best_on_edge(searched, {"w1": 10.0, "theta_alpha": 10.0, "theta_beta": 4.0}) == []  # bracketed


def test_one_at_a_time_sweeps_each_parameter_around_the_base_crf():
    images, probs, labels = _three_class_scenes()
    base = crf.DenseCRF(w1=4.0, theta_alpha=10.0, theta_beta=5.0, w2=3.0, theta_gamma=1.0, iterations=3,
                        backend="torch")
    sweeps = {"w1": [0, 2], "theta_beta": [3, 20]}
    result = one_at_a_time(images, probs, labels, sweeps, base=base, workers=1)
    assert list(result) == ["w1", "theta_beta"]
    for name, values in sweeps.items():
        table = result[name]
        assert list(table.table[name]) == values and (table.table["stage"] == 1).all()
        for row in table.table.itertuples():
            held = {"w1": 4.0, "theta_alpha": 10.0, "theta_beta": 5.0, name: float(getattr(row, name))}
            assert (row.w1, row.theta_alpha, row.theta_beta) == (held["w1"], held["theta_alpha"], held["theta_beta"])
            # Each point is the base CRF with that one value changed, run image by image.
            model = crf.DenseCRF(**{**base.params, **base.options, name: getattr(row, name)})
            assert row.mean_iou == pytest.approx(_miou(model, images, probs, labels))
        base_conf = sum(metrics.confusion_matrix(p.argmax(0), lab, 3) for p, lab in zip(probs, labels))
        assert table.baseline["mean_iou"] == pytest.approx(metrics.scores(base_conf)["mean_iou"])
    with pytest.raises(ValueError, match="can sweep only"):
        one_at_a_time(images, probs, labels, {"w2": [1]}, base=base)


def test_cross_validation_checks_its_inputs():
    images, probs, labels = _three_class_scenes(1)
    with pytest.raises(ValueError, match="same non-zero number"):
        cross_validate(images, probs, labels + labels, progress=False)
    with pytest.raises(ValueError, match="match its image"):
        cross_validate(images, probs, [np.zeros((3, 3), np.uint8)], progress=False)


def _grid_table():
    rows = [{"stage": 1, "w1": a, "theta_alpha": b, "theta_beta": c, "mean_iou": 0.5 + 0.01 * a - 0.001 * abs(b - 60)
             - 0.002 * abs(c - 5), "pixel_acc": 0.9} for a in (3, 5, 7) for b in (30, 60, 90) for c in (3, 5, 7)]
    return pd.DataFrame(rows)


def test_grid_neighbours_are_the_next_values_in_one_parameter():
    from dlib.crf.crossval import grid_neighbours

    table = _grid_table()
    best = {"w1": 5.0, "theta_alpha": 60.0, "theta_beta": 5.0}
    got = {(p["changed"], p["w1"], p["theta_alpha"], p["theta_beta"]) for p in grid_neighbours(table, best)}
    assert got == {("w1", 3, 60, 5), ("w1", 7, 60, 5), ("theta_alpha", 5, 30, 5), ("theta_alpha", 5, 90, 5),
                   ("theta_beta", 5, 60, 3), ("theta_beta", 5, 60, 7)}
    corner = {"w1": 7.0, "theta_alpha": 90.0, "theta_beta": 7.0}  # on an edge: one neighbour per parameter
    assert len(grid_neighbours(table, corner)) == 3


def test_optimum_margin_against_per_image_scores_by_hand():
    from dlib.crf.crossval import optimum_margin, per_image_miou, read_optimum

    images, probs, labels = _three_class_scenes(3)
    fixed = dict(w2=2.0, theta_gamma=1.5, iterations=3, backend="torch")
    cv = cross_validate(images, probs, labels, w1_grid=(0.0, 5.0), theta_alpha_grid=(8.0,), theta_beta_grid=(15.0,),
                        refine=False, workers=1, progress=False, **fixed)
    per = per_image_miou(images, probs, labels, [{"w1": 5.0, "theta_alpha": 8.0, "theta_beta": 15.0}], **fixed)
    for i in range(3):
        model = crf.DenseCRF(w1=5.0, theta_alpha=8.0, theta_beta=15.0, **fixed)
        assert per[0, i] == pytest.approx(_miou(model, images[i:i + 1], probs[i:i + 1], labels[i:i + 1]))
    margins = optimum_margin(images, probs, labels, cv.table, cv.best, **fixed)
    assert len(margins) == 1 and margins["changed"].iloc[0] == "w1"
    other = cv.table.loc[cv.table["w1"] != cv.best["w1"], "mean_iou"].iloc[0]
    assert margins["pooled_difference"].iloc[0] == pytest.approx(100 * (cv.best["mean_iou"] - other))
    row = margins.iloc[0]
    assert row["per_image_min"] <= row["per_image_mean"] <= row["per_image_max"]
    assert row["ci_low"] <= row["per_image_mean"] <= row["ci_high"]
    assert row["resolved"] == bool(row["ci_low"] > 0 or row["ci_high"] < 0)
    text = read_optimum(margins, cv.best, [], 3)
    assert f"{row['pooled_difference']:.2f} mIoU points" in text
    assert ("do not tell" in text) != bool(row["resolved"])
