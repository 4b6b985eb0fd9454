"""dlib.experiments.ablation_figures: the ablation's figures show every seed, the mean with its 95% t-interval
and the paper's number beside it, on honest axes, and pass the figure check."""

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from scipy import stats as scipy_stats  # noqa: E402

from dlib.core import figures  # noqa: E402
from dlib.experiments import ablation_figures, ablation_tables  # noqa: E402

SEEDS = (0, 1, 2)
CAPTION = "proxy test split, smoke profile"


def _runs(rows, rng):
    """Fake scores of every row's training on SEEDS: {(key, seed): {...}} as run_trainings returns them."""
    runs = {}
    for row in rows:
        for s in SEEDS:
            runs[(row.training.key, s)] = {"status": "ok", "mean_iou": float(rng.uniform(0.2, 0.6)),
                                           "mean_iou_crf": float(rng.uniform(0.2, 0.6)), "model": "m"}
    return runs


def _t_interval(values):
    v = np.asarray(values, float)
    half = scipy_stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return v.mean() - half, v.mean() + half


@pytest.fixture(autouse=True)
def _close():
    yield
    plt.close("all")


def test_paired_differences_are_each_seeds_row_minus_its_reference():
    rows = ablation_tables.TABLE4
    runs = _runs(rows + ablation_tables.ONE_AT_A_TIME, np.random.default_rng(0))
    runs.pop((rows[2].training.key, 1))  # +COCO did not run on seed 1: no difference on that seed
    diffs = ablation_figures.paired_differences(rows, runs, SEEDS)
    assert len(diffs) == (len(rows) - 1) * len(SEEDS)
    msc = diffs[(diffs["row"] == "+MSC") & (diffs["seed"] == 2)].iloc[0]
    expected = 100 * (runs[(rows[1].training.key, 2)]["mean_iou"] - runs[(rows[0].training.key, 2)]["mean_iou"])
    assert msc["difference"] == pytest.approx(expected) and msc["paper"] == pytest.approx(71.27 - 68.72)
    assert math.isnan(diffs[(diffs["row"] == "+COCO") & (diffs["seed"] == 1)]["difference"].iloc[0])
    first = ablation_figures.paired_differences(ablation_tables.ONE_AT_A_TIME, runs, SEEDS, reference="first")
    base = ablation_tables.ONE_AT_A_TIME[0].training.key
    aug = [r for r in ablation_tables.ONE_AT_A_TIME if r.name == "+Aug"][0]
    got = first[(first["row"] == "+Aug") & (first["seed"] == 0)]["difference"].iloc[0]
    assert got == pytest.approx(100 * (runs[(aug.training.key, 0)]["mean_iou"] - runs[(base, 0)]["mean_iou"]))


def test_increments_figure_shows_seeds_mean_interval_and_the_paper_and_passes_the_check():
    rows = ablation_tables.TABLE4
    runs = _runs(rows, np.random.default_rng(1))
    fig = ablation_figures.plot_increments(rows, runs, SEEDS, caption=CAPTION)
    figures.check(fig, "smoke")
    ax = fig.axes[0]
    diffs = ablation_figures.paired_differences(rows, runs, SEEDS)
    msc = diffs[diffs["row"] == "+MSC"]["difference"].to_numpy()
    bars = [c for c in ax.containers if len(c.lines[0].get_ydata()) == 1 and not np.isnan(c.lines[0].get_ydata()[0])]
    mean_y = bars[0].lines[0].get_ydata()[0]
    assert mean_y == pytest.approx(msc.mean())
    segment = bars[0].lines[2][0].get_segments()[0]  # the error bar: (x, low) .. (x, high)
    assert (segment[0][1], segment[1][1]) == pytest.approx(_t_interval(msc))
    labels = ax.get_legend_handles_labels()[1]
    assert "paper, Table 4" in labels
    paper = [c for c in ax.collections if c.get_label() == "paper, Table 4"][0].get_offsets()[:, 1]
    assert list(paper) == pytest.approx([b.paper_miou - a.paper_miou for a, b in zip(rows, rows[1:])])
    points = np.concatenate([c.get_offsets()[:, 1] for c in ax.collections if c.get_label() != "paper, Table 4"
                             and len(c.get_offsets()) == len(SEEDS)])
    assert sorted(points) == pytest.approx(sorted(diffs["difference"]))  # every seed's difference, drawn once


def test_one_at_a_time_figure_has_no_paper_numbers():
    rows = ablation_tables.ONE_AT_A_TIME
    fig = ablation_figures.plot_increments(rows, _runs(rows, np.random.default_rng(2)), SEEDS, caption=CAPTION,
                                           reference="first", paper_label=None)
    figures.check(fig, "smoke")
    assert not any("paper" in lab for lab in fig.axes[0].get_legend_handles_labels()[1])


def test_table3_figure_puts_ours_and_the_papers_on_one_0_100_axis():
    rows = ablation_tables.TABLE3
    fig = ablation_figures.plot_table3(rows, _runs(rows, np.random.default_rng(3)), SEEDS, caption=CAPTION)
    figures.check(fig, "smoke")
    ours, paper = fig.axes[:2]
    assert ours.get_ylim() == (0, 100) and paper.get_ylim() == (0, 100)  # shared, from 0: nothing truncated
    assert "paper, Table 3" in paper.get_title()
    drawn = sorted(np.concatenate([c.get_offsets()[:, 1] for c in paper.collections]))
    assert drawn == pytest.approx(sorted(r.paper_miou for r in rows))


def test_convergence_figure_passes_the_check():
    curve = pd.DataFrame([{"seed": s, "iteration": it, "mean_iou": 10 + it / 10 + s} for s in SEEDS
                          for it in (20, 40, 60)])
    fig = ablation_figures.plot_convergence(curve, caption=CAPTION)
    figures.check(fig, "smoke")
    assert fig.axes[0].get_ylim()[0] == 0


def test_training_loss_figure_divides_by_the_loss_terms():
    curves = pd.DataFrame([{"row": row, "seed": s, "iteration": it, "loss": loss * terms, "loss_terms": terms}
                           for row, terms in (("baseline", 1), ("+MSC", 4)) for s in (0, 1)
                           for it, loss in ((1, 3.0), (2, 2.0))])
    fig = ablation_figures.plot_training_loss(curves, caption="proxy train split, smoke profile")
    figures.check(fig, "smoke")
    ax = fig.axes[0]
    ys = {tuple(line.get_ydata()) for line in ax.lines if len(line.get_ydata()) == 2}
    assert ys == {(3.0, 2.0)}  # the summed MSC loss, per output, is the baseline's
    assert "loss terms" in ax.get_ylabel()
