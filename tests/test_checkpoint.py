"""dlib.core.checkpoint: files that load with torch.load(weights_only=True), RNG states restored, format 1 refused."""

import random

import numpy as np
import pytest
import torch
from torch import nn

from dlib import data
from dlib.core import checkpoint, config
from dlib.training import train


def _tiny(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 4, 3, 2, 1), nn.ReLU(), nn.Conv2d(4, 4, 3, 2, 1), nn.ReLU(),
                         nn.Conv2d(4, 21, 3, 2, 1))


def _cfg():
    return config.resolve("smoke", overrides={"train.iterations": 4, "train.batch_size": 2, "train.checkpoint_every": 2,
                                              "train.log_every": 1, "data.crop_size": 24, "data.proxy_image_size": 32,
                                              "data.proxy_train": 6, "train.base_lr": 0.05})


def test_a_checkpoint_loads_with_weights_only_and_restores_every_rng(tmp_path):
    cfg = _cfg()
    model = _tiny()
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    torch.manual_seed(3), np.random.seed(4), random.seed(5), np.random.standard_normal()  # a cached gaussian too
    path = checkpoint.save_checkpoint(tmp_path, 7, model, opt, cfg)
    expected = (torch.rand(3), np.random.standard_normal(3), np.random.random(2), random.random())
    state = torch.load(path, map_location="cpu", weights_only=True)  # plain PyTorch, no allow-list
    assert state["iteration"] == 7 and state["format"] == checkpoint.FORMAT and state["config"] == cfg.to_dict()
    torch.manual_seed(0), np.random.seed(0), random.seed(0)
    checkpoint.set_rng_state(state["rng"])
    again = (torch.rand(3), np.random.standard_normal(3), np.random.random(2), random.random())
    assert torch.equal(expected[0], again[0]) and np.array_equal(expected[1], again[1])
    assert np.array_equal(expected[2], again[2]) and expected[3] == again[3]


def test_a_format_1_checkpoint_with_numpy_rng_state_is_refused_by_name(tmp_path):
    old = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    torch.save({"iteration": 2, "model": {}, "rng": old, "format": 1}, tmp_path / "ckpt_0000002.pt")
    with pytest.raises(checkpoint.UnsafeFileError, match=r"ckpt_0000002\.pt holds Python objects.*numpy"):
        checkpoint.read_checkpoint(tmp_path / "ckpt_0000002.pt", ("rng",))


def test_a_resumed_training_equals_an_uninterrupted_one(tmp_path):
    cfg = _cfg()
    ds = data.build_dataset(cfg, "train")
    full = train.train(cfg, tmp_path / "full", model=_tiny(), dataset=ds, progress=False)
    train.train(cfg, tmp_path / "cut", model=_tiny(), dataset=ds, stop_after=3, progress=False)  # killed at 3
    assert checkpoint.latest_checkpoint(tmp_path / "cut").name == "ckpt_0000002.pt"
    resumed = train.train(cfg, tmp_path / "cut", model=_tiny(seed=9), dataset=ds, progress=False)
    assert resumed.resumed_from == 2 and resumed.complete
    for k, v in full.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[k], v), k


def test_config_diff_ignores_resumable_keys():
    cfg = _cfg()
    saved = cfg.replace({"train.log_every": 3, "train.base_lr": 0.5}).to_dict()
    assert checkpoint.config_diff(saved, cfg) == ["train.base_lr"]
