"""The stride bound: a bar against the closed form (it survives output stride s only if it fills more than half
of its cell column), void shares and a two-band label whose bound is worked out by hand, and the VOC reader on a
miniature VOCdevkit."""

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from archives import jpeg, palette_png

from dlib.evaluation import stride_bound


def test_bar_label_by_hand():
    label = stride_bound.bar_label(3, void=2, size=10, left=4)
    assert (label == 1).sum() == 3 * 10 and set(np.nonzero(label[0] == 1)[0]) == {4, 5, 6}
    assert (label == 255).sum() == 2 * 2 * 10 and set(np.nonzero(label[0] == 255)[0]) == {2, 3, 7, 8}
    assert (label == 0).sum() == 100 - 30 - 40


@pytest.mark.parametrize("stride", [4, 8])
def test_a_cell_aligned_bar_survives_only_when_wider_than_half_a_cell(stride):
    # The bar fills w / s of its cell column and nothing of the others: after bilinear upsampling its score is
    # at most w / s, background's at least 1 - w / s, so it wins somewhere exactly when w > s / 2.
    kept = {w: stride_bound.bound_recall(stride_bound.bar_label(w, left=24), stride) for w in range(1, stride + 1)}
    assert all((r > 0) == (w > stride / 2) for w, r in kept.items()), kept
    assert kept[stride] == 1.0  # a bar filling its cells is kept whole


def test_void_bands_let_a_thin_bar_win_its_cell():
    # Columns 27-28 in cell 24-31: alone the bar has 2 of 8 votes there; with 3 px of void each side, the only votes.
    assert stride_bound.bound_recall(stride_bound.bar_label(2, left=27), 8) == 0.0
    assert stride_bound.bound_recall(stride_bound.bar_label(2, void=3, left=27), 8) == 1.0


def test_void_share_by_hand():
    labels = [np.array([[0, 255], [1, 1]]), np.array([[255, 255, 3, 0]])]
    assert stride_bound.void_share(labels) == pytest.approx(3 / 8)


def test_voc_folder_picks_the_configured_val_split_then_the_given_root_then_the_shared_subset(monkeypatch, tmp_path):
    def cfg(dataset, root):
        return SimpleNamespace(data=SimpleNamespace(dataset=dataset, voc_root=root))

    assert stride_bound.voc_folder(cfg("voc", "/data/VOCdevkit"), "/elsewhere") == (Path("/data/VOCdevkit"), "val")
    assert stride_bound.voc_folder(cfg("proxy", None), tmp_path) == (tmp_path, "train")
    monkeypatch.setattr("dlib.core.io.shared_voc_root", lambda: None)
    assert stride_bound.voc_folder(cfg("proxy", None)) == (None, "train")
    monkeypatch.setattr("dlib.core.io.shared_voc_root", lambda: tmp_path / "shared")
    assert stride_bound.voc_folder(cfg("voc", None)) == (tmp_path / "shared", "train")


def two_bands():
    """32 x 32: a person band (rows 8-23, whole width) and a 1-px bicycle line (row 28) on background."""
    label = np.zeros((32, 32), np.uint8)
    label[8:24] = 15
    label[28] = 2
    return label


def test_the_bound_on_two_bands_by_hand():
    # Rows only matter (every band spans the width). Row y sits (y + 0.5) / 8 - 0.5 cells from cell 0's centre:
    # row 8 gives 0.5625 of its weight to the person cell row (8-15) and keeps person; row 7 gives 0.4375 and
    # stays background; rows 23 and 24 are the mirror image. The bicycle line has 1/8 of the votes of its cell
    # row (24-31) against 7/8 for background: lost. So the bound is the label with row 28 made background.
    bound = stride_bound.on_labels([two_bands(), two_bands()], ["a", "b"], stride=8, num_classes=21,
                                   widths=[0, 1], min_area=20, source="two bands")
    iou = dict(zip(bound.class_iou["class"], bound.class_iou["iou_stride8_upper_bound"]))
    assert iou["person"] == 1.0 and iou["bicycle"] == 0.0
    assert iou["background"] == pytest.approx(480 / 512)  # 480 background pixels, 32 more predicted background
    assert np.isnan(iou["cat"])
    assert bound.scores["mean_iou"] == pytest.approx((480 / 512 + 1 + 0) / 3)
    assert sorted(zip(bound.objects["name"], bound.objects["recall_stride8"])) == [("bicycle", 0.0), ("bicycle", 0.0),
                                                                                    ("person", 1.0), ("person", 1.0)]
    assert bound.by_class["class"].tolist() == ["bicycle", "person"]  # lowest IoU first
    # The 0-px band: rows 7, 8, 23, 24 (person edges) and 27, 28, 29 (the line's), 7 x 32 px per image. Background
    # rows 7, 24, 27, 29 are right, row 28 is predicted background: IoU_bg = 128 / 160, person 1, bicycle 0.
    zero = bound.trimap[bound.trimap["width"] == 0].iloc[0]
    assert zero["pixels"] == 2 * 7 * 32
    assert zero["mean_iou"] == pytest.approx((128 / 160 + 1 + 0) / 3)
    summary = bound.summary()
    assert summary["images"] == 2 and summary["source"] == "two bands"
    assert summary["lowest_classes"] == ["bicycle", "person"]
    assert summary["recall_narrower_than_3px"] == 0.0 and summary["recall_12px_and_wider"] == 1.0
    assert summary["class_iou"]["person"] == 1.0
    assert [row["width"] for row in summary["trimap"]] == [0.0, 1.0]


def test_on_voc_reads_the_first_labels_of_a_split(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2012"
    for folder in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (voc / folder).mkdir(parents=True)
    ids = ["2007_000001", "2007_000002", "2007_000003"]
    (voc / "ImageSets/Segmentation/train.txt").write_text("\n".join(ids) + "\n")
    for i in ids:
        (voc / "JPEGImages" / f"{i}.jpg").write_bytes(jpeg(32, 32))
        (voc / "SegmentationClass" / f"{i}.png").write_bytes(palette_png(two_bands()))
    bound = stride_bound.on_voc(tmp_path / "VOCdevkit", "train", stride=8, num_classes=21, widths=[0], max_images=2)
    assert bound.ids == ids[:2] and len(bound.labels) == 2
    np.testing.assert_array_equal(bound.labels[1], two_bands())
    assert bound.source.startswith("PASCAL VOC 2012 train-split images (2 of 3, ")
    assert bound.scores["mean_iou"] == pytest.approx((480 / 512 + 1 + 0) / 3)
