"""Data: one entry point (:func:`build_dataset`) for the configured data set, and the demo pairs of the notebooks.

Every data set has the same interface: ``len(ds)``, ``ds.ids`` (one string per image) and
``ds[i] -> (image, label)`` with ``image`` uint8 (H, W, 3) RGB and ``label`` uint8 (H, W) class
indices (0 = background, 1..20 the VOC classes, 255 = void, never scored); a ``transform``
given to the constructor is applied as ``transform(image, label)``. The paper's augmentation
lives in :mod:`dlib.data.transforms`.

The data sets live in their own modules: the built-in proxy data set (``data.dataset=proxy``; a proxy, not
PASCAL VOC) in :mod:`dlib.data.proxy`, PASCAL VOC 2012 and SBD (``data.dataset=voc``) in :mod:`dlib.data.voc`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from dlib.core.io import shared_voc_root
from dlib.data.proxy import SPLIT_CODES, ProxySegmentation, make_proxy_sample
from dlib.data.voc import VOC_URL, VOCSegmentation

# --------------------------------------------------------------------------------------------
# One entry point for the notebooks and the command line
# --------------------------------------------------------------------------------------------

def _proxy(cfg, split: str, large: bool, transform: Callable | None, cache_dir: str | os.PathLike | None):
    # The proxy's evaluation split is data.val_split: "val" (the development split, for designing) or
    # "test" (drawn from other seeds, the split the cpu profile reports on).
    name = "train" if split == "train" else cfg.data.val_split
    if name not in SPLIT_CODES:
        raise ValueError(f"data.val_split={cfg.data.val_split!r} is not a proxy split; use 'val' (development) or "
                         "'test' (the reported split)")
    return ProxySegmentation.from_config(cfg, name, large=large, transform=transform, cache_dir=cache_dir)


def _voc(cfg, split: str, large: bool, transform: Callable | None, cache_dir: str | os.PathLike | None):
    d = cfg.data
    if large:
        raise ValueError("large=True exists only for the proxy data set; on VOC, COCO pretraining is a "
                         "checkpoint given as model.pretrained")
    if d.voc_root is None:
        raise FileNotFoundError(f"data.voc_root is not set; point it at the VOCdevkit folder (download: {VOC_URL}) "
                                "or use data.dataset=proxy")
    name = d.train_split if split == "train" else d.val_split
    return VOCSegmentation(d.voc_root, name, transform, sbd_root=d.sbd_root)


# One builder per data set that build_dataset reads (the facts about each: dlib.core.datasets.DATASETS); the pretext
# task's images are drawn by dlib.experiments.pretrain, never through here.
BUILDERS: dict[str, Callable] = {"proxy": _proxy, "voc": _voc}


def build_dataset(cfg, split: str = "train", *, large: bool = False, transform: Callable | None = None,
                  cache_dir: str | os.PathLike | None = None):
    """The configured data set for ``split`` ("train" or "val"): the proxy set or VOC (+SBD for train_aug).

    ``large=True`` (proxy only) is the larger proxy set standing in for MS-COCO.
    """
    if split not in ("train", "val"):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    if cfg.data.dataset not in BUILDERS:
        raise ValueError(f"unknown data.dataset {cfg.data.dataset!r}; use one of {', '.join(BUILDERS)}")
    return BUILDERS[cfg.data.dataset](cfg, split, large, transform, cache_dir)


@dataclass(frozen=True)
class DemoPair:
    """One image/label pair for figures: ``name`` identifies it, ``source`` says where it came from."""

    image: np.ndarray
    label: np.ndarray
    name: str
    source: str


def demo_pairs(n: int, *, seed: int = 0, size: int = 128) -> list[DemoPair]:
    """``n`` real VOC 2012 train-split pairs from ``../shared/data`` when present, else proxy samples.

    Used by notebooks for figures and small measurements; the source string says which, so a figure is
    never passed off as something it is not. VOC images are the first ``n`` ids of the subset's train.txt.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    voc = shared_voc_root()
    if voc is not None:
        ds = VOCSegmentation(voc.parent, "train")
        source = "PASCAL VOC 2012 train split (../shared/data/voc2012-train-subset; train images, not val)"
        return [DemoPair(*ds[i], name=ds.ids[i], source=source) for i in range(min(n, len(ds)))]
    rng = np.random.default_rng(seed)
    source = "built-in proxy data set (generated; not VOC)"
    return [DemoPair(*make_proxy_sample(rng, size), name=f"proxy_{seed}_{i}", source=source) for i in range(n)]
