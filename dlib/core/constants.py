"""Facts shared by every layer of dlib: PASCAL VOC's classes, void label and palette; the CRF's normalisations.

This module imports nothing from dlib; every other module takes these from here.
"""

from __future__ import annotations

import numpy as np

IGNORE_INDEX = 255  # VOC's "void" label: object outlines and ambiguous pixels, never scored or trained on
NUM_CLASSES = 21  # PASCAL VOC 2012: background + 20 object classes
MSC_SCALES = (1.0, 0.75, 0.5)  # the multi-scale inputs of DeepLab v2, Sec. 3.2 (dlib.nets.msc)
VOC_CLASSES = (
    "background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
    "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor",
)
assert len(VOC_CLASSES) == NUM_CLASSES


def voc_palette(n: int = 256) -> np.ndarray:
    """The PASCAL VOC colour map, (n, 3) uint8: class c's colour from the bits of c (VOCdevkit's recipe)."""
    palette = np.zeros((n, 3), dtype=np.uint8)
    for c in range(n):
        r = g = b = 0
        v = c
        for shift in range(7, -1, -1):
            r |= ((v >> 0) & 1) << shift
            g |= ((v >> 1) & 1) << shift
            b |= ((v >> 2) & 1) << shift
            v >>= 3
        palette[c] = (r, g, b)
    return palette


# The fully connected CRF's kernel normalisations (config key crf.normalization; both backends run each one):
# pydensecrf's NORMALIZE_* and NO_NORMALIZATION, and "deeplab": DeepLab's densecrf (per pixel), which is "after".
NORMALIZATIONS = ("symmetric", "before", "after", "none", "deeplab")
NORMALIZATION_ALIASES = {"deeplab": "after"}  # the name a user picks -> the operation both backends run


def kernel_normalization(name: str) -> str:
    """The kernel normalisation ``name`` runs: one of symmetric, before, after, none ("deeplab" -> "after")."""
    if name not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {name!r}")
    return NORMALIZATION_ALIASES.get(name, name)
