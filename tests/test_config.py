import dataclasses

import pytest

from dlib import config


def test_profiles_resolve_and_are_frozen():
    for name in config.PROFILES:
        cfg = config.resolve(name)
        assert cfg.profile == name
        with pytest.raises(dataclasses.FrozenInstanceError):
            cfg.seed = 3  # type: ignore[misc]


def test_gpu_profile_is_the_paper():
    cfg = config.resolve("gpu")
    # DeepLab v2, Sec. 4.1: batch 10, 321 crops, 20k iterations, poly 0.9, momentum 0.9, wd 5e-4
    assert (cfg.train.batch_size, cfg.data.crop_size, cfg.train.iterations) == (10, 321, 20000)
    assert (cfg.train.poly_power, cfg.train.momentum, cfg.train.weight_decay) == (0.9, 0.9, 5e-4)
    assert cfg.model.msc_scales == (1.0, 0.75, 0.5)
    assert (cfg.crf.w2, cfg.crf.theta_gamma, cfg.crf.iterations) == (3.0, 3.0, 10)
    assert cfg.data.dataset == "voc"


def test_order_defaults_then_profile_then_overrides():
    base = config.resolve("cpu")
    assert base.data.dataset == "proxy"  # profile beats default
    assert base.train.momentum == 0.9  # default survives
    cfg = config.resolve("cpu", seed=7, overrides={"train.iterations": 5, "data": {"crop_size": 64}})
    assert (cfg.train.iterations, cfg.data.crop_size, cfg.seed) == (5, 64, 7)
    assert config.resolve("cpu").train.iterations == base.train.iterations  # nothing leaked


def test_lists_become_tuples():
    cfg = config.resolve("smoke", overrides={"model.msc_scales": [1.0, 0.5]})
    assert cfg.model.msc_scales == (1.0, 0.5)


def test_unknown_profile_lists_valid_ones():
    with pytest.raises(ValueError, match="smoke, cpu, gpu"):
        config.resolve("laptop")


def test_unknown_key_is_a_clear_error():
    with pytest.raises(KeyError, match="train.iterations"):
        config.resolve("cpu", overrides={"train.iteration": 3})
    with pytest.raises(KeyError, match="section"):
        config.resolve("cpu", overrides={"train": 3})
    with pytest.raises(TypeError):
        config.resolve("cpu", seed="0")  # type: ignore[arg-type]


def test_replace_and_dict_roundtrip():
    cfg = config.resolve("smoke").replace({"crf.w1": 5.0})
    assert cfg.crf.w1 == 5.0
    assert cfg.to_dict()["crf"]["w1"] == 5.0
    assert "train.base_lr" in config.valid_keys()
