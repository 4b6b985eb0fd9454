"""The data sets: the built-in proxy set (``proxy``), PASCAL VOC 2012 + SBD (``voc``), the training transforms
(``transforms``) and the augmented sample stream (``sampling``). ``build`` makes any of them from a Config by its
``data.dataset`` name (the registry ``BUILDERS``); its names are importable from the package itself:
``from dlib import data; data.build_dataset(cfg, "val")``.
"""

from dlib.data.build import BUILDERS, DemoPair, build_dataset, demo_pairs

__all__ = ["BUILDERS", "DemoPair", "build_dataset", "demo_pairs"]
