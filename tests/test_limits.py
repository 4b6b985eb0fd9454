"""dlib.training.limits: the activation count against a hand count, the memory and crop refusals naming their keys."""

import pytest
import torch
from torch import nn

from dlib.core.config import resolve
from dlib.core.config_values import ConfigError
from dlib.training import limits


def test_activations_per_pixel_is_the_hand_count():
    # conv 3 -> 4 channels at full resolution (4 floats per pixel), a ReLU and a pool (not counted), then a
    # conv 4 -> 2 channels on the pooled half-resolution map (2 floats per pooled pixel)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2), nn.Conv2d(4, 2, 1))
    side = limits._PROBE
    expected = (4 * side * side + 2 * (side // 2) ** 2) / side**2
    assert limits.activations_per_pixel(model) == pytest.approx(expected)
    assert model.training  # the probe leaves the mode as it found it


def test_memory_check_names_the_key_and_the_estimate(monkeypatch):
    cfg = resolve("smoke", overrides={"train.batch_size": 4})
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1))
    need = limits.training_bytes(cfg, model)
    monkeypatch.setattr(limits, "available_bytes", lambda device: need + 1)
    limits.check_memory(cfg, model, torch.device("cpu"))  # fits: nothing said
    monkeypatch.setattr(limits, "available_bytes", lambda device: need - 1)
    with pytest.raises(ConfigError, match=r"'train\.batch_size' \(4 crops of 48x48.*GiB to train"):
        limits.check_memory(cfg, model, torch.device("cpu"))


def test_a_crop_larger_than_the_proxy_images_is_refused():
    limits.check_crop(resolve("smoke"))
    with pytest.raises(ConfigError, match=r"'data\.crop_size' \(97\).*at most 96 px"):
        limits.check_crop(resolve("smoke", overrides={"data.crop_size": 97}))
    limits.check_crop(resolve("smoke", overrides={"data.crop_size": 97, "data.dataset": "voc"}))  # VOC pads
