"""Small objects the training, schedule and loss tests share: a tiny output-stride-8 network and a training
config that runs in a second. Not a test module (pytest collects test_*.py only): the tests import it."""

import torch
from torch import nn

from dlib.core import config


class Tiny(nn.Module):
    """Three stride-2 convolutions (output stride 8) and a 3x3 classifier named ``head``."""

    def __init__(self, dropout: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 6, 3, 2, 1), nn.ReLU(), nn.Conv2d(6, 8, 3, 2, 1), nn.ReLU(),
                                  nn.Conv2d(8, 8, 3, 2, 1), nn.ReLU(), nn.Dropout(dropout))
        self.head = nn.Conv2d(8, 21, 3, padding=1)

    def forward(self, x):
        return self.head(self.body(x))


def small_train_cfg(**extra):
    """The smoke profile shrunk to a 6-iteration training on 12 tiny proxy images (seed 5); ``extra``: overrides."""
    overrides = {"train.iterations": 6, "train.batch_size": 4, "train.checkpoint_every": 2, "train.log_every": 1,
                 "data.crop_size": 24, "data.proxy_image_size": 32, "data.proxy_train": 12,
                 "train.base_lr": 0.05}
    overrides.update(extra)
    return config.resolve("smoke", seed=5, overrides=overrides)


def tiny_net(seed=0, dropout=0.0):
    """A :class:`Tiny` with its initial weights drawn from ``seed``."""
    torch.manual_seed(seed)
    return Tiny(dropout)
