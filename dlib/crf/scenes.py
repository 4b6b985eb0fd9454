"""Inputs to demonstrate and test on without a trained network: scenes, VOC samples, simulated unaries.

* :func:`draw_ellipses` is the one scene generator: filled ellipses (discs when both radii agree)
  painted in order over a background, with their label map. :func:`synthetic_scene` (random coloured
  ellipses with class labels, for the CRF) and :func:`disc_scene` (given grey discs, for object scale
  and MSC) are two settings of it.
* :func:`sample_images` draws real VOC 2012 images when the shared subset is present, synthetic
  scenes otherwise.
* :func:`simulate_unaries` turns a label into SIMULATED softmax scores, coarse like DeepLab's; never a
  substitute for a network's output.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

import numpy as np

from dlib.core.constants import IGNORE_INDEX, NUM_CLASSES
from dlib.core.io import read_image, read_label


class Ellipse(NamedTuple):
    """A filled axis-aligned ellipse: centre (cy, cx) and radii (ry, rx) in px, its label and its colour."""

    cy: float
    cx: float
    ry: float
    rx: float
    label: int
    colour: float | tuple[float, float, float]  # grey level or RGB, in the background's units


def draw_ellipses(background: np.ndarray, ellipses: Iterable[Ellipse]) -> tuple[np.ndarray, np.ndarray]:
    """Paint ``ellipses`` over ``background`` (H, W, 3), later ones on top.

    Returns the image (H, W, 3) float64 and the label map (H, W) int64 (0 where no ellipse is).
    A pixel (y, x) is inside when ((y - cy) / ry)^2 + ((x - cx) / rx)^2 <= 1, evaluated as
    ((y - cy) rx)^2 + ((x - cx) ry)^2 <= (ry rx)^2, exact for integer centres and radii.
    """
    image = np.array(background, dtype=np.float64)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"background must be (H, W, 3), got shape {image.shape}")
    h, w = image.shape[:2]
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float64)
    label = np.zeros((h, w), dtype=np.int64)
    for e in ellipses:
        if e.ry <= 0 or e.rx <= 0:
            raise ValueError(f"ellipse radii must be > 0 px, got ry={e.ry}, rx={e.rx}")
        inside = ((rows - e.cy) * e.rx) ** 2 + ((cols - e.cx) * e.ry) ** 2 <= (e.ry * e.rx) ** 2
        image[inside] = e.colour
        label[inside] = e.label
    return image, label


def disc_scene(size: int, discs, *, background: float = 0.2, foreground: float = 1.0):
    """Bright discs on a flat background, to show what works at which object scale (notebook 03).

    ``discs``: (centre_y, centre_x, radius) in pixels. Returns the image (size, size, 3) float32 in
    [0, 1] and a label map (size, size) int64: 0 background, i + 1 inside disc i (later discs on top).
    """
    flat = np.full((size, size, 3), background, dtype=np.float64)
    image, label = draw_ellipses(flat, [Ellipse(cy, cx, r, r, i + 1, foreground)
                                        for i, (cy, cx, r) in enumerate(discs)])
    return image.astype(np.float32), label


def synthetic_scene(height: int = 96, width: int = 128, *, num_objects: int = 3, num_classes: int = NUM_CLASSES,
                    void_width: int = 0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A toy (image uint8 (H, W, 3), label uint8 (H, W)): coloured ellipses on a shaded background.

    Objects have random classes 1..C-1 and colours that differ from the background, so the label
    boundaries are colour edges; pixel noise (sd 4 levels) keeps it from being trivial. With
    ``void_width`` > 0 the label gets VOC-style void (255) outlines of about that width.
    """
    rng = np.random.default_rng(seed)
    rows = np.arange(height, dtype=np.float64)[:, None, None]
    base = rng.uniform(40, 215, size=3)
    shaded = base + 30 * (rows / height - 0.5) * rng.choice([-1, 1], size=3)  # a vertical gradient
    objects = []
    for _ in range(num_objects):
        cy, cx = rng.uniform(0.2, 0.8) * height, rng.uniform(0.2, 0.8) * width
        ry, rx = rng.uniform(0.12, 0.3) * height, rng.uniform(0.12, 0.3) * width
        colour = rng.uniform(0, 255, size=3)
        while np.abs(colour - base).max() < 80:  # a visible colour edge against the background
            colour = rng.uniform(0, 255, size=3)
        objects.append(Ellipse(cy, cx, ry, rx, int(rng.integers(1, num_classes)), tuple(colour)))
    image, label = draw_ellipses(np.broadcast_to(shaded, (height, width, 3)), objects)
    image = np.clip(image + rng.normal(0, 4, size=image.shape), 0, 255).astype(np.uint8)
    label = label.astype(np.uint8)
    if void_width > 0:
        from dlib.evaluation.metrics import trimap_band

        label[trimap_band(label, void_width / 2, ignore_index=None)] = IGNORE_INDEX
    return image, label


def sample_images(n: int, *, seed: int = 0, scale: float = 1.0,
                  num_classes: int = NUM_CLASSES) -> tuple[list[tuple[str, np.ndarray, np.ndarray]], str]:
    """n (id, image uint8 (H, W, 3), label uint8 (H, W)) and a line saying where they came from.

    Real VOC 2012 images and labels from the shared read-only subset (dlib.core.io.shared_voc_root())
    when present, drawn at random with ``seed``; :func:`synthetic_scene` otherwise. ``scale`` < 1
    shrinks them (bilinear for the image, nearest for the label).
    """
    from PIL import Image

    from dlib.core.io import repo_relative, shared_voc_root

    root = shared_voc_root()
    rng = np.random.default_rng(seed)
    if root is not None:
        ids = (root / "ImageSets" / "Segmentation" / "train.txt").read_text().split()
        chosen = sorted(rng.choice(ids, size=min(n, len(ids)), replace=False).tolist())
        samples = [(i, read_image(root / "JPEGImages" / f"{i}.jpg"),
                    read_label(root / "SegmentationClass" / f"{i}.png"))
                   for i in chosen]
        source = f"PASCAL VOC 2012 train images ({repo_relative(root)})"
    else:
        samples = [(f"synthetic{k:03d}", *synthetic_scene(240, 320, num_objects=3, num_classes=num_classes,
                                                          void_width=4, seed=seed * 1000 + k)) for k in range(n)]
        source = "synthetic scenes (dlib.crf.scenes.synthetic_scene; no VOC data found)"
    if scale != 1.0:
        resized = []
        for image_id, image, label in samples:
            size = (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale)))  # PIL: (W, H)
            resized.append((image_id, np.array(Image.fromarray(image).resize(size, Image.BILINEAR)),
                            np.array(Image.fromarray(label).resize(size, Image.NEAREST))))
        samples = resized
    return samples, source


def _fill_void(label: np.ndarray, ignore_index: int) -> np.ndarray:
    """Void pixels take the label of the nearest non-void pixel."""
    from scipy import ndimage

    void = label == ignore_index
    if void.all():
        raise ValueError("label is entirely void; nothing to simulate from")
    if not void.any():
        return label
    idx = ndimage.distance_transform_edt(void, return_distances=False, return_indices=True)
    return label[idx[0], idx[1]]


def simulate_unaries(label: np.ndarray, num_classes: int, *, stride: int = 8, confidence: float = 5.0,
                     noise: float = 2.0, noise_cells: float = 1.5, distractors: int = 0, seed: int = 0,
                     ignore_index: int = IGNORE_INDEX) -> np.ndarray:
    """SIMULATED softmax scores (C, H, W) float32 from a ground-truth label, coarse like DeepLab's.

    The label is sampled at the centre of each ``stride`` x ``stride`` cell (DeepLab's output stride
    is 8), turned into scores ``confidence * one_hot + noise * field``, upsampled bilinearly to the
    label's size and passed through a softmax: blurry boundaries and blob-shaped mistakes like a
    network's. ``field`` is N(0, 1) smoothed over ``noise_cells`` cells, on the classes present plus
    ``distractors`` absent ones. Void pixels take the label of the nearest non-void pixel.
    """
    from scipy import ndimage
    from scipy.special import softmax

    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be (H, W), got shape {label.shape}")
    label = _fill_void(label, ignore_index)
    if label.max() >= num_classes:
        raise ValueError(f"label has class {int(label.max())} >= num_classes={num_classes}")
    h, w = label.shape
    off = stride // 2
    if min(h, w) <= off:
        raise ValueError(f"label {h}x{w} is too small for stride {stride}")
    coarse = label[off::stride, off::stride]  # (h', w'), the stride-8 grid
    rng = np.random.default_rng(seed)
    scores_small = confidence * np.eye(num_classes, dtype=np.float64)[coarse].transpose(2, 0, 1)
    # Errors of a network are spatially correlated blobs, not independent per cell: smooth the noise
    # over ``noise_cells`` coarse cells (Gaussian sd), then rescale it to sd ``noise``.
    field = rng.standard_normal(scores_small.shape)
    if noise_cells > 0:
        field = ndimage.gaussian_filter(field, sigma=(0, noise_cells, noise_cells), mode="reflect")
        field /= max(float(field.std()), 1e-12)
    # Noise only on the classes in the image and ``distractors`` absent ones, the confusions a network
    # makes; the other classes stay ``confidence`` below the true one.
    present = np.unique(coarse)
    absent = np.setdiff1d(np.arange(num_classes), present)
    noisy = np.concatenate([present, rng.choice(absent, size=min(distractors, absent.size), replace=False)])
    scores_small[noisy] += noise * field[noisy]
    # Bilinear upsampling: pixel y sits at (y - off) / stride on the coarse grid.
    ys = (np.arange(h) - off) / stride
    xs = (np.arange(w) - off) / stride
    grid = np.meshgrid(ys, xs, indexing="ij")
    up = np.stack([ndimage.map_coordinates(s, grid, order=1, mode="nearest") for s in scores_small])
    return softmax(up, axis=0).astype(np.float32)
