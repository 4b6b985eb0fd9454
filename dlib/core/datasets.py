"""The data sets by name (``data.dataset``): what each one is, so that code asks a question instead of comparing
names. Facts only; reading the data is dlib.data's (one builder per name) and dlib.experiments.pretrain's (the pretext
task).

A new data set is one reader module, one :class:`DatasetInfo` here and one builder in ``dlib.data.BUILDERS``.
"""

from __future__ import annotations

from dataclasses import dataclass

from dlib.core.constants import NUM_CLASSES


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    num_classes: int
    paper: bool  # the papers' own data (PASCAL VOC): their networks, CRF grid and protocol, images of many sizes
    generated: bool  # drawn by code, every image of one size (data.proxy_image_size): a crop can be checked
    dev_split: str | None  # a development split apart from the reported one (chosen by data.val_split), or None


# pretext: the ImageNet stand-in's task (dlib.nets.standins: background + 7 shapes x 3 colour groups, each plain or
# textured), never evaluated as a segmentation benchmark.
DATASETS: dict[str, DatasetInfo] = {
    "proxy": DatasetInfo("proxy", NUM_CLASSES, paper=False, generated=True, dev_split="val"),
    "voc": DatasetInfo("voc", NUM_CLASSES, paper=True, generated=False, dev_split=None),
    "pretext": DatasetInfo("pretext", 43, paper=False, generated=True, dev_split=None),
}


def dataset_info(name: str) -> DatasetInfo:
    """The registered facts of data set ``name``; a clear error for an unknown one."""
    if name not in DATASETS:
        raise ValueError(f"unknown data.dataset {name!r}; registered data sets: {', '.join(DATASETS)}")
    return DATASETS[name]
