"""dlib.core.figures: a saved figure names its profile and split, labels its axes with units, and has a colour bar
or legend where one applies; the check reads the matplotlib objects, and every committed figure carries it."""

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest

from dlib.core import figures, viz

REPO = Path(__file__).resolve().parents[1]
TITLE = "proxy val split, smoke profile"


@pytest.fixture
def new():
    made = []

    def make(*args, **kw):
        fig, axes = plt.subplots(*args, **kw)
        made.append(fig)
        return fig, axes

    yield make
    for fig in made:
        plt.close(fig)


def _problems(fig, profile="smoke"):
    return figures.problems(figures.describe(fig), profile)


def test_a_complete_curve_passes_and_each_missing_piece_is_named(new):
    fig, ax = new()
    ax.plot([0, 1], [0.2, 0.5], label="a")
    ax.plot([0, 1], [0.3, 0.4], label="b")
    ax.legend()
    ax.set(title=TITLE, xlabel="iteration (steps)", ylabel="mIoU (%)")
    assert _problems(fig) == []
    assert any("profile" in p for p in _problems(fig, "cpu"))  # the title says smoke, not cpu

    ax.get_legend().remove()
    ax.set_ylabel("mIoU")
    found = _problems(fig)
    assert len(found) == 2
    assert "no unit" in found[0] and "'mIoU'" in found[0]
    assert "2 labelled series without a legend" in found[1]


def test_a_title_must_name_the_data(new):
    fig, ax = new()
    ax.set_axis_off()
    ax.set_title("smoke profile")
    assert _problems(fig) == [figures.problems({"suptitle": "", "axes": [], "figure_legend": False}, "smoke")[1]]
    ax.set_title("a drawing of synthetic numbers, smoke profile")
    assert _problems(fig) == []


def test_a_categorical_axis_needs_a_label_but_no_unit(new):
    fig, ax = new()
    ax.bar(["baseline", "+MSC"], [40.0, 45.0])
    ax.set(title=TITLE, ylabel="mIoU (%)")
    assert _problems(fig) == ["axes 0 ('proxy val split, smoke profile'): the x axis shows values but has no label "
                              "(ax.set_xlabel)"]
    ax.set_xlabel("row")
    assert _problems(fig) == []


def test_a_scalar_image_needs_a_colour_bar_an_rgb_image_does_not(new):
    fig, (a, b) = new(1, 2)
    im = a.imshow(np.arange(4.0).reshape(2, 2), cmap="viridis")
    b.imshow(np.zeros((2, 2, 3)))
    for ax in (a, b):
        ax.set_axis_off()
    fig.suptitle(TITLE)
    found = _problems(fig)
    assert found == ["axes 0: colour-mapped data without a colour bar or legend (fig.colorbar)"]
    fig.colorbar(im, ax=a)
    assert _problems(fig) == []


def test_one_colour_bar_covers_images_with_the_same_map_and_range(new):
    fig, axes = new(1, 3)
    ims = [ax.imshow(np.random.default_rng(i).random((3, 3)), cmap="magma", vmin=0, vmax=1) for i, ax in
           enumerate(axes)]
    for ax in axes:
        ax.set_axis_off()
    fig.suptitle(TITLE)
    fig.colorbar(ims[0], ax=list(axes))
    assert _problems(fig) == []
    ims[2].set_clim(0, 2)  # another range: the bar does not describe it
    assert _problems(fig) == ["axes 2: colour-mapped data without a colour bar or legend (fig.colorbar)"]


def test_shared_axes_and_figure_labels_cover_their_neighbours(new):
    fig, axes = new(1, 2, sharey=True)
    for ax in axes:
        ax.plot([0, 1], [0, 1])
    axes[0].set_ylabel("recall (fraction)")
    fig.supxlabel("width (px)")
    fig.suptitle(TITLE)
    assert _problems(fig) == []


def test_save_figure_refuses_a_bad_figure_and_stores_the_description(new, tmp_path):
    fig, ax = new()
    ax.plot([0, 1], [0, 1])
    with pytest.raises(ValueError, match="x axis shows values but has no label"):
        viz.save_figure(fig, tmp_path / "bad.png", profile="smoke")
    assert list(tmp_path.iterdir()) == []
    ax.set(title=TITLE, xlabel="x (px)", ylabel="y (px)")
    png = viz.save_figure(fig, tmp_path / "good.png", profile="smoke")
    stored = figures.read_png(png)
    assert stored["profile"] == "smoke" and stored["axes"][0]["x"]["label"] == "x (px)"
    assert figures.problems(stored, "smoke") == []


COMMITTED = sorted(p for p in (REPO / "results" / "cpu").rglob("*.png") if "notebooks" not in p.parts)


@pytest.mark.skipif(not COMMITTED, reason="no committed results/cpu figures")
def test_every_committed_cpu_figure_was_checked_when_saved_and_passes():
    unchecked, failing = [], {}
    for png in COMMITTED:
        stored = figures.read_png(png)
        if stored is None:
            unchecked.append(str(png.relative_to(REPO)))
        elif figures.problems(stored, "cpu") or stored["profile"] != "cpu":
            failing[str(png.relative_to(REPO))] = figures.problems(stored, "cpu")
    assert not unchecked, f"saved without the figure check: {unchecked}"
    assert not failing, failing
