"""dlib.core.constants against published PASCAL VOC facts (VOCdevkit's class list and colour map)."""

import os
from pathlib import Path

import numpy as np
import pytest

from dlib.core import constants

ROOT = Path(__file__).resolve().parent.parent

# The VOC 2012 segmentation colours as published with the VOCdevkit (and seen in every ground-truth PNG).
PUBLISHED_COLOURS = {
    0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (128, 128, 0), 4: (0, 0, 128), 5: (128, 0, 128),
    6: (0, 128, 128), 7: (128, 128, 128), 8: (64, 0, 0), 9: (192, 0, 0), 10: (64, 128, 0), 11: (192, 128, 0),
    12: (64, 0, 128), 13: (192, 0, 128), 14: (64, 128, 128), 15: (192, 128, 128), 16: (0, 64, 0),
    17: (128, 64, 0), 18: (0, 192, 0), 19: (128, 192, 0), 20: (0, 64, 128), 255: (224, 224, 192),
}


def test_palette_has_the_published_voc_colours():
    palette = constants.voc_palette()
    assert palette.shape == (256, 3) and palette.dtype == np.uint8
    for index, colour in PUBLISHED_COLOURS.items():
        assert tuple(palette[index].tolist()) == colour, (index, constants.VOC_CLASSES[index] if index < 21 else "void")
    assert constants.voc_palette(21).tolist() == palette[:21].tolist()
    assert len({tuple(c) for c in palette.tolist()}) == 256  # every label its own colour


def test_class_names_and_labels_are_vocs():
    # VOCdevkit's classes, in label order 1..20, after background (label 0).
    assert constants.VOC_CLASSES[0] == "background" and constants.NUM_CLASSES == 21
    assert constants.VOC_CLASSES[1] == "aeroplane" and constants.VOC_CLASSES[15] == "person"
    assert constants.VOC_CLASSES[20] == "tvmonitor" and len(set(constants.VOC_CLASSES)) == 21
    assert constants.IGNORE_INDEX == 255  # VOC's void (object outlines)


def test_palette_equals_the_one_in_a_real_voc_label_png():
    root = Path(os.environ.get("DLIB_SHARED_DATA", ROOT.parent / "shared" / "data"))
    pngs = sorted((root / "voc2012-train-subset" / "VOC2012" / "SegmentationClass").glob("*.png"))[:1]
    if not pngs:
        pytest.skip("the shared VOC 2012 subset (../shared/data/voc2012-train-subset) is not present")
    from PIL import Image

    with Image.open(pngs[0]) as im:
        assert im.mode == "P"
        stored = np.array(im.getpalette(), dtype=np.uint8).reshape(-1, 3)
    assert stored[:256].tolist() == constants.voc_palette().tolist()
