"""The sentences and lines notebook 07 prints, from hand-made tables whose numbers are worked out in comments."""

import numpy as np
import pandas as pd
import pytest

from dlib.evaluation import failure_text


def objects_by_hand():
    """Two thin objects (1 and 2 px, 10 and 30 px^2) and one wide one (20 px, 100 px^2)."""
    return pd.DataFrame({"width": [1.0, 2.0, 20.0], "area": [10, 30, 100],
                         "recall_model": [0.2, 0.1, 0.9], "recall_crf": [0.0, 0.0, 1.0],
                         "recall_bound": [1.0, 0.7, 1.0]})


@pytest.mark.parametrize("before, after, verb", [(0.06, 0.0, "erases"), (0.3, 0.2, "lowers"),
                                                 (0.3, 0.303, "leaves unchanged"), (0.0, 0.0, "leaves unchanged"),
                                                 (0.3, 0.5, "raises"), (0.0, 0.1, "raises")])
def test_change_verb(before, after, verb):
    assert failure_text.change_verb(before, after) == verb


def test_thin_classes_sentence_reads_the_table():
    table = pd.DataFrame({"class": ["background", "bicycle", "chair", "sofa"],
                          "before_crf": [0.9, 0.0616, 0.325, np.nan], "after_crf": [0.95, 0.0, 0.233, np.nan]})
    assert failure_text.thin_classes_sentence(table, ["bicycle", "chair"]) == (
        "The CRF erases bicycle (IoU 6.2% -> 0.0%) and lowers chair (IoU 32.5% -> 23.3%).")
    assert failure_text.thin_classes_sentence(table, ["chair", "sofa"]) == (
        "The CRF lowers chair (IoU 32.5% -> 23.3%). Not scored (absent from labels and predictions): sofa.")
    table.loc[1, "after_crf"] = 0.0616
    assert failure_text.thin_classes_sentence(table, ["bicycle"]) == (
        "The CRF leaves bicycle unchanged (IoU 6.2% -> 6.2%).")


def test_crf_on_thin_objects_sentence_by_hand():
    table = objects_by_hand()
    # Thin: (2 + 3) / 40 = 12.5% before, 0% after; wide: 90% -> 100%.
    assert failure_text.crf_on_thin_objects_sentence(table) == (
        "Objects narrower than 3 px (2 objects) keep 12.5% of their pixels before the CRF and 0.0% after: it erases "
        "what the network had found of them and brings none back; objects 12 px and wider (1 object) go from 90.0% "
        "to 100.0%.")
    table["recall_crf"] = [0.5, 0.5, 1.0]  # 50% after: 37.5 points brought back
    assert "it brings back 37.5 points of their pixels" in failure_text.crf_on_thin_objects_sentence(table)
    assert failure_text.crf_on_thin_objects_sentence(table, narrow=0.5).startswith("No object is narrower than 0.5 px")


def test_stride_bound_sentence_splits_the_loss_by_hand():
    table = objects_by_hand()
    # Bound: (10 + 21) / 40 = 77.5%; network 12.5%: 87.5 points lost, 22.5 by the stride, 65.0 by the network.
    text = failure_text.stride_bound_sentence(table, stride=8)
    assert "keeps 77.5% of the pixels of the 2 objects narrower than 3 px; the network keeps 12.5%." in text
    assert text.endswith("Output stride 8 accounts for 22.5 of the 87.5 points lost (less than half); the other 65.0 "
                         "points are the network's own (its score map is not the perfect one).")
    table["recall_bound"] = [0.0, 0.1, 1.0]  # bound 7.5%, below the network's 12.5%
    assert failure_text.stride_bound_sentence(table, stride=8).endswith(
        "The network keeps at least as much as the bound: the 87.5 points it loses are within what output stride 8 "
        "loses by itself.")
    table["recall_bound"] = [0.1, 0.2, 1.0]  # bound (1 + 6) / 40 = 17.5%: 82.5 of the 87.5 points by the stride
    text = failure_text.stride_bound_sentence(table, stride=8)
    assert "accounts for 82.5 of the 87.5 points lost (most); the other 5.0 points" in text


def test_voc_bound_sentence_compares_with_the_task():
    table = objects_by_hand()
    assert failure_text.voc_bound_sentence(table, compare=("proxy", 0.06)) == (
        "On the VOC annotations the same bound keeps 77.5% of the pixels of the 2 objects narrower than 3 px and "
        "100.0% of those 12 px and wider: more than on the proxy objects of that width (6.0%).")
    below = failure_text.voc_bound_sentence(table, compare=("proxy", 0.9))
    assert below.endswith("less than on the proxy objects of that width (90.0%).")
    assert failure_text.voc_bound_sentence(table, narrow=0.5) == "No VOC object here is narrower than 0.5 px."


# ----------------------------------------------------------------------------------------------
# Lines printed beside the tables
# ----------------------------------------------------------------------------------------------

def class_iou_by_hand():
    return pd.DataFrame({"class": ["background", "aeroplane", "bicycle", "bird", "boat"],
                         "before_crf": [0.9, 0.5, 0.1, np.nan, 0.3],
                         "after_crf": [0.95, 0.6, 0.05, np.nan, 0.35]})


def test_worst_classes_line_lists_the_lowest_after_the_crf():
    table = class_iou_by_hand()
    ranked = table.dropna(subset=["after_crf"]).sort_values("after_crf")  # bicycle 5%, boat 35%, aeroplane 60%, ...
    assert failure_text.worst_classes_line(ranked, 2) == (
        "Worst classes after the CRF: bicycle (10.0% -> 5.0%), boat (30.0% -> 35.0%)")


def test_thin_class_ranks_line_counts_from_the_bottom():
    table = class_iou_by_hand()
    ranked = table.dropna(subset=["after_crf"]).sort_values("after_crf")  # 4 scored classes; bird (3) is not
    assert failure_text.thin_class_ranks_line(table, ranked, [2, 4, 3]) == (
        "Thin classes: bicycle IoU 10.0% -> 5.0% (rank 1 of 4 from the bottom), "
        "boat IoU 30.0% -> 35.0% (rank 2 of 4 from the bottom)")


def gain_by_hand():
    """mIoU 50% -> 56% in the 0-px band, 70% -> 68.5% in the 10-px band: +6 and -1.5 points."""
    gain = pd.DataFrame({"before": [0.5, 0.7], "after": [0.56, 0.685]}, index=pd.Index([0.0, 10.0], name="width"))
    gain["crf_gain_points"] = [6.0, -1.5]
    return gain


def test_crf_gain_line_and_sentence_read_the_first_and_last_band():
    gain = gain_by_hand()
    # Whole images: 0.612 -> 0.6252 is +1.32 points.
    assert failure_text.crf_gain_line(gain, 0.612, 0.6252) == (
        "CRF gain in the 0-px band: +6.00 points; in the 10-px band: -1.50; whole image: +1.32")
    assert failure_text.trimap_sentence(gain, 0.612, 0.6252) == (
        "The CRF changes mIoU by +6.0 points in the 0-px trimap band, by -1.5 in the 10-px band and by +1.3 over "
        "whole images.")


def test_void_share_line():
    assert failure_text.void_share_line({"proxy val": 0.0, "VOC": 3 / 8}) == (
        "Void pixels: 0.0% of the proxy val labels, 37.5% of the VOC labels")


def test_lowest_classes_line():
    by_class = pd.DataFrame({"class": ["chair", "bicycle"], "iou": [0.25, 0.5], "median_width_px": [2.04, 3.96]})
    assert failure_text.lowest_classes_line(by_class, 8) == (
        "Lowest IoU of the stride-8 upper bound: chair 25.0% (median width 2.0 px), bicycle 50.0% (median width "
        "4.0 px)")
