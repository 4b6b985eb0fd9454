"""dlib.data.transforms: image and label stay aligned, labels keep their values, padding and normalisation."""

import numpy as np
import pytest
import torch

from dlib.core import config
from dlib.data import transforms

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


def _blocks(h=60, w=84, block=12, seed=0):
    """A label of constant blocks (values 0..20 and some 255) and an image whose red channel encodes it."""
    rng = np.random.default_rng(seed)
    grid = rng.choice(list(range(21)) + [255], size=(h // block + 1, w // block + 1))
    label = np.kron(grid, np.ones((block, block), dtype=np.int64))[:h, :w].astype(np.uint8)
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = np.where(label == 255, 250, label.astype(np.int64) * 10)  # red = 10 * class
    image[..., 1] = np.arange(w)[None, :] * 255 // (w - 1)  # a horizontal ramp shows the orientation
    return image, label


def _interior(label):
    """Pixels whose 3x3 neighbourhood holds one label value (away from block edges)."""
    pad = np.pad(label.astype(np.int64), 1, constant_values=-1)  # the crop border is not interior
    same = np.ones_like(label, dtype=bool)
    for dy in (0, 1, 2):
        for dx in (0, 1, 2):
            same &= pad[dy:dy + label.shape[0], dx:dx + label.shape[1]] == label
    return same


@pytest.mark.parametrize("seed", range(6))
def test_random_scale_crop_flip_keep_image_and_label_aligned(seed):
    image, label = _blocks(seed=seed)
    t = transforms.TrainTransform(crop_size=48, scale_range=(0.5, 1.5), flip=True, mean=MEAN, std=STD)
    img, lab = t.augment(image, label, np.random.default_rng(seed))
    assert img.shape == (48, 48, 3) and lab.shape == (48, 48)
    assert set(np.unique(lab).tolist()) <= set(np.unique(label).tolist()) | {255}  # no new label values
    fill = np.round(255 * np.array(MEAN)).astype(np.uint8)
    padded = np.all(img == fill, axis=-1) & (lab == 255)
    core = _interior(lab) & ~padded
    assert core.sum() > 100
    red = img[..., 0].astype(int)[core]
    expected = np.where(lab[core] == 255, 250, lab[core].astype(int) * 10)
    assert np.abs(red - expected).max() <= 2  # every label pixel sits on its own colour


def test_flip_mirrors_both():
    image, label = _blocks()
    t = transforms.TrainTransform(crop_size=60, scale_range=None, flip=True, mean=MEAN, std=STD)
    for seed in range(20):  # the 60x60 image fills the 60x60 crop: only the flip is random
        rng = np.random.default_rng(seed)
        img, lab = t.augment(image[:, :60], label[:, :60], rng)
        if img[0, 0, 1] > img[0, -1, 1]:  # the green ramp now decreases: flipped
            assert np.array_equal(img, image[:, :60][:, ::-1]) and np.array_equal(lab, label[:, :60][:, ::-1])
            break
    else:
        pytest.fail("no flip in 20 draws")


def test_resize_uses_nearest_for_labels():
    label = np.array([[1, 2], [3, 255]], np.uint8)
    image = np.zeros((2, 2, 3), np.uint8)
    img, lab = transforms.resize(image, label, 3.0)
    assert img.shape == (6, 6, 3)
    assert np.array_equal(lab, np.kron(label, np.ones((3, 3), np.uint8)))
    _, lab = transforms.resize(np.zeros((10, 10, 3), np.uint8), np.arange(100, dtype=np.uint8).reshape(10, 10) % 21,
                               0.55)
    assert lab.shape == (6, 6) and set(np.unique(lab)) <= set(range(21))


def test_small_images_are_padded_with_mean_and_void():
    image = np.full((10, 7, 3), 17, np.uint8)
    label = np.full((10, 7), 4, np.uint8)
    t = transforms.TrainTransform(crop_size=16, scale_range=None, flip=False, mean=MEAN, std=STD)
    img, lab = t.augment(image, label, np.random.default_rng(0))
    assert img.shape == (16, 16, 3)
    assert (lab[:10, :7] == 4).all() and (lab[10:] == 255).all() and (lab[:, 7:] == 255).all()
    assert np.array_equal(img[12, 12], np.round(255 * np.array(MEAN)).astype(np.uint8))
    x, y = transforms.to_tensor(img, lab, MEAN, STD)
    assert torch.allclose(x[:, 12, 12], torch.zeros(3), atol=0.01)  # the mean normalises to zero


def test_to_tensor_normalises():
    image = np.zeros((2, 3, 3), np.uint8)
    image[1, 2] = (255, 128, 0)
    x, y = transforms.to_tensor(image, np.ones((2, 3), np.uint8), MEAN, STD)
    assert x.shape == (3, 2, 3) and x.dtype == torch.float32 and y.dtype == torch.int64
    expected = (np.array([1.0, 128 / 255, 0.0]) - MEAN) / STD
    assert np.allclose(x[:, 1, 2].numpy(), expected, atol=1e-6)


def test_train_transform_from_config():
    cfg = config.resolve("gpu")
    train_t = transforms.TrainTransform.from_config(cfg)
    assert train_t.crop_size == 321 and train_t.scale_range == (0.5, 1.5) and train_t.flip
    off = transforms.TrainTransform.from_config(config.resolve("gpu", overrides={"data.scale_aug": False}))
    assert off.scale_range is None


def test_bad_arguments():
    with pytest.raises(ValueError, match="scale_range"):
        transforms.TrainTransform(scale_range=(1.5, 0.5))
    with pytest.raises(ValueError, match="crop_size"):
        transforms.TrainTransform(crop_size=0)
