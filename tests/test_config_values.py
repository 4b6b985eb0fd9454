"""Typed, validated config values (dlib.core.config_values): text, JSON and Python values converted to each key's type
and
range-checked, with one-line errors naming the key, what it expects and an example."""

import pytest

from dlib.core import config


def test_boolean_words_are_booleans_for_every_boolean_key():
    bool_keys = [k for k in config.valid_keys() if config.field_type(k) is bool]
    assert "train.msc" in bool_keys and "eval.flip" in bool_keys
    for key in bool_keys:
        section, name = key.split(".")
        for text, expected in (("off", False), ("ON", True), ("no", False), ("Yes", True), ("0", False),
                               ("1", True), ("false", False), ("True", True), (0, False), (True, True)):
            cfg = config.resolve("smoke", overrides={key: text})
            assert getattr(getattr(cfg, section), name) is expected, (key, text)
    # what a checkpoint records is the boolean, not the text
    assert config.resolve("cpu", overrides={"train.msc": "off"}).to_dict()["train"]["msc"] is False
    with pytest.raises(config.ConfigError, match=r"'train.msc' expects a boolean .*train.msc=false.*'maybe'"):
        config.resolve("cpu", overrides={"train.msc": "maybe"})


@pytest.mark.parametrize("key, value, expects", [
    ("train.iterations", "abc", "an integer"),
    ("train.iterations", 3.7, "an integer"),
    ("train.checkpoint_every", 0, ">= 1"),
    ("train.batch_size", 0, ">= 1"),
    ("seed", "abc", "an integer"),
    ("train.base_lr", -1, "> 0"),
    ("train.momentum", 1.5, "< 1"),
    ("data.dataset", "coco", "proxy, voc"),
    ("eval.max_images", 0, ">= 1, or null"),
    ("model.msc_scales", [1, -0.5], "> 0"),
    ("data.scale_range", [1.0], "a list of 2 numbers"),
    ("crf.theta_alpha", 0, "> 0"),
])
def test_bad_value_is_one_line_naming_key_type_and_example(key, value, expects):
    with pytest.raises(config.ConfigError) as info:
        config.resolve("cpu", overrides={key: value})
    text = str(info.value)
    assert "\n" not in text and repr(key) in text and expects in text and f"e.g. {key}=" in text
    assert isinstance(info.value, ValueError) and isinstance(info.value, TypeError)


def test_values_are_converted_to_the_field_type():
    cfg = config.resolve("cpu", overrides={"train.iterations": "500", "train.base_lr": "1e-3", "crf.w1": 5,
                                           "ablation.seeds": 3, "data.mean": "0.5,0.5,0.5", "model.pretrained": "none",
                                           "eval.max_images": "null", "train.checkpoint_every": 10.0})
    assert cfg.train.iterations == 500 and cfg.train.base_lr == 1e-3 and isinstance(cfg.crf.w1, float)
    assert cfg.ablation.seeds == (3,) and cfg.data.mean == (0.5, 0.5, 0.5) and cfg.model.pretrained is None
    assert cfg.eval.max_images is None and cfg.train.checkpoint_every == 10
