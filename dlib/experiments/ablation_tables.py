"""The ablation tables of DeepLab v2 as data: each row's training, whether the CRF follows, the paper's mIoU.

Table 4 (ResNet-101, PASCAL VOC 2012 val, mIoU %; components cumulative, top to bottom), Table 3 (VGG-16, each
head before and after its CRF) and, ours, each Table-4 component added alone to the baseline
(:data:`ONE_AT_A_TIME`). :func:`training_config` turns a row's training into the resolved config that trains
it on a profile; dlib.experiments.ablation runs them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from dlib.core.config import Config
from dlib.core.datasets import dataset_info
from dlib.nets.models import TABLE as MODEL_TABLE
from dlib.nets.standins import CONTROL_KEYWORD


@dataclass(frozen=True)
class Training:
    """One network to train: which backbone family and head, and the training-time components."""

    backbone: str  # "resnet" or "vgg"
    head: str  # "baseline", "largefov", "aspp_s", "aspp_l"
    msc: bool = False
    coco: bool = False
    aug: bool = False
    control: bool = False  # starts from the +COCO control: the same pretraining on the task's own data

    @property
    def key(self) -> str:
        parts = [self.backbone, self.head] + [c for c in ("msc", "coco", "aug", "control") if getattr(self, c)]
        return "_".join(parts)


@dataclass(frozen=True)
class Row:
    table: str  # "table4" or "table3"
    name: str
    training: Training
    crf: bool
    paper_miou: float  # the paper's number (percent)

    @property
    def components(self) -> str:
        t = self.training
        used = [c.upper() if c != "aug" else "Aug" for c in ("msc", "coco", "aug") if getattr(t, c)]
        if t.control:
            used.append("task-data pretraining (the +COCO control)")
        used.append({"baseline": "baseline head", "largefov": "LargeFOV", "aspp_s": "ASPP-S",
                     "aspp_l": "ASPP-L"}[t.head])
        if self.crf:
            used.append("CRF")
        return " + ".join(used)


def _t4(msc=False, coco=False, aug=False, head="baseline", control=False) -> Training:
    return Training("resnet", head, msc=msc, coco=coco, aug=aug, control=control)


# DeepLab v2, Table 4 (ResNet-101, VOC 2012 val, mIoU %).
TABLE4 = (
    Row("table4", "baseline", _t4(), False, 68.72),
    Row("table4", "+MSC", _t4(msc=True), False, 71.27),
    Row("table4", "+COCO", _t4(msc=True, coco=True), False, 73.28),
    Row("table4", "+Aug", _t4(msc=True, coco=True, aug=True), False, 74.87),
    Row("table4", "+LargeFOV", _t4(msc=True, coco=True, aug=True, head="largefov"), False, 75.54),
    Row("table4", "ASPP (instead of LargeFOV)", _t4(msc=True, coco=True, aug=True, head="aspp_l"), False, 76.35),
    Row("table4", "+CRF", _t4(msc=True, coco=True, aug=True, head="aspp_l"), True, 77.69),
)

# DeepLab v2, Table 3 (VGG-16, VOC 2012 val, mIoU % before / after CRF): no MSC, no COCO, no scale
# augmentation (a Table-4 component), each row with its own cross-validated CRF.
TABLE3 = tuple(
    Row("table3", f"{name}{' +CRF' if crf else ''}", Training("vgg", head), crf, paper)
    for name, head, before, after in (("LargeFOV", "largefov", 65.76, 69.84), ("ASPP-S", "aspp_s", 66.98, 69.73),
                                      ("ASPP-L", "aspp_l", 68.96, 71.57))
    for crf, paper in ((False, before), (True, after))
)

# Each component added alone to the Table-4 baseline (not in the paper, which adds them cumulatively).
ONE_AT_A_TIME = (
    Row("ofat", "baseline", _t4(), False, math.nan),
    Row("ofat", "+MSC", _t4(msc=True), False, math.nan),
    Row("ofat", "+COCO", _t4(coco=True), False, math.nan),
    Row("ofat", "+Aug", _t4(aug=True), False, math.nan),
    Row("ofat", "+LargeFOV", _t4(head="largefov"), False, math.nan),
    Row("ofat", "+ASPP", _t4(head="aspp_l"), False, math.nan),
    Row("ofat", "+CRF", _t4(), True, math.nan),
)

# What +COCO measures (ours, not in the paper): the +COCO row starts from a network pretrained on another data set
# for some iterations; the control starts from the same pretraining on the task's own training images. Both are
# compared with +MSC, the row +COCO is added to in Table 4; +COCO minus the control is the other data's share.
COCO_CONTROL = (
    Row("coco_control", "+MSC", _t4(msc=True), False, 71.27),
    Row("coco_control", "+COCO", _t4(msc=True, coco=True), False, 73.28),
    Row("coco_control", "+MSC, pretrained as +COCO on the task's own data", _t4(msc=True, control=True), False,
        math.nan),
)


def model_name(cfg: Config, training: Training) -> str:
    """The network of a training, from dlib.nets.models.TABLE (each row names the (backbone, head) it runs): the paper's
    networks on the paper's data, the small variants otherwise (Table 4 on the small ResNet, Table 3 on the small
    VGG-16 shape)."""
    small = not dataset_info(cfg.data.dataset).paper
    for row in MODEL_TABLE:
        if row.ablation == (training.backbone, training.head) and row.backbone.startswith("small_") == small:
            return row.name
    raise KeyError(f"no network in dlib.nets.models.TABLE runs {training.backbone} with the {training.head} head "
                   f"({'small variants' if small else 'the paper networks'}); give one row ablation=(backbone, head)")


def training_config(cfg: Config, training: Training, seed: int) -> Config:
    """The resolved config of one training: the profile's, with the row's components switched.

    The base lr follows the model's family at training time (:func:`dlib.training.schedule.base_lr_for`:
    ``train.base_lr``
    for ResNet, ``train.base_lr_vgg`` for VGG-16; DeepLab's released solvers use 2.5e-4 and 1e-3). Every
    checkpoint is kept, for the convergence curve of notebook 06.
    """
    name = model_name(cfg, training)
    overrides: dict[str, Any] = {
        "seed": seed,
        "model.name": name,
        "train.msc": training.msc,
        "eval.msc": training.msc,  # MSC: multi-scale inputs with max fusion, in training and at test
        "data.scale_aug": training.aug,
        "train.keep_checkpoints": 0,
    }
    if training.control:
        overrides["model.coco_checkpoint"] = CONTROL_KEYWORD
    elif not training.coco:
        overrides["model.coco_checkpoint"] = None
    elif str(cfg.model.coco_checkpoint).endswith(".caffemodel"):  # dlib.nets.caffe.is_caffemodel, without torch
        # The released COCO model (dlib.nets.caffe) fits the prototxt's network and the Caffe input convention.
        overrides.update({"model.caffe_layout": True, "data.input_convention": "caffe"})
    if cfg.ablation.width is not None:
        overrides["model.width"] = cfg.ablation.width
    if cfg.ablation.iterations is not None:
        overrides["train.iterations"] = cfg.ablation.iterations
        overrides["train.checkpoint_every"] = max(1, cfg.ablation.iterations // 5)  # one at 80%: last_fifth_gain
    return cfg.replace(overrides)


TABLES = {"table4": TABLE4, "table3": TABLE3, "ofat": ONE_AT_A_TIME, "coco_control": COCO_CONTROL}
# Notebook 06's file name of a table (results/<profile>/06_ablation/<name>.csv), where it is not the table's name.
TABLE_FILES = {"ofat": "one_at_a_time", "coco_control": "coco_control_table"}


def trainings_of(tables=tuple(TABLES)) -> list[Training]:
    """Every distinct training of ``tables`` (names of :data:`TABLES`), in table and row order."""
    return list(dict.fromkeys(row.training for name in tables for row in TABLES[name]))


def table_file(name: str) -> str:
    return TABLE_FILES.get(name, name)
# How each table's increments are taken: from the row above (cumulative), from the first row, or none.
REFERENCES = {"table4": "previous", "table3": None, "ofat": "first", "coco_control": "first"}
