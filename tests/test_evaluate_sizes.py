"""dlib.evaluate on a data set whose images come in two sizes, scored against a hand-counted confusion matrix.

Images of one size are batched together; an image of another size starts a new batch. Each image here is one
colour and the model predicts that colour's class everywhere, so every pixel's (label, prediction) pair is
known by hand, whatever the image's size.
"""

import numpy as np
import pytest
import torch
from torch import nn

from dlib import config, evaluate

COLOURS = np.array([[20, 20, 20], [230, 30, 30], [30, 230, 30], [30, 30, 230]], np.float32)  # classes 0-3


class NearestColour(nn.Module):
    """Logit (i, j) on input pixel (8i, 8j): class scores = -squared distance to each class colour."""

    def __init__(self, cfg):
        super().__init__()
        self.mean = torch.tensor(cfg.data.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg.data.std).view(1, 3, 1, 1)

    def forward(self, x):
        rgb = (x * self.std + self.mean) * 255  # undo the normalisation
        d = ((rgb[:, None, :, ::8, ::8] - torch.from_numpy(COLOURS)[None, :, :, None, None]) ** 2).sum(2)
        out = torch.full((x.shape[0], 21, *d.shape[-2:]), -1e4)
        out[:, :4] = -d / 100
        return out


class Items:
    def __init__(self, items):
        self.items, self.ids = items, [f"img{i}" for i in range(len(items))]

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _image(colour, h, w):
    return np.broadcast_to(COLOURS[colour].astype(np.uint8), (h, w, 3)).copy()


def test_two_image_sizes_are_scored_as_counted_by_hand():
    cfg = config.resolve("smoke", overrides={"eval.max_images": None, "data.eval_pad": 0})
    big, small = (16, 24), (9, 13)
    l0 = np.full(big, 1, np.uint8)  # colour 1: 4 void rows, a 12 x 6 block labelled 2, 12 x 18 pixels of 1
    l0[:4] = 255
    l0[4:, :6] = 2
    l1 = np.full(big, 2, np.uint8)  # colour 2: 16 x 24 = 384 pixels of 2
    l2 = np.full(small, 3, np.uint8)  # colour 3, the small image: first row (13) labelled 0, 8 x 13 = 104 of 3
    l2[0] = 0
    l3 = np.zeros(big, np.uint8)  # colour 0: a 4 x 4 corner labelled 1, 384 - 16 = 368 of 0
    l3[-4:, -4:] = 1
    data = Items([(_image(1, *big), l0), (_image(2, *big), l1), (_image(3, *small), l2), (_image(0, *big), l3)])

    out = evaluate.evaluate(cfg, NearestColour(cfg), data, msc=False, flip=False, keep_predictions=True,
                            progress=False)

    # Rows: label, columns: prediction (each image's colour class).
    hand = np.zeros((21, 21), np.int64)
    hand[1, 1], hand[2, 1] = 216, 72  # image 0
    hand[2, 2] = 384  # image 1
    hand[0, 3], hand[3, 3] = 13, 104  # image 2 (small)
    hand[0, 0], hand[1, 0] = 368, 16  # image 3
    assert np.array_equal(out["confusion"], hand)
    assert [p.shape for p in out["predictions"]] == [big, big, small, big]
    # IoU = TP / (label pixels + predicted pixels - TP), classes 0-3; classes 4-20 are absent (NaN, not averaged).
    ious = [368 / (381 + 384 - 368), 216 / (232 + 288 - 216), 384 / (456 + 384 - 384), 104 / (104 + 117 - 104)]
    assert out["class_iou"][:4] == pytest.approx(ious)
    assert all(np.isnan(out["class_iou"][4:]))
    assert out["mean_iou"] == pytest.approx(sum(ious) / 4)
    assert out["pixel_acc"] == pytest.approx((368 + 216 + 384 + 104) / (381 + 232 + 456 + 104))
    assert out["num_images"] == 4
