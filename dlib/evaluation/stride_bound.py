"""What output stride alone costs: the recall of a *perfect* score map at the network's output stride.

The bound is the label itself average-pooled over stride x stride cells (void pixels do not vote),
upsampled bilinearly and arg-maxed (:func:`dlib.nets.atrous.label_at_output_stride`): whatever it
loses, a network that predicts at that stride loses too, before any learning error (DeepLab v2,
Sec. 4.5 puts the thin-object failures on the coarse score map). Here it is measured on a bar of
chosen width (notebook 07's exercises) and on real PASCAL VOC 2012 annotations.

    >>> bound_recall(bar_label(5), stride=8)                     # doctest: +SKIP
    >>> voc = on_voc(root, "train", stride=8, num_classes=21)     # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlib.core.constants import IGNORE_INDEX, VOC_CLASSES
from dlib.core.datasets import dataset_info
from dlib.evaluation.failure import object_tables, objects_by_class, pixel_recall, recall_split

# ----------------------------------------------------------------------------------------------
# A bar of chosen width
# ----------------------------------------------------------------------------------------------


def bar_label(width: int, void: int = 0, size: int = 64, left: int = 24) -> np.ndarray:
    """A (size, size) uint8 label: class 1 in columns ``left`` .. ``left + width - 1`` (a vertical bar on
    background 0), with a void band ``void`` px wide on each side of it (as VOC draws its outlines)."""
    label = np.zeros((size, size), np.uint8)
    label[:, left - void:left + width + void] = IGNORE_INDEX
    label[:, left:left + width] = 1
    return label


def bound_recall(label: np.ndarray, stride: int, cls: int = 1, num_classes: int = 2) -> float:
    """The fraction of the pixels of class ``cls`` that the perfect score map at ``stride`` labels ``cls``."""
    from dlib.nets.atrous import label_at_output_stride

    label = np.asarray(label)
    return float((label_at_output_stride(label, stride, num_classes=num_classes)[label == cls] == cls).mean())


def void_share(labels: Sequence[np.ndarray], ignore_index: int = IGNORE_INDEX) -> float:
    """The fraction of all the pixels of ``labels`` that are void."""
    return float(np.mean(np.concatenate([np.asarray(label).ravel() for label in labels]) == ignore_index))


# ----------------------------------------------------------------------------------------------
# The bound on a set of annotations (PASCAL VOC)
# ----------------------------------------------------------------------------------------------

def voc_folder(cfg: Any, voc_root: str | os.PathLike | None = None) -> tuple[Path | None, str]:
    """Which VOC annotations to measure the bound on, and their split: the configured VOC val split when the
    profile evaluates on the paper's data (``dlib.core.datasets``: VOC, with ``cfg.data.voc_root``), else ``voc_root``'s
    train split, else the shared train-split subset's (``dlib.core.io.shared_voc_root``; None when absent)."""
    from dlib.core.io import shared_voc_root

    if dataset_info(cfg.data.dataset).paper and cfg.data.voc_root is not None:
        return Path(cfg.data.voc_root), "val"
    return (Path(voc_root) if voc_root is not None else shared_voc_root()), "train"


@dataclass(frozen=True)
class StrideBound:
    """The stride bound on a set of annotations: per-class IoU, per-object recall, trimap curve."""

    source: str  # where the labels come from, in words
    ids: list  # image ids
    labels: list  # (H, W) class maps
    scores: dict  # metrics.scores of the bound: mean_iou, pixel_acc, class_iou
    class_iou: Any  # DataFrame: class, iou_stride8_upper_bound
    objects: Any  # object_tables with a recall_stride8 column
    trimap: Any  # metrics.trimap_scores of the bound
    by_class: Any  # objects_by_class, lowest IoU first

    def summary(self, *, lowest: int = 3, narrow: float = 3.0, wide: float = 12.0) -> dict:
        """The numbers notebook 07's summary records for the bound."""
        thin, thick = recall_split(self.objects, narrow=narrow, wide=wide)
        return {"source": self.source, "images": len(self.labels), "mean_iou": self.scores["mean_iou"],
                "class_iou": dict(zip(self.class_iou["class"], self.scores["class_iou"])),
                "lowest_classes": self.by_class.head(lowest)["class"].tolist(),
                f"recall_narrower_than_{narrow:g}px": pixel_recall(thin, "recall_stride8"),
                f"recall_{wide:g}px_and_wider": pixel_recall(thick, "recall_stride8"),
                "trimap": self.trimap[["width", "mean_iou"]].to_dict("records")}


def on_labels(labels: Sequence[np.ndarray], ids: Sequence[Any], *, stride: int, num_classes: int,
              widths: Sequence[float], min_area: int = 20, names: Sequence[str] = VOC_CLASSES,
              source: str = "") -> StrideBound:
    """The bound at ``stride`` on ``labels``: per-class IoU, per-object recall (objects of ``min_area`` px or
    more) and mIoU in the trimap bands of ``widths`` px."""
    import pandas as pd

    from dlib.evaluation import metrics
    from dlib.nets.atrous import label_at_output_stride

    labels = [np.asarray(label) for label in labels]
    bound = [label_at_output_stride(label, stride, num_classes=num_classes) for label in labels]
    scores = metrics.scores(sum(metrics.confusion_matrix(p, t, num_classes) for p, t in zip(bound, labels)))
    class_iou = pd.DataFrame({"class": list(names), "iou_stride8_upper_bound": scores["class_iou"]})
    objects = object_tables(labels, {"stride8": bound}, ids=list(ids), class_names=names,
                            num_classes=num_classes, min_area=min_area)
    by_class = objects_by_class(objects, names, {"pixel_recall": "recall_stride8"},
                                {"iou": scores["class_iou"]}).sort_values("iou")
    return StrideBound(source=source, ids=list(ids), labels=labels, scores=scores, class_iou=class_iou,
                       objects=objects, trimap=metrics.trimap_scores(bound, labels, widths, num_classes),
                       by_class=by_class)


def on_voc(root: str | os.PathLike, split: str, *, stride: int, num_classes: int, widths: Sequence[float],
           max_images: int | None = None, min_area: int = 20) -> StrideBound:
    """:func:`on_labels` on the first ``max_images`` (None: all) annotations of a VOC 2012 split."""
    from dlib.core.io import repo_relative
    from dlib.data.voc import VOCSegmentation

    voc = VOCSegmentation(root, split)
    m = len(voc) if max_images is None else min(len(voc), max_images)
    ids = voc.ids[:m]
    source = (f"PASCAL VOC 2012 {split}-split images ({m} of {len(voc)}, {repo_relative(voc.root)}); "
              f"upper bound of a stride-{stride} predictor (label pooled {stride}x{stride}, upsampled bilinearly), "
              "not a trained model")
    return on_labels([voc.read_label(i) for i in ids], ids, stride=stride, num_classes=num_classes,
                     widths=widths, min_area=min_area, source=source)
