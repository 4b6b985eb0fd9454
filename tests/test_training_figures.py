"""Notebook 05's figures draw what their tables hold: histogram counts, loss and lr curves, convergence points,
against numpy; and each passes the figure check with a title naming profile and split."""

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from dlib.core import figures
from dlib.training import training_figures

TITLE = "proxy train split, smoke profile"


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_object_sizes_count_each_split_into_the_log_bins():
    rng = np.random.default_rng(0)
    sizes = {"train": rng.uniform(0.05, 0.2, 50).tolist(), "val": rng.uniform(0.05, 0.4, 40).tolist()}
    edges = np.geomspace(0.04, 0.45, 13)
    fig = training_figures.object_sizes(sizes, title=TITLE, edges=edges)
    ax = fig.axes[0]
    for container, values in zip(ax.containers, sizes.values()):
        np.testing.assert_array_equal([b.get_height() for b in container], np.histogram(values, edges)[0])
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train split (50 objects)", "val split (40 objects)"]
    assert figures.problems(figures.describe(fig), "smoke") == []


def test_loss_and_lr_draw_each_log_and_say_the_loss_is_a_sum_over_outputs():
    it = np.arange(0, 101, 10)
    logs = {"LargeFOV": pd.DataFrame({"iteration": it, "loss": 8.0 - it / 20, "lr": 1e-2 * (1 - it / 100) ** 0.9}),
            "ASPP": pd.DataFrame({"iteration": it, "loss": 9.0 - it / 25, "lr": 1e-2 * (1 - it / 100) ** 0.9})}
    fig = training_figures.loss_and_lr(logs, outputs=4, title=TITLE)
    ax_loss, ax_lr = fig.axes
    for line, log in zip(ax_loss.get_lines(), logs.values()):
        np.testing.assert_allclose(line.get_xydata(), log[["iteration", "loss"]].to_numpy())
    for line, log in zip(ax_lr.get_lines(), logs.values()):
        np.testing.assert_allclose(line.get_xydata(), log[["iteration", "lr"]].to_numpy())
    assert "sum of 4 MSC outputs" in ax_loss.get_ylabel() and ax_loss.get_yscale() == "log"
    assert "one output" in training_figures.loss_and_lr(logs, outputs=1, title=TITLE).axes[0].get_ylabel()
    assert figures.problems(figures.describe(fig), "smoke") == []


def test_convergence_draws_every_checkpoint_and_shades_the_last_fifth():
    curves = {"ASPP (seed 0)": pd.DataFrame({"iteration": [120, 240, 360, 480, 600],
                                             "mean_iou": [30.0, 45.0, 52.0, 55.0, 55.5]}),
              "LargeFOV (seed 0)": pd.DataFrame({"iteration": [120, 240, 360, 480, 600],
                                                 "mean_iou": [28.0, 40.0, 50.0, 53.0, 53.2]})}
    fig = training_figures.convergence(curves, title="development: proxy val split, cpu profile")
    ax = fig.axes[0]
    for line, curve in zip(ax.get_lines(), curves.values()):
        np.testing.assert_allclose(line.get_xydata(), curve[["iteration", "mean_iou"]].to_numpy())
    x0, x1 = ax.patches[0].get_bbox().x0, ax.patches[0].get_bbox().x1  # the shaded last fifth: 80% to 100%
    np.testing.assert_allclose([x0, x1], [480, 600])
    fig.canvas.draw()
    assert ax.get_legend().get_window_extent().x0 >= ax.get_window_extent().x1  # beside the axes
    assert ax.get_ylim()[0] == 0
    assert figures.problems(figures.describe(fig), "cpu") == []
