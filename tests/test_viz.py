"""dlib.core.viz: figures saved as PNG + PDF atomically, the class legend, the palette colouring, the drawings."""

import matplotlib.pyplot as plt
import numpy as np
import pytest

from dlib.core import config, viz
from dlib.experiments import results


@pytest.fixture
def fig():
    figure, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    ax.set(title="a line, synthetic, smoke profile", xlabel="x (px)", ylabel="y (px)")
    yield figure
    plt.close(figure)


def test_save_figure_writes_png_and_pdf_beside_it(tmp_path, fig):
    png = viz.save_figure(fig, tmp_path / "sub" / "curve.png", profile="smoke")
    assert png == tmp_path / "sub" / "curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "sub" / "curve.pdf").read_bytes()[:5] == b"%PDF-"
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["curve.pdf", "curve.png"]  # no temporaries


def test_save_figure_pdf_is_the_same_on_a_rerun(tmp_path, fig):
    viz.save_figure(fig, tmp_path / "a.png", profile="smoke")
    first = (tmp_path / "a.pdf").read_bytes()
    viz.save_figure(fig, tmp_path / "a.png", profile="smoke")
    assert (tmp_path / "a.pdf").read_bytes() == first  # no creation date in the file


def test_save_figure_refuses_a_non_png_path_and_writes_nothing_when_drawing_fails(tmp_path, fig, monkeypatch):
    with pytest.raises(ValueError, match=r"\.png"):
        viz.save_figure(fig, tmp_path / "curve.pdf", profile="smoke")
    real = fig.savefig

    def fails_on_pdf(buf, *, format, **kw):
        if format == "pdf":
            raise RuntimeError("cannot draw")
        return real(buf, format=format, **kw)

    monkeypatch.setattr(fig, "savefig", fails_on_pdf)
    with pytest.raises(RuntimeError):
        viz.save_figure(fig, tmp_path / "curve.png", profile="smoke")
    assert list(tmp_path.iterdir()) == []


def test_results_figure_goes_through_save_figure(tmp_path, fig):
    out = results.Results(config.resolve("smoke"), "99_test", root=tmp_path)
    png = out.figure("curve", fig)
    assert png == tmp_path / "curve.png" and (tmp_path / "curve.pdf").is_file()


def test_colorize_uses_the_voc_palette():
    # VOCdevkit's colour map: background black, aeroplane (128, 0, 0), person (192, 128, 128), void cream.
    label = np.array([[0, 1], [15, 255]])
    expected = np.array([[[0, 0, 0], [128, 0, 0]], [[192, 128, 128], [224, 224, 192]]], dtype=np.uint8)
    np.testing.assert_array_equal(viz.colorize(label), expected)


def _legend_names(legend):
    return [t.get_text() for t in legend.get_texts()]


def test_class_legend_has_one_entry_per_class_shown_in_class_order():
    a = np.array([[0, 0], [15, 255]])
    b = np.array([[3, 3], [0, 15]])
    figure, axes = plt.subplots(1, 2)
    legend = viz.class_legend(figure, [a, b])
    assert _legend_names(legend) == ["background", "bird", "person", "void"]
    colours = [tuple(np.round(np.array(h.get_facecolor()[:3]) * 255).astype(int)) for h in legend.legend_handles]
    assert colours[1] == (128, 128, 0) and colours[2] == (192, 128, 128)  # bird, person in VOCdevkit's map
    assert _legend_names(viz.class_legend(axes[0], b)) == ["background", "bird", "person"]  # one map, on an axes
    plt.close(figure)


def test_image_grid_adds_a_legend_of_the_class_maps_only():
    image = np.zeros((4, 4, 3), np.uint8)
    label = np.full((4, 4), 7)
    label[0, 0] = 0
    figure = viz.image_grid([[image, label]])
    assert [_legend_names(lg) for lg in figure.legends] == [["background", "car"]]
    plt.close(figure)
    figure = viz.image_grid([[image, label]], legend=False)
    assert figure.legends == []
    plt.close(figure)


def test_style_context_sets_and_restores_rcparams():
    before = plt.rcParams["font.size"]
    with viz.style():
        assert plt.rcParams["font.size"] == viz.STYLE["font.size"]
        assert plt.rcParams["pdf.fonttype"] == 42
    assert plt.rcParams["font.size"] == before


def test_aspp_drawing_has_one_branch_per_rate_and_the_tap_spacing():
    figure, ax = plt.subplots()
    viz.plot_aspp(ax, rates=(2, 4, 8, 12))
    texts = [t.get_text() for t in ax.texts]
    assert [t for t in texts if t.startswith("3×3 conv")] == [f"3×3 conv\nrate {r}" for r in (2, 4, 8, 12)]
    assert "taps 96 px apart" in texts  # rate 12 on stride-8 features: 8 * 12 px
    assert sum(len(c.get_offsets()) for c in ax.collections) == 4 * 9  # 3x3 taps per branch
    plt.close(figure)


def test_pipeline_drawing_names_the_four_stages():
    figure, ax = plt.subplots()
    viz.plot_pipeline(ax, rates=(6, 12, 18, 24), output_stride=8)
    text = " ".join(t.get_text() for t in ax.texts)
    for stage in ("atrous conv", "ASPP", "rates 6, 12, 18, 24", "upsampling x8", "CRF"):
        assert stage in text
    plt.close(figure)


def test_split_caption_names_the_data_split_and_profile_of_the_config():
    assert viz.split_caption(config.resolve("cpu")) == "proxy test split, cpu profile"
    assert viz.split_caption(config.resolve("smoke"), "train") == "proxy train split, smoke profile"
    dev = config.resolve("cpu", overrides={"data.val_split": "val"})
    assert viz.split_caption(dev) == "proxy val split, cpu profile"
    assert viz.split_caption(config.resolve("gpu")) == "voc val split, gpu profile"


def test_drawings_take_a_title_and_captions_pass_the_figure_check():
    from dlib.core import figures

    cfg = config.resolve("smoke")
    for draw in (viz.plot_pipeline, viz.plot_aspp):
        figure = draw(title=f"a drawing: {viz.synthetic_caption(cfg, 'a drawing')}")
        assert figure.axes[0].get_title() == "a drawing: synthetic (a drawing), smoke profile"
        assert figures.problems(figures.describe(figure), "smoke") == []
        plt.close(figure)
    assert viz.synthetic_caption(config.resolve("cpu")) == "synthetic (made-up numbers), cpu profile"


def test_demo_caption_says_whether_the_pairs_are_voc_or_generated():
    from types import SimpleNamespace

    cfg = config.resolve("cpu")
    voc = SimpleNamespace(source="PASCAL VOC 2012 train split (../shared/data/voc2012-train-subset)")
    proxy = SimpleNamespace(source="built-in proxy data set (generated; not VOC)")
    assert viz.demo_caption(voc, cfg) == "PASCAL VOC 2012 train split, cpu profile"
    assert viz.demo_caption(proxy, cfg) == "proxy samples (generated: synthetic), cpu profile"
