"""Metrics against hand-computed confusion matrices and a hand-made trimap."""

import numpy as np
import pytest

from dlib.evaluation import metrics


def test_confusion_matrix_by_hand():
    # target / pred, 3 classes, one void pixel (255) that must not count.
    target = np.array([[0, 0, 1],
                       [1, 2, 255]])
    pred = np.array([[0, 1, 1],
                     [2, 2, 0]])
    # rows = true class, columns = predicted class:
    #   true 0: pred 0 once, pred 1 once; true 1: pred 1 once, pred 2 once; true 2: pred 2 once.
    expected = np.array([[1, 1, 0],
                         [0, 1, 1],
                         [0, 0, 1]])
    np.testing.assert_array_equal(metrics.confusion_matrix(pred, target, 3), expected)
    # Without an ignore index the void pixel is an error: 255 is outside [0, 3).
    with pytest.raises(ValueError, match="outside"):
        metrics.confusion_matrix(pred, target, 3, ignore_index=None)


def test_scores_by_hand():
    conf = np.array([[1, 1, 0],
                     [0, 1, 1],
                     [0, 0, 1]])
    s = metrics.scores(conf)
    # IoU_0 = 1 / (1 + 1 + 0); IoU_1 = 1 / (1 + 1 + 1); IoU_2 = 1 / (1 + 1 + 0)
    np.testing.assert_allclose(s["class_iou"], [1 / 2, 1 / 3, 1 / 2])
    assert s["mean_iou"] == pytest.approx((1 / 2 + 1 / 3 + 1 / 2) / 3)
    assert s["pixel_acc"] == pytest.approx(3 / 5)


def test_absent_classes_leave_the_mean_but_false_positives_count():
    # Class 2 appears in neither: excluded. Class 3 only predicted: IoU 0, included.
    target = np.array([0, 0, 1, 1])
    pred = np.array([0, 0, 1, 3])
    s = metrics.scores(metrics.confusion_matrix(pred, target, 4))
    assert np.isnan(s["class_iou"][2])
    np.testing.assert_allclose(s["class_iou"][[0, 1, 3]], [1.0, 0.5, 0.0])
    assert s["mean_iou"] == pytest.approx(0.5)
    empty = metrics.scores(np.zeros((3, 3)))
    assert np.isnan(empty["mean_iou"]) and np.isnan(empty["pixel_acc"])


def test_confusion_matrix_rejects_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        metrics.confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int), 2)
    with pytest.raises(TypeError, match="argmax"):
        metrics.confusion_matrix(np.zeros((2, 2)), np.zeros((2, 2), int), 2)
    with pytest.raises(ValueError, match="pred has labels"):
        metrics.confusion_matrix(np.full((2, 2), 5), np.zeros((2, 2), int), 2)
    with pytest.raises(ValueError, match="square"):
        metrics.scores(np.zeros((2, 3)))


def _label():
    # 7 x 7: class 0 in columns 0-2, class 1 in columns 3-6, one void pixel at the bottom-right corner.
    label = np.zeros((7, 7), dtype=np.uint8)
    label[:, 3:] = 1
    label[6, 6] = 255
    return label


def test_trimap_band_on_a_hand_made_label():
    label = _label()
    # Width 0: the two columns that touch the 0|1 edge, the void pixel and its 4-neighbours.
    expected0 = np.zeros((7, 7), bool)
    expected0[:, 2:4] = True
    expected0[6, 6] = expected0[5, 6] = expected0[6, 5] = True
    np.testing.assert_array_equal(metrics.trimap_band(label, 0), expected0)
    # Width 1: one more column on each side of the edge, and the pixels 1 px from the void outline:
    # (4, 6) above (5, 6) and (5, 5) beside it; (6, 4) is in column 4 already.
    expected1 = np.zeros((7, 7), bool)
    expected1[:, 1:5] = True
    for r, c in [(6, 6), (5, 6), (6, 5), (4, 6), (5, 5), (6, 4)]:
        expected1[r, c] = True
    np.testing.assert_array_equal(metrics.trimap_band(label, 1), expected1)
    # Width 3 reaches every column from the edge columns 2 and 3.
    assert metrics.trimap_band(label, 3).all()
    # The same label without its void pixel: the 0|1 edge alone.
    band = metrics.trimap_band(np.where(label == 255, 1, label), 0)
    np.testing.assert_array_equal(band, np.isin(np.arange(7), [2, 3])[None, :].repeat(7, 0))
    with pytest.raises(ValueError, match="width"):
        metrics.trimap_band(label, -1)


def test_trimap_scores_follow_the_band():
    label = _label()
    # Wrong only far from the edge (column 0): perfect inside a narrow band, worse in a wide one.
    pred = np.where(label == 255, 0, label).astype(np.int64)
    pred[:, 0] = 1
    table = metrics.trimap_scores([pred], [label], widths=[0, 1, 2], num_classes=2)
    assert list(table["width"]) == [0, 1, 2]
    assert table["mean_iou"].iloc[0] == 1.0 and table["mean_iou"].iloc[1] == 1.0
    # Width 2, counted by hand. The boundary pixels are columns 2 and 3, the void pixel (6, 6) and its
    # neighbours (5, 6) and (6, 5). Class 0: all 21 pixels (columns 0-2) are within 2 px, the 7 of column 0
    # predicted as class 1. Class 1: columns 3-5 (21 pixels) and, in column 6, rows 3-5 (within 2 px of
    # (5, 6)): 24 pixels, all right. IoU_0 = 14 / (21 + 14 - 14), IoU_1 = 24 / (24 + 31 - 24).
    assert table["mean_iou"].iloc[2] == pytest.approx((14 / 21 + 24 / 31) / 2)
    assert table["pixel_acc"].iloc[2] == pytest.approx((14 + 24) / 45)
    assert table["pixels"].iloc[2] == 45  # (6, 6) is in the band but void: not scored
