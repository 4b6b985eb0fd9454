"""dlib.data: the one entry point (build_dataset) and its errors."""

import pytest

from dlib import config, data


def test_build_dataset_gives_the_configured_proxy_split(tmp_path):
    cfg = config.resolve("smoke")
    from_cfg = data.build_dataset(cfg, "val", cache_dir=tmp_path)
    assert len(from_cfg) == cfg.data.proxy_val and from_cfg[0][0].shape[0] == cfg.data.proxy_image_size


def test_build_dataset_errors():
    with pytest.raises(FileNotFoundError, match="voc_root"):
        data.build_dataset(config.resolve("gpu"), "train")
    with pytest.raises(ValueError, match="proxy"):
        data.build_dataset(config.resolve("gpu", overrides={"data.voc_root": "/x"}), "train", large=True)
    with pytest.raises(ValueError, match="split"):
        data.build_dataset(config.resolve("smoke"), "test")
