import dataclasses

import pytest

from dlib.core import config


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


# ---- typed, validated overrides --------------------------------------------------------------------------


def test_num_classes_must_match_the_data_set():
    with pytest.raises(config.ConfigError, match=r"'model.num_classes' is 5 .* 21 classes"):
        config.resolve("cpu", overrides={"model.num_classes": 5})


def test_profile_is_not_an_override_key():
    assert "profile" not in config.valid_keys()
    with pytest.raises(config.ConfigError, match=r"--profile .*PROFILE.*resolve\(profile="):
        config.resolve("cpu", overrides={"profile": "gpu"})


def test_every_field_has_a_known_type():
    # New fields are validated from their annotation: each key converts its own default back unchanged.
    base = config.resolve("gpu")
    for key in config.valid_keys():
        value = base.to_dict()
        for part in key.split("."):
            value = value[part]
        assert config.convert_value(key, value) == value, key


def test_parallel_ablation_trainings_with_loader_processes_are_refused_with_the_fix():
    # The gpu profile's data loader uses worker processes; the ablation's pool workers are daemonic and
    # cannot start them, so asking for both fails before anything trains.
    gpu = config.resolve("gpu")
    assert gpu.data.loader_workers > 0
    with pytest.raises(config.ConfigError, match="ablation.workers=1"):
        config.resolve("gpu", overrides={"ablation.workers": 2})
    assert config.resolve("gpu", overrides={"ablation.workers": 2, "data.loader_workers": 0}).ablation.workers == 2


# ---- round trip: what a worker process or a checkpoint receives rebuilds the same Config ---------------------

@pytest.mark.parametrize("profile", config.PROFILES)
def test_every_profile_survives_dict_and_json_round_trips(profile):
    import json

    plain = config.resolve(profile)
    changed = config.resolve(profile, seed=3, overrides={"eval.max_images": None, "model.msc_scales": [1.0, 0.5],
                                                         "train.msc": False, "crf.w1": 4.5})
    for cfg in (plain, changed):
        d = cfg.to_dict()
        assert d["profile"] == profile and set(d) == {f.name for f in dataclasses.fields(config.Config)}
        assert config.Config.from_dict(d) == cfg
        text = cfg.to_json()
        assert json.loads(text) == json.loads(json.dumps(d))  # plain JSON: tuples became lists, None null
        back = config.Config.from_dict(json.loads(text))
        assert back == cfg and back.to_json() == text
        assert isinstance(back.model.msc_scales, tuple)  # JSON's lists are tuples again
    assert changed.to_dict()["seed"] == 3 and changed.to_dict()["eval"]["max_images"] is None
    assert json.loads(changed.to_json())["model"]["msc_scales"] == [1.0, 0.5]
