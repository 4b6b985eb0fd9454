"""Scenes and simulated unaries (dlib.crf.scenes), against hand-drawn shapes and the label they come from."""

import numpy as np
import pytest
import torch

from dlib.core import io as dlib_io
from dlib.crf import scenes


def test_draw_ellipses_paints_in_order_with_exact_boundaries():
    background = np.zeros((9, 11, 3))
    image, label = scenes.draw_ellipses(background, [scenes.Ellipse(4, 5, 2, 4, 3, (10, 20, 30)),
                                                     scenes.Ellipse(4, 8, 1, 1, 7, 99.0)])
    yy, xx = np.mgrid[0:9, 0:11]
    first = 16 * (yy - 4) ** 2 + 4 * (xx - 5) ** 2 <= 64  # (dy / 2)^2 + (dx / 4)^2 <= 1, times 64
    second = (yy - 4) ** 2 + (xx - 8) ** 2 <= 1  # a disc of radius 1: 5 pixels, drawn last, on top
    assert second.sum() == 5 and (label[second] == 7).all() and (image[second] == 99.0).all()
    assert ((label == 3) == (first & ~second)).all() and (image[first & ~second] == (10, 20, 30)).all()
    assert (label[~first & ~second] == 0).all() and (image[~first & ~second] == 0).all()
    assert label[4, 1] == 3 and label[2, 5] == 3 and label[1, 5] == 0  # boundary points are inside
    with pytest.raises(ValueError, match="radii"):
        scenes.draw_ellipses(background, [scenes.Ellipse(4, 5, 0, 4, 1, 1.0)])


def test_disc_scene_draws_the_discs():
    image, label = scenes.disc_scene(41, [(10, 10, 3), (30, 25, 5)], background=0.1, foreground=0.9)
    assert image.shape == (41, 41, 3) and label.shape == (41, 41)
    yy, xx = torch.meshgrid(torch.arange(41), torch.arange(41), indexing="ij")
    second = ((yy - 30) ** 2 + (xx - 25) ** 2 <= 25).numpy()
    assert (label == 2).sum() == second.sum() and (label[second] == 2).all()
    assert (label == 1).sum() == 29  # lattice points within radius 3 (Gauss circle problem, r = 3)
    assert torch.allclose(torch.from_numpy(image[..., 0][label > 0]), torch.tensor(0.9))
    assert torch.allclose(torch.from_numpy(image[..., 0][label == 0]), torch.tensor(0.1))


def test_synthetic_scene_labels_are_its_colour_regions():
    image, label = scenes.synthetic_scene(48, 64, num_objects=3, num_classes=5, seed=3)
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8 and label.dtype == np.uint8
    assert set(np.unique(label)) <= set(range(5)) and (label > 0).any() and (label == 0).any()
    # Objects differ from the background by >= 80 levels in some channel; noise has sd 4.
    background = image[label == 0].astype(float).mean(0)
    for c in set(np.unique(label)) - {0}:
        assert np.abs(image[label == c].astype(float).mean(0) - background).max() > 40
    np.testing.assert_array_equal(scenes.synthetic_scene(48, 64, num_objects=3, num_classes=5, seed=3)[1], label)


def test_simulated_unaries_are_a_coarse_softmax_of_the_label():
    _, label = scenes.synthetic_scene(40, 48, num_classes=4, void_width=2, seed=5)
    assert (label == 255).any()
    probs = scenes.simulate_unaries(label, 4, noise=0.0)
    assert probs.shape == (4, 40, 48) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(0), 1.0, atol=1e-5)
    # Without noise the argmax at the stride-8 sample points is the label there.
    centres = label[4::8, 4::8]
    keep = centres != 255
    np.testing.assert_array_equal(probs.argmax(0)[4::8, 4::8][keep], centres[keep])
    noisy = scenes.simulate_unaries(label, 4, seed=1)
    assert not np.array_equal(noisy, probs)


def test_sample_images_fall_back_to_synthetic_scenes(tmp_path, monkeypatch):
    monkeypatch.setenv("DLIB_SHARED_DATA", str(tmp_path))  # no VOC there
    samples, source = scenes.sample_images(2, seed=1, scale=0.5)
    assert "synthetic" in source and len(samples) == 2
    for _, image, label in samples:
        assert image.shape == (120, 160, 3) and image.dtype == np.uint8 and label.shape == (120, 160)
        assert (label == 255).any() and label[label != 255].max() < 21


def test_sample_images_read_the_shared_voc_subset():

    if dlib_io.shared_voc_root() is None:
        pytest.skip("the shared VOC 2012 subset (../shared/data/voc2012-train-subset) is not present")
    samples, source = scenes.sample_images(2, seed=0)
    assert "VOC" in source and dlib_io.repo_relative(dlib_io.shared_voc_root()) in source
    assert str(dlib_io.REPO_ROOT.parent) not in source  # recorded relative to the repository, no machine folder
    for image_id, image, label in samples:
        assert image.shape[:2] == label.shape and image.dtype == np.uint8
        assert set(np.unique(label)) <= set(range(21)) | {255}
        assert (dlib_io.shared_voc_root() / "JPEGImages" / f"{image_id}.jpg").exists()
