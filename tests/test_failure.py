"""Failure analysis: per-object recall and per-image scores against brute-force counts, and the tables of
notebook 07 (recall by width and by class, the trimap gain, the summary) against hand-made tables."""

import math

import numpy as np
import pandas as pd
import pytest

from dlib.evaluation import failure

# ----------------------------------------------------------------------------------------------
# Objects, recall, worst images
# ----------------------------------------------------------------------------------------------

def scene():
    label = np.zeros((40, 60), np.uint8)
    yy, xx = np.mgrid[0:40, 0:60]
    label[(yy - 20) ** 2 + (xx - 15) ** 2 <= 8 ** 2] = 8  # a "cat" disc, radius 8
    label[5, 30:55] = 2  # a 1-px "bicycle" line, 25 px
    label[20:26, 35:41] = 5  # two "bottle" squares, 6 x 6 and 3 x 3
    label[32:35, 50:53] = 5
    label[0, 0] = 9  # a one-pixel "chair"
    label[30:32, 0:60] = 255  # void band
    return label


def test_object_table_counts_each_component():
    label = scene()
    pred = np.zeros_like(label)
    pred[label == 8] = 8
    pred[5, 30:40] = 2  # 10 of the 25 line pixels
    pred[20:23, 35:41] = 5  # half of the big square
    pred[0:20, 0:60][pred[0:20, 0:60] == 0] = 0
    table = failure.object_table(label, {"net": pred}, image_id="img", min_area=2)
    assert list(table["class"]) == [2, 5, 5, 8]  # background, void and the 1-px chair (min_area) are not rows
    assert (table["image_id"] == "img").all()
    by = {(r["class"], r["area"]): r for _, r in table.iterrows()}
    # Brute force: pixels of each component, and how many of them the prediction got right.
    assert by[(8, int((label == 8).sum()))]["recall_net"] == pytest.approx(1.0)
    assert by[(2, 25)]["recall_net"] == pytest.approx(10 / 25)
    assert by[(5, 36)]["recall_net"] == pytest.approx(18 / 36)
    assert by[(5, 9)]["recall_net"] == pytest.approx(0.0)
    assert by[(2, 25)]["width"] == pytest.approx(1.0, abs=0.05)
    assert by[(8, int((label == 8).sum()))]["width"] == pytest.approx(16, rel=0.05)
    single = failure.object_table(label, pred)  # one unnamed prediction, min_area 1: the chair pixel counts
    assert "recall" in single.columns and len(single) == 5
    assert failure.object_table(label).columns.tolist() == ["image_id", "class", "object", "area",
                                                            "skeleton_length", "width"]


def test_object_table_rejects_bad_input():
    label = scene()
    with pytest.raises(ValueError, match="same|size"):
        failure.object_table(label, np.zeros((5, 5), np.uint8))
    with pytest.raises(ValueError, match="num_classes"):
        failure.object_table(label, num_classes=6)
    with pytest.raises(ValueError, match="2-D"):
        failure.object_table(label[None])


def test_object_tables_concatenates_with_names():
    labels = [scene(), np.zeros((10, 10), np.uint8)]
    preds = [scene(), np.zeros((10, 10), np.uint8)]
    names = [f"c{k}" for k in range(21)]
    table = failure.object_tables(labels, {"a": preds}, ids=["x", "y"], class_names=names, min_area=2)
    assert len(table) == 4 and set(table["image_id"]) == {"x"}
    assert list(table["name"]) == ["c2", "c5", "c5", "c8"]
    assert (table["recall_a"] == 1.0).all()
    with pytest.raises(ValueError, match="one per image"):
        failure.object_tables(labels, {"a": preds[:1]})


def test_recall_by_width_by_hand():
    table = pd.DataFrame({"width": [0.5, 1.5, 1.9, 10.0], "area": [10, 30, 10, 100],
                          "recall": [0.0, 0.5, 1.0, 0.9]})
    bins = failure.recall_by_width(table, [0, 1, 2, 5, 20])
    assert bins["objects"].tolist() == [1, 2, 0, 1]
    assert bins["median_width"].iloc[1] == pytest.approx(1.7)
    assert bins["mean_recall"].iloc[1] == pytest.approx(0.75)
    assert bins["pixel_recall"].iloc[1] == pytest.approx((30 * 0.5 + 10 * 1.0) / 40)
    assert np.isnan(bins["mean_recall"].iloc[2])
    with pytest.raises(ValueError, match="increasing"):
        failure.recall_by_width(table, [2, 1])


def test_image_scores_rank_worst_first_like_a_brute_force_iou():
    rng = np.random.default_rng(3)
    labels = [rng.integers(0, 4, (6, 7)) for _ in range(5)]
    labels[0][0, :] = 255
    preds = [np.where(rng.random(lab.shape) < 0.3 * k, rng.integers(0, 4, lab.shape), lab).clip(0, 3)
             for k, lab in enumerate(labels)]
    preds = [np.where(lab == 255, 0, p) for p, lab in zip(preds, labels)]
    ranked = failure.image_scores(preds, labels, 4, ids=list("abcde"))

    def brute(pred, label):
        keep = label != 255
        ious = []
        for c in range(4):
            t, p = (label == c) & keep, (pred == c) & keep
            if (t | p).any():
                ious.append((t & p).sum() / (t | p).sum())
        return np.mean(ious), (pred == label)[keep].mean()

    expected = sorted(((brute(p, lab)[0], i) for i, (p, lab) in enumerate(zip(preds, labels))))
    assert ranked["index"].tolist() == [i for _, i in expected]
    for _, row in ranked.iterrows():
        miou, acc = brute(preds[row["index"]], labels[row["index"]])
        assert row["mean_iou"] == pytest.approx(miou)
        assert row["pixel_acc"] == pytest.approx(acc)
        assert row["image_id"] == "abcde"[row["index"]]
    assert ranked["mean_iou"].is_monotonic_increasing


def test_image_grid_lays_out_the_gallery():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dlib.core import viz

    label = np.zeros((6, 6), np.uint8)
    label[2:4, 2:4] = 15
    fig = viz.image_grid([[np.zeros((6, 6, 3), np.uint8), label], [label]], col_titles=["image", "label"],
                         row_titles=["a", "b"])
    axes = np.array(fig.axes).reshape(2, 2)
    assert [ax.get_title() for ax in axes[0]] == ["image", "label"]
    assert axes[1, 0].get_ylabel() == "b"
    # A class map is drawn in the VOC palette: class 15 (person) is (192, 128, 128).
    shown = axes[0, 1].get_images()[0].get_array()
    assert tuple(shown[2, 2]) == (192, 128, 128)
    assert not axes[1, 1].axison  # the short row's empty cell is hidden
    plt.close(fig)
    with pytest.raises(ValueError, match="at least one"):
        viz.image_grid([])


# ----------------------------------------------------------------------------------------------
# Tables of notebook 07
# ----------------------------------------------------------------------------------------------

def objects_by_hand():
    """Two thin objects (1 and 2 px, 10 and 30 px^2) and one wide one (20 px, 100 px^2)."""
    return pd.DataFrame({"width": [1.0, 2.0, 20.0], "area": [10, 30, 100],
                         "recall_model": [0.2, 0.1, 0.9], "recall_crf": [0.0, 0.0, 1.0],
                         "recall_bound": [1.0, 0.7, 1.0]})


def test_pixel_recall_weights_by_area():
    table = objects_by_hand()
    assert failure.pixel_recall(table.head(2), "recall_model") == pytest.approx((10 * 0.2 + 30 * 0.1) / 40)
    assert math.isnan(failure.pixel_recall(table.head(0), "recall_model"))


def test_recall_by_width_of_stacks_each_prediction_by_hand():
    table = pd.DataFrame({"width": [0.5, 1.5, 1.9, 10.0], "area": [10, 30, 10, 100],
                          "recall_a": [0.0, 0.5, 1.0, 0.9], "recall_b": [1.0, 1.0, 0.0, 0.0]})
    bins = failure.recall_by_width_of(table, [0, 1, 2, 20], ("a", "b"))
    assert bins["prediction"].tolist() == ["a"] * 3 + ["b"] * 3
    assert bins["objects"].tolist() == [1, 2, 1] * 2
    # a: 0; (30 x 0.5 + 10 x 1) / 40; 0.9.  b: 1; 30 / 40; 0.
    np.testing.assert_allclose(bins["pixel_recall"], [0.0, 0.625, 0.9, 1.0, 0.75, 0.0])
    np.testing.assert_allclose(bins["mean_recall"], [0.0, 0.75, 0.9, 1.0, 0.5, 0.0])


def test_objects_by_class_by_hand():
    objects = pd.DataFrame({"class": [2, 5, 2, 9, 0], "width": [1.0, 10.0, 3.0, 2.0, 50.0],
                            "area": [10, 100, 30, 5, 400], "recall_x": [0.2, 1.0, 0.6, 0.0, 1.0]})
    names = [f"c{k}" for k in range(10)]
    iou = np.linspace(0, 0.9, 10)  # class k has IoU k / 10
    table = failure.objects_by_class(objects, names, {"pr": "recall_x"}, {"iou": iou})
    assert table.columns.tolist() == ["class", "objects", "median_width_px", "pr", "iou"]
    assert table["class"].tolist() == ["c2", "c5", "c9"]  # class order; background (0) is not a class here
    assert table["objects"].tolist() == [2, 1, 1]
    assert table["median_width_px"].tolist() == [2.0, 10.0, 2.0]
    np.testing.assert_allclose(table["pr"], [(10 * 0.2 + 30 * 0.6) / 40, 1.0, 0.0])
    np.testing.assert_allclose(table["iou"], [0.2, 0.5, 0.9])


def test_width_iou_correlation_is_spearmans_rho():
    by_class = pd.DataFrame({"median_width_px": [1.0, 2.0, 3.0, 4.0], "iou_before": [0.1, 0.4, 0.3, 0.9]})
    # Rank differences 0, -1, 1, 0: rho = 1 - 6 x 2 / (4 (16 - 1)) = 0.8.
    assert failure.width_iou_correlation(by_class) == pytest.approx(0.8)
    by_class["iou_before"] = 0.5
    assert math.isnan(failure.width_iou_correlation(by_class))


def test_rank_classes_drops_unscored_and_sorts():
    table = pd.DataFrame({"class": ["a", "b", "c", "d"], "after_crf": [0.7, np.nan, 0.1, 0.4]})
    assert failure.rank_classes(table)["class"].tolist() == ["c", "d", "a"]


def band_by_brute_force(label, width):
    """Pixels within ``width`` (Euclidean) of a pixel whose 4-neighbour has another label."""
    h, w = label.shape
    edge = [(y, x) for y in range(h) for x in range(w)
            if any(0 <= y + dy < h and 0 <= x + dx < w and label[y + dy, x + dx] != label[y, x]
                   for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)))]
    return np.array([[any((y - v) ** 2 + (x - u) ** 2 <= width ** 2 for v, u in edge) for x in range(w)]
                     for y in range(h)])


def test_trimap_table_matches_a_brute_force_band_iou():
    label = np.zeros((9, 9), np.uint8)
    label[3:6, 2:7] = 1
    perfect, empty = [label], [np.zeros_like(label)]
    table = failure.trimap_table({"perfect": perfect, "empty": empty}, [label], [0, 1, 2], 2)
    assert table["method"].tolist() == ["perfect"] * 3 + ["empty"] * 3
    for width in (0, 1, 2):
        band = band_by_brute_force(label, width)
        rows = table[table["width"] == width].set_index("method")
        background, objects = (band & (label == 0)).sum(), (band & (label == 1)).sum()
        assert rows.at["perfect", "mean_iou"] == pytest.approx(1.0)
        # All background: IoU_bg = band background / band; IoU_1 = 0 (in the label, never predicted).
        assert rows.at["empty", "mean_iou"] == pytest.approx(background / (background + objects) / 2)
        assert rows.at["empty", "pixels"] == band.sum()


def test_crf_gain_and_widest_band_share_by_hand():
    trimap = pd.DataFrame({"width": [0.0, 2.0, 4.0] * 2, "method": ["b"] * 3 + ["a"] * 3,
                           "mean_iou": [0.5, 0.6, 0.7, 0.55, 0.58, 0.7], "pixels": [5, 9, 14, 5, 9, 14]})
    gain = failure.crf_gain(trimap, "b", "a")
    np.testing.assert_allclose(gain["crf_gain_points"], [5.0, -2.0, 0.0], atol=1e-12)
    assert gain.index.tolist() == [0.0, 2.0, 4.0]
    labels = [np.zeros((4, 4), np.uint8), np.full((4, 4), 255, np.uint8)]
    labels[1][0, :] = 3  # 16 + 4 = 20 scored pixels, of which the 4-px band holds 14
    assert failure.widest_band_share(trimap, labels) == pytest.approx(14 / 20)


def test_summary_tables_by_hand():
    objects = objects_by_hand()
    class_iou = pd.DataFrame({"class": ["background", "aeroplane", "bicycle"], "before_crf": [0.9, 0.5, 0.2],
                              "after_crf": [0.95, 0.5, 0.1]})
    worst = pd.DataFrame({"index": [1, 0], "image_id": ["b", "a"], "mean_iou": [0.2, 0.4],
                          "mean_iou_after_crf": [0.25, 0.3], "classes": [[0], [0, 2]]})
    gain = pd.DataFrame({"crf_gain_points": [1.5, -0.5]}, index=pd.Index([0.0, 4.0], name="width"))
    summary = failure.summary_tables(class_iou, [2], objects, worst, gain, stride=8)
    assert summary["thin_classes"] == {"bicycle": {"iou_before": 0.2, "iou_after": 0.1}}
    # Narrower than 3 px: the 10 and 30 px^2 objects; 12 px and wider: the 100 px^2 one.
    assert summary["recall_narrower_than_3px"] == pytest.approx(
        {"objects": 2, "before": (2 + 3) / 40, "after": 0.0, "stride8_bound": (10 + 21) / 40})
    assert summary["recall_12px_and_wider"] == pytest.approx(
        {"objects": 1, "before": 0.9, "after": 1.0, "stride8_bound": 1.0})
    assert summary["worst_images"] == [{"image_id": "b", "mean_iou": 0.2, "mean_iou_after_crf": 0.25},
                                       {"image_id": "a", "mean_iou": 0.4, "mean_iou_after_crf": 0.3}]
    assert summary["trimap_crf_gain_points"] == {"0.0": 1.5, "4.0": -0.5}
