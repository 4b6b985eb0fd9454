"""Failure analysis: thinning against a per-pixel transcription of Zhang & Suen (1984), widths against
closed forms, per-object recall and per-image scores against brute-force counts."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import ndimage

from dlib.evaluation import failure

# ----------------------------------------------------------------------------------------------
# Thinning
# ----------------------------------------------------------------------------------------------

def zhang_suen_by_the_paper(mask):
    """Zhang & Suen (CACM 27(3), 1984) pixel by pixel: each sub-iteration marks from a snapshot, then deletes."""
    m = np.pad(mask.astype(int), 1)
    while True:
        changed = False
        for step in (1, 2):
            marked = []
            for y in range(1, m.shape[0] - 1):
                for x in range(1, m.shape[1] - 1):
                    if not m[y, x]:
                        continue
                    p2, p3, p4, p5 = m[y - 1, x], m[y - 1, x + 1], m[y, x + 1], m[y + 1, x + 1]
                    p6, p7, p8, p9 = m[y + 1, x], m[y + 1, x - 1], m[y, x - 1], m[y - 1, x - 1]
                    seq = [p2, p3, p4, p5, p6, p7, p8, p9, p2]
                    b = sum(seq[:8])
                    a = sum(1 for u, v in zip(seq, seq[1:]) if u == 0 and v == 1)
                    if step == 1:
                        ok = p2 * p4 * p6 == 0 and p4 * p6 * p8 == 0
                    else:
                        ok = p2 * p4 * p8 == 0 and p2 * p6 * p8 == 0
                    if 2 <= b <= 6 and a == 1 and ok:
                        marked.append((y, x))
            for y, x in marked:
                m[y, x] = 0
            changed |= bool(marked)
        if not changed:
            return m[1:-1, 1:-1].astype(bool)


def random_blobs(seed, size=24):
    rng = np.random.default_rng(seed)
    field = ndimage.gaussian_filter(rng.normal(size=(size, size)), 2.0)
    return field > np.quantile(field, 0.55)


@pytest.mark.parametrize("seed", range(4))
def test_zhang_suen_matches_the_paper_pixel_by_pixel(seed):
    mask = random_blobs(seed)
    mask[3:6, 2:20] = True  # a bar touching other shapes
    np.testing.assert_array_equal(failure.zhang_suen(mask), zhang_suen_by_the_paper(mask))


def test_zhang_suen_on_a_filled_rectangle_keeps_a_centre_line():
    mask = np.zeros((15, 40), bool)
    mask[4:11, 3:37] = True  # 7 rows: the centre row is row 7
    thin = failure.zhang_suen(mask)
    np.testing.assert_array_equal(thin, zhang_suen_by_the_paper(mask))
    rows = np.nonzero(thin.any(axis=1))[0]
    assert thin.sum() > 34 - 7 - 2
    assert set(rows) <= {6, 7, 8}


def test_skeleton_is_thin_connected_and_inside_the_shape():
    yy, xx = np.mgrid[0:48, 0:48]
    d2 = (yy - 24) ** 2 + (xx - 24) ** 2
    ring = (d2 <= 18 ** 2) & (d2 > 12 ** 2)
    plus = ((np.abs(yy - 24) <= 3) | (np.abs(xx - 24) <= 3)) & (d2 <= 20 ** 2)
    for mask in (ring, plus, random_blobs(7, 40)):
        skel = failure.skeleton(mask)
        assert not (skel & ~mask).any()
        # No 4-connected staircase corner is left: two perpendicular 4-neighbours set, the pixel
        # diagonally opposite them empty, and not all four 4-neighbours set (a crossing stays).
        p = np.pad(skel, 1)
        c, n, s, e, w = p[1:-1, 1:-1], p[:-2, 1:-1], p[2:, 1:-1], p[1:-1, 2:], p[1:-1, :-2]
        ne, nw, se, sw = p[:-2, 2:], p[:-2, :-2], p[2:, 2:], p[2:, :-2]
        stair = (n & e & ~sw) | (e & s & ~nw) | (s & w & ~ne) | (w & n & ~se)
        assert not (c & stair & ~(n & e & s & w)).any()
    # Topology: the ring's skeleton is one closed curve (one 8-component, one hole); the plus is one tree.
    eight = np.ones((3, 3), bool)
    skel = failure.skeleton(ring)
    assert ndimage.label(skel, structure=eight)[1] == 1
    assert ndimage.label(~skel)[1] == 2  # background (4-connected): outside and the hole
    skel = failure.skeleton(plus)
    assert ndimage.label(skel, structure=eight)[1] == 1
    assert ndimage.label(~skel)[1] == 1


def test_thin_lines_are_their_own_skeleton():
    line = np.zeros((9, 30), bool)
    line[4, 2:28] = True
    diag = np.eye(20, dtype=bool)
    for mask in (line, diag):
        np.testing.assert_array_equal(failure.skeleton(mask), mask)


# ----------------------------------------------------------------------------------------------
# Lengths and widths
# ----------------------------------------------------------------------------------------------

def test_skeleton_length_by_hand():
    line = np.zeros((5, 12), bool)
    line[2, 1:11] = True  # 10 pixels, 9 unit steps
    assert failure.skeleton_length(line) == pytest.approx(9)
    diag = np.eye(8, dtype=bool)  # 7 diagonal steps
    assert failure.skeleton_length(diag) == pytest.approx(7 * math.sqrt(2))
    corner = np.array([[1, 1, 0],
                       [0, 1, 1]], bool)  # two axial links; the diagonal shortcut is not counted twice
    assert failure.skeleton_length(corner) == pytest.approx(3)
    both = np.zeros((20, 20), bool)
    both[2, 2:12] = True  # 9
    both[8:13, 3:8] = np.eye(5, dtype=bool)  # 4 sqrt(2)
    comp, n = ndimage.label(both, structure=np.ones((3, 3)))
    lengths = failure.skeleton_length(both, comp)
    assert sorted(lengths[1:].round(6)) == sorted([9.0, round(4 * math.sqrt(2), 6)])


def test_ribbon_width_solves_the_area_equation():
    rng = np.random.default_rng(0)
    w, length = rng.uniform(0.5, 30, 50), rng.uniform(0, 200, 50)
    area = w * length + math.pi * w ** 2 / 4  # round-capped ribbon
    np.testing.assert_allclose(failure.ribbon_width(area, length), w, rtol=1e-10)
    assert failure.ribbon_width(math.pi * 25, 0) == pytest.approx(10)  # a disc: its diameter
    assert failure.ribbon_width(0, 0) == 0
    with pytest.raises(ValueError):
        failure.ribbon_width(-1, 3)


@pytest.mark.parametrize("r", [4, 9, 17])
def test_a_disc_is_as_wide_as_its_diameter(r):
    yy, xx = np.mgrid[-r - 2:r + 3, -r - 2:r + 3]
    assert failure.mean_width(xx ** 2 + yy ** 2 <= r * r) == pytest.approx(2 * r, rel=0.04)


@pytest.mark.parametrize("w", [1, 2, 3, 5, 8])
def test_a_long_rectangle_is_as_wide_as_it_is(w):
    mask = np.zeros((w + 4, 104), bool)
    mask[2:2 + w, 2:102] = True  # w x 100
    assert failure.mean_width(mask) == pytest.approx(w, rel=0.06, abs=0.02)


def test_rotated_shapes_measure_their_perpendicular_width():
    yy, xx = np.mgrid[0:100, 0:100]
    diag_strip = (np.abs(xx - yy) <= 3) & (xx > 10) & (xx < 90)  # 7 pixel diagonals: 7 / sqrt(2) wide
    assert failure.mean_width(diag_strip) == pytest.approx(7 / math.sqrt(2), rel=0.08)
    assert failure.mean_width(np.eye(40, dtype=bool)) == pytest.approx(1 / math.sqrt(2), rel=0.05)
    d2 = (yy - 50) ** 2 + (xx - 50) ** 2
    ring = (d2 <= 30 ** 2) & (d2 > 25 ** 2)  # annulus 5 px wide
    assert failure.mean_width(ring) == pytest.approx(5, rel=0.08)


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
# Sentences from the tables
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


@pytest.mark.parametrize("before, after, verb", [(0.06, 0.0, "erases"), (0.3, 0.2, "lowers"),
                                                 (0.3, 0.303, "leaves unchanged"), (0.0, 0.0, "leaves unchanged"),
                                                 (0.3, 0.5, "raises"), (0.0, 0.1, "raises")])
def test_change_verb(before, after, verb):
    assert failure.change_verb(before, after) == verb


def test_thin_classes_sentence_reads_the_table():
    table = pd.DataFrame({"class": ["background", "bicycle", "chair", "sofa"],
                          "before_crf": [0.9, 0.0616, 0.325, np.nan], "after_crf": [0.95, 0.0, 0.233, np.nan]})
    assert failure.thin_classes_sentence(table, ["bicycle", "chair"]) == (
        "The CRF erases bicycle (IoU 6.2% -> 0.0%) and lowers chair (IoU 32.5% -> 23.3%).")
    assert failure.thin_classes_sentence(table, ["chair", "sofa"]) == (
        "The CRF lowers chair (IoU 32.5% -> 23.3%). Not scored (absent from labels and predictions): sofa.")
    table.loc[1, "after_crf"] = 0.0616
    assert failure.thin_classes_sentence(table, ["bicycle"]) == "The CRF leaves bicycle unchanged (IoU 6.2% -> 6.2%)."


def test_crf_on_thin_objects_sentence_by_hand():
    table = objects_by_hand()
    # Thin: (2 + 3) / 40 = 12.5% before, 0% after; wide: 90% -> 100%.
    assert failure.crf_on_thin_objects_sentence(table) == (
        "Objects narrower than 3 px (2 objects) keep 12.5% of their pixels before the CRF and 0.0% after: it erases "
        "what the network had found of them and brings none back; objects 12 px and wider (1 object) go from 90.0% "
        "to 100.0%.")
    table["recall_crf"] = [0.5, 0.5, 1.0]  # 50% after: 37.5 points brought back
    assert "it brings back 37.5 points of their pixels" in failure.crf_on_thin_objects_sentence(table)
    assert failure.crf_on_thin_objects_sentence(table, narrow=0.5).startswith("No object is narrower than 0.5 px")


def test_stride_bound_sentence_splits_the_loss_by_hand():
    table = objects_by_hand()
    # Bound: (10 + 21) / 40 = 77.5%; network 12.5%: 87.5 points lost, 22.5 by the stride, 65.0 by the network.
    text = failure.stride_bound_sentence(table, stride=8)
    assert "keeps 77.5% of the pixels of the 2 objects narrower than 3 px; the network keeps 12.5%." in text
    assert text.endswith("Output stride 8 accounts for 22.5 of the 87.5 points lost (less than half); the other 65.0 "
                         "points are the network's own (its score map is not the perfect one).")
    table["recall_bound"] = [0.0, 0.1, 1.0]  # bound 7.5%, below the network's 12.5%
    assert failure.stride_bound_sentence(table, stride=8).endswith(
        "The network keeps at least as much as the bound: the 87.5 points it loses are within what output stride 8 "
        "loses by itself.")
    table["recall_bound"] = [0.1, 0.2, 1.0]  # bound (1 + 6) / 40 = 17.5%: 82.5 of the 87.5 points by the stride
    assert "accounts for 82.5 of the 87.5 points lost (most); the other 5.0 points" in failure.stride_bound_sentence(
        table, stride=8)


def test_voc_bound_sentence_compares_with_the_task():
    table = objects_by_hand()
    assert failure.voc_bound_sentence(table, compare=("proxy", 0.06)) == (
        "On the VOC annotations the same bound keeps 77.5% of the pixels of the 2 objects narrower than 3 px and "
        "100.0% of those 12 px and wider: more than on the proxy objects of that width (6.0%).")
    below = failure.voc_bound_sentence(table, compare=("proxy", 0.9))
    assert below.endswith("less than on the proxy objects of that width (90.0%).")
    assert failure.voc_bound_sentence(table, narrow=0.5) == "No VOC object here is narrower than 0.5 px."
