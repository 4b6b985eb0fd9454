"""Notebook 07's figures draw what their tables hold: bar heights, dot positions, curves and the faded trimap image
against values worked out by hand or by brute force."""

import matplotlib.colors as mcolors
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from dlib.evaluation import failure_figures, stride_bound


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def test_class_iou_bars_draw_percent_and_mark_the_thin_classes():
    class_iou = pd.DataFrame({"class": ["background", "aeroplane", "bicycle"], "before_crf": [0.9, 0.5, 0.2],
                              "after_crf": [0.95, np.nan, 0.1]})
    fig = failure_figures.class_iou_bars(class_iou, [2], title="t")
    ax = fig.axes[0]
    before, after = ax.containers  # one bar series per column, in the legend's order
    np.testing.assert_allclose([b.get_height() for b in before], [90, 50, 20])
    assert [round(b.get_x() + b.get_width() / 2) for b in after] == [0, 2]  # no bar where the IoU is NaN
    np.testing.assert_allclose([b.get_height() for b in after], [95, 10])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["background", "aeroplane", "bicycle"]
    red = [mcolors.same_color(t.get_color(), "crimson") for t in ax.get_xticklabels()]
    assert red == [False, False, True]
    assert ax.get_title() == "t"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["DeepLab (before CRF)", "after the dense CRF"]


def test_class_iou_bars_keep_the_legend_off_the_bars():
    class_iou = pd.DataFrame({"class": [f"c{k}" for k in range(21)], "LargeFOV": np.linspace(1, 0.05, 21),
                              "ASPP": np.linspace(0.9, 0.1, 21)})
    fig = failure_figures.class_iou_bars(class_iou, [], title="t", series={"LargeFOV": "LargeFOV", "ASPP": "ASPP"})
    fig.canvas.draw()
    ax = fig.axes[0]
    legend = ax.get_legend().get_window_extent()
    assert legend.x0 >= ax.get_window_extent().x1  # right of the axes: no bar can sit under it
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["LargeFOV", "ASPP"]


def test_recall_vs_width_puts_each_object_and_each_bin_where_the_tables_say():
    objects = pd.DataFrame({"class": [2, 5, 5, 9], "width": [1.0, 10.0, 20.0, 2.0],
                            "recall_model": [0.1, 0.8, 0.9, 0.3]})
    bins = pd.DataFrame({"prediction": ["model", "model", "crf", "crf"], "objects": [2, 0, 2, 1],
                         "median_width": [1.5, np.nan, 1.5, 15.0], "pixel_recall": [0.2, np.nan, 0.4, 0.85]})
    fig = failure_figures.recall_vs_width(objects, bins, {2: "bicycle", 9: "chair"},
                                          {"model": "before", "crf": "after"}, title="t")
    ax = fig.axes[0]
    grey, bicycle, chair = ax.collections
    np.testing.assert_allclose(grey.get_offsets(), [[10.0, 0.8], [20.0, 0.9]])
    np.testing.assert_allclose(bicycle.get_offsets(), [[1.0, 0.1]])
    np.testing.assert_allclose(chair.get_offsets(), [[2.0, 0.3]])
    before, after = ax.get_lines()
    np.testing.assert_allclose(before.get_xydata(), [[1.5, 0.2]])  # the empty bin is not drawn
    np.testing.assert_allclose(after.get_xydata(), [[1.5, 0.4], [15.0, 0.85]])
    labels = ax.get_legend_handles_labels()[1]
    assert "bicycle (1 objects)" in labels and "pixel recall per width bin, after" in labels
    assert ax.get_xscale() == "log"


def test_trimap_figure_fades_the_image_outside_a_brute_force_band():
    label = np.zeros((12, 12), np.uint8)
    label[4:8, 3:9] = 1
    image = np.full((12, 12, 3), 200, np.uint8)
    trimap = pd.DataFrame({"width": [0.0, 2.0] * 2, "mean_iou": [0.5, 0.6, 0.7, 0.8],
                           "method": ["before"] * 2 + ["after"] * 2})
    fig = failure_figures.trimap_figure(trimap, image, label, band_width=1, image_id="2007_000123", title="t")
    shown = np.asarray(fig.axes[0].get_images()[0].get_array())
    edge = [(y, x) for y in range(12) for x in range(12) for v, u in ((y + 1, x), (y, x + 1), (y - 1, x), (y, x - 1))
            if 0 <= v < 12 and 0 <= u < 12 and label[v, u] != label[y, x]]
    band = np.array([[any((y - v) ** 2 + (x - u) ** 2 <= 1 for v, u in edge) for x in range(12)] for y in range(12)])
    np.testing.assert_array_equal(shown[..., 0], np.where(band, 200, 255 - 55 // 4))
    assert fig.axes[0].get_title() == "trimap band of 1 px (2007_000123)"
    lines = fig.axes[1].get_lines()
    assert [line.get_label() for line in lines] == ["before", "after"]
    np.testing.assert_allclose(lines[1].get_xydata(), [[0.0, 70.0], [2.0, 80.0]])


def test_stride_bound_figure_sorts_the_classes_and_draws_the_band_curve():
    label = np.zeros((32, 32), np.uint8)
    label[8:24] = 15  # person: kept whole; the 1-px bicycle line is lost (see test_stride_bound)
    label[28] = 2
    bound = stride_bound.on_labels([label], ["a"], stride=8, num_classes=21, widths=[0, 2], min_area=20)
    fig = failure_figures.stride_bound_figure(bound, {2: "bicycle", 9: "chair"}, stride=8, suptitle="s")
    bars = fig.axes[0].patches
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["bicycle", "background", "person"]
    np.testing.assert_allclose([b.get_height() for b in bars], [0.0, 100 * 480 / 512, 100.0])
    assert [mcolors.same_color(b.get_facecolor(), "crimson") for b in bars] == [True, False, False]
    np.testing.assert_allclose(fig.axes[2].get_lines()[0].get_xydata()[:, 0], [0, 2])
    assert fig._suptitle.get_text() == "s"
