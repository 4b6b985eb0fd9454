"""The CRF explorer of notebook 04 (dlib.crf.explorer): its update function is DenseCRF with the sliders' settings,
the sliders start at and reach every published setting, and moving a slider refines the image again."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from crf_helpers import scene  # noqa: E402

from dlib import crf  # noqa: E402
from dlib.core import config, figures  # noqa: E402
from dlib.crf import explorer  # noqa: E402
from dlib.evaluation import metrics  # noqa: E402


@pytest.fixture(scope="module")
def small():
    image, label, probs = scene(0, h=30, w=40, classes=4)
    return explorer.downscale(image, probs, label)


@pytest.mark.parametrize("settings", [{}, {"w1": 0.0, "w2": 0.0}, {"w1": 9.0, "theta_alpha": 12.0, "theta_beta": 6.0},
                                      {"theta_gamma": 1.0, "iterations": 1}])
def test_update_gives_densecrfs_labels_for_those_settings(small, settings):
    full = {**explorer.defaults(), **settings}
    expected = crf.DenseCRF(**full, backend="torch").predict(small.image, small.probs)
    assert np.array_equal(explorer.update(small, settings), expected)


def test_update_without_pairwise_terms_is_the_argmax_and_rejects_unknown_settings(small):
    assert np.array_equal(explorer.update(small, {"w1": 0.0, "w2": 0.0}), small.probs.argmax(0))
    with pytest.raises(ValueError, match="unknown CRF settings"):
        explorer.update(small, {"sigma": 3.0})


def test_sliders_cover_the_defaults_and_every_published_setting():
    values = [explorer.defaults()] + [vars(s) for s in config.CRF_SETTINGS.values()]
    for name, (lo, hi, step) in explorer.SLIDERS.items():
        assert lo < hi and 0 < step < hi - lo
        for v in values:
            if v.get(name) is not None:
                assert lo <= v[name] <= hi, (name, v[name])
    assert set(explorer.SLIDERS) == set(explorer.PARAMETERS)


def test_downscale_keeps_probabilities_and_shrinks_to_the_longest_side():
    image, label, probs = scene(1, h=90, w=120, classes=3)
    small = explorer.downscale(image, probs, label, max_side=40)
    assert small.image.shape == (30, 40, 3) and small.probs.shape == (3, 30, 40) and small.label.shape == (30, 40)
    assert small.scale == pytest.approx(1 / 3)
    assert np.allclose(small.probs.sum(0), 1, atol=1e-5) and small.probs.min() >= 0
    assert set(np.unique(small.label)) <= set(np.unique(label))
    same = explorer.downscale(image, probs, label, max_side=200)
    assert same.scale == 1.0 and np.array_equal(same.image, image)


def test_miou_is_the_voc_measure(small):
    labels = explorer.update(small, {})
    expected = metrics.scores(metrics.confusion_matrix(labels, small.label, 4))["mean_iou"]
    assert explorer.miou(small, labels) == pytest.approx(expected)
    assert np.isnan(explorer.miou(small._replace(label=None), labels))


def test_the_grid_draws_each_setting_with_update_and_passes_the_figure_check(small):
    settings = [{}, {"w1": 0.0}]
    fig, shown = explorer.grid_figure(small, settings, caption="synthetic scene, smoke profile", ncols=2)
    try:
        assert figures.problems(figures.describe(fig), "smoke") == []
        assert list(shown) == ["no CRF: argmax of the softmax", "configured defaults", "w1=0"]
        assert np.array_equal(shown["w1=0"], explorer.update(small, {"w1": 0.0}))
    finally:
        plt.close(fig)


def test_moving_a_slider_refines_again_with_the_new_settings(small):
    live = explorer.Explorer(small)
    assert live.settings == pytest.approx(explorer.defaults())
    first = live.image.value
    live.sliders["w1"].value = 0.0
    live.sliders["w2"].value = 0.0
    assert live.settings["w1"] == 0.0 and live.settings["w2"] == 0.0
    assert np.array_equal(live.labels, explorer.update(small, live.settings))
    assert np.array_equal(live.labels, small.probs.argmax(0))
    assert live.image.value != first and "refined in" in live.status.value
    assert explorer.seconds_per_move(small, repeats=1) > 0
