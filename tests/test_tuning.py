"""Refining and scoring a data set and the setting effects (dlib.crf.tuning), by hand counts."""

import numpy as np
import pytest
from crf_helpers import PARAMS, scene

from dlib import crf
from dlib.core.io import load_probs, read_label, save_probs, write_label
from dlib.crf.tuning import refine_and_score, refine_dataset, setting_effects, setting_variants


@pytest.mark.parametrize("backend", ["pydensecrf", "torch"])
def test_batch_refinement_equals_the_single_image_call(tmp_path, backend):
    from PIL import Image

    if backend == "pydensecrf":
        pytest.importorskip("pydensecrf.densecrf", reason="pydensecrf (optional extra [crf]) is not installed")
    model = crf.DenseCRF(**PARAMS, backend=backend)
    images = {}
    (tmp_path / "images").mkdir()
    (tmp_path / "empty").mkdir()
    for k in range(3):
        image, _, probs = scene(k, h=24, w=32)
        images[f"im{k}"] = image
        save_probs(tmp_path / "probs" / f"im{k}.npz", probs)
        Image.fromarray(image).save(tmp_path / "images" / f"im{k}.png")  # lossless: the same pixels come back
    parallel = refine_dataset(tmp_path / "probs", tmp_path / "out2", tmp_path / "images", crf=model,
                                  workers=2, progress=False)
    serial = refine_dataset(tmp_path / "probs", tmp_path / "out1", images.__getitem__, crf=model,
                                workers=1, progress=False)
    assert [p.name for p in parallel] == ["im0.png", "im1.png", "im2.png"]
    for p_path, s_path in zip(parallel, serial):
        image_id = p_path.stem
        expected = model.predict(images[image_id], load_probs(tmp_path / "probs" / f"{image_id}.npz"))
        np.testing.assert_array_equal(read_label(p_path), expected)
        np.testing.assert_array_equal(read_label(s_path), expected)
    # overwrite=False keeps what is there (resuming an interrupted run).
    write_label(tmp_path / "out1" / "im0.png", np.zeros((24, 32), np.uint8))
    refine_dataset(tmp_path / "probs", tmp_path / "out1", images.__getitem__, crf=model, workers=1,
                       overwrite=False, progress=False)
    assert read_label(tmp_path / "out1" / "im0.png").max() == 0
    with pytest.raises(FileNotFoundError, match="no image"):
        refine_dataset(tmp_path / "probs", tmp_path / "out3", tmp_path / "empty", workers=1, progress=False)


def test_setting_effects_against_hand_counts(two_halves):
    """The two-halves image: 4 of 120 pixels are wrong in the unary; the CRF fixes exactly those."""
    image, probs, truth = two_halves
    base = crf.DenseCRF(w1=4.0, theta_alpha=5.0, theta_beta=10.0, w2=3.0, theta_gamma=3.0, backend="torch")
    variants = {"crf": {}, "crf again": {}, "off": {"w1": 0.0, "w2": 0.0}, "deeplab": {"normalization": "deeplab"}}
    table = setting_effects([image], [probs], [truth], variants, base=base)
    assert list(table.index) == ["no CRF", "crf", "crf again", "off", "deeplab"]
    # No CRF: 2 wrong pixels in each half, IoU 58 / (58 + 2 + 2) per class.
    assert table.loc["no CRF", "mean_iou"] == pytest.approx(100 * 58 / 62)
    assert table.loc["crf", "mean_iou"] == pytest.approx(100.0)
    assert table.loc["crf", "changed_vs_no_crf"] == pytest.approx(100 * 4 / 120)
    assert table.loc["no CRF", "changed_vs_reference"] == pytest.approx(100 * 4 / 120)
    assert table.loc["crf again", "changed_vs_reference"] == 0.0
    assert table.loc["off", "changed_vs_no_crf"] == 0.0 and table.loc["off", "mean_iou"] == pytest.approx(100 * 58 / 62)
    assert table.loc["deeplab", "normalization"] == "deeplab" and table.loc["crf", "normalization"] == "symmetric"
    # The default variants: normalisation x theta_gamma from the two sources, our default configuration first.
    names = list(setting_variants())
    assert len(names) == 4 and setting_variants()[names[0]] == {"normalization": "symmetric", "w2": 3.0,
                                                                     "theta_gamma": 3.0}
    assert {v["theta_gamma"] for v in setting_variants().values()} == {1.0, 3.0}


class _TinySet:
    """The data-set protocol refine_and_score reads: ``ids`` and ``[k] -> (image, label)``."""

    def __init__(self, items):
        self.ids = [name for name, _, _ in items]
        self.items = [(image, label) for _, image, label in items]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, k):
        return self.items[k]


def test_refine_and_score_against_a_hand_made_confusion_matrix(tmp_path, two_halves):
    """Two images of the two-halves case, whose 4 salt pixels the CRF fixes (tests/test_dense.py), so the refined
    labels are the truth. Image "a" is scored against that truth; image "b" against a truth with a void top row
    (not scored) and one pixel of class 0 relabelled 1: the confusion matrix is counted by hand."""
    image, probs, truth = two_halves
    truth_b = truth.copy()
    truth_b[0, :] = 255  # void: 12 pixels, 6 of each class, not scored
    truth_b[5, 0] = 1  # a deliberately wrong label: class 0's pixel (5, 0) is called 1 in the truth
    data = _TinySet([("a", image, truth.astype(np.uint8)), ("b", image, truth_b.astype(np.uint8)),
                     ("c", image, truth.astype(np.uint8))])  # "c" has no cached probabilities
    for name in ("a", "b"):
        save_probs(tmp_path / "probs" / f"{name}.npz", probs)
    model = crf.DenseCRF(w1=4.0, theta_alpha=5.0, theta_beta=10.0, w2=3.0, theta_gamma=3.0, backend="torch")
    out = refine_and_score(tmp_path / "probs", tmp_path / "out", data, crf=model, num_classes=2, workers=1,
                           progress=False, keep_labels=True)
    # By hand: "a" 60 + 60 right; "b" 54 + 54 scored, of which (5, 0) is predicted 0 but labelled 1.
    expected = np.array([[60 + 54 - 1, 0], [1, 60 + 54]])  # rows: truth, columns: prediction
    np.testing.assert_array_equal(out["confusion"], expected)
    iou0, iou1 = 113 / (113 + 1), 114 / (114 + 1)
    assert out["mean_iou"] == pytest.approx((iou0 + iou1) / 2)
    assert out["pixel_acc"] == pytest.approx(227 / 228)
    assert out["class_iou"] == pytest.approx([iou0, iou1]) and out["num_images"] == 2
    assert [p.name for p in out["paths"]] == ["a.png", "b.png"]
    for label, path in zip(out["labels"], out["paths"]):  # the labels scored are the labels written
        np.testing.assert_array_equal(label, truth)
        np.testing.assert_array_equal(read_label(path), truth)
    only_b = refine_and_score(tmp_path / "probs", tmp_path / "out_b", data, crf=model, num_classes=2, ids=["b"],
                              workers=1, progress=False)
    np.testing.assert_array_equal(only_b["confusion"], [[53, 0], [1, 54]])
    assert "labels" not in only_b
    save_probs(tmp_path / "probs" / "stranger.npz", probs)
    with pytest.raises(ValueError, match="not in the data set.*stranger"):
        refine_and_score(tmp_path / "probs", tmp_path / "out", data, crf=model, num_classes=2, progress=False)
