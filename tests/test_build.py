"""dlib.data: the one entry point (build_dataset) and its errors."""

import pytest

from dlib import data
from dlib.core import config


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


def test_a_new_data_set_is_one_fact_entry_and_one_builder(monkeypatch):
    """A toy data set of 3 classes registered in dlib.core.datasets.DATASETS and dlib.data.BUILDERS: the config accepts
    its name and checks model.num_classes against it, build_dataset builds it, and the questions code asks of a
    data set (paper data? generated? a development split?) are answered from its entry."""
    import numpy as np

    from dlib.core import datasets
    from dlib.training import limits

    class Squares:
        ids = ["a", "b"]

        def __len__(self):
            return 2

        def __getitem__(self, i):
            label = np.zeros((8, 8), np.uint8)
            label[2:6, 2:6] = i + 1
            return np.zeros((8, 8, 3), np.uint8), label

    toy = datasets.DatasetInfo("squares", 3, paper=False, generated=False, dev_split=None)
    monkeypatch.setitem(datasets.DATASETS, "squares", toy)
    monkeypatch.setitem(data.BUILDERS, "squares", lambda cfg, split, large, transform, cache_dir: Squares())
    with pytest.raises(config.ConfigError, match="model.num_classes=3"):
        config.resolve("smoke", overrides={"data.dataset": "squares"})
    cfg = config.resolve("smoke", overrides={"data.dataset": "squares", "model.num_classes": 3,
                                             "data.crop_size": 10_000})
    built = data.build_dataset(cfg, "val")
    assert len(built) == 2 and built[1][1].max() == 2
    limits.check_crop(cfg)  # not generated: images of many sizes, so no crop limit, as on VOC
    with pytest.raises(config.ConfigError, match="one of proxy, voc, pretext"):
        config.resolve("smoke", overrides={"data.dataset": "unregistered"})
