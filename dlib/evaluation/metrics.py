"""Segmentation metrics: the confusion matrix, mean IoU, pixel accuracy, and the boundary ("trimap") band.

The papers score with the PASCAL VOC measure, mean intersection-over-union over the 21 classes
(DeepLab v1, Sec. 5; DeepLab v2, Sec. 4), accumulated over the whole data set before dividing.
The trimap experiment (DeepLab v1, Fig. 5; DeepLab v2, Fig. 10) scores only the pixels that lie
in a narrow band around object boundaries, to show that the CRF improves the boundaries.

    >>> conf = confusion_matrix(pred, label, num_classes=21)    # doctest: +SKIP
    >>> scores(conf)["mean_iou"]                                  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from dlib.core.constants import IGNORE_INDEX


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int,
                     ignore_index: int | None = IGNORE_INDEX) -> np.ndarray:
    """Pixel counts (num_classes, num_classes) int64: row = true class, column = predicted class.

    ``pred`` and ``target`` are integer label maps of the same shape (any shape, e.g. (H, W) or
    (N, H, W)); pixels whose target is ``ignore_index`` are not counted.
    """
    pred = np.asarray(pred)
    target = np.asarray(target)
    if not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if pred.shape != target.shape:
        raise ValueError(f"pred and target must have the same shape, got {pred.shape} and {target.shape}; "
                         "resize the prediction to the label's size before scoring")
    for name, arr in (("pred", pred), ("target", target)):
        if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
            raise TypeError(f"{name} must hold integer class indices, got dtype {arr.dtype}; "
                            "take the argmax over classes first")
    target = target.astype(np.int64).ravel()
    pred = pred.astype(np.int64).ravel()
    keep = np.ones(target.shape, dtype=bool) if ignore_index is None else target != ignore_index
    target, pred = target[keep], pred[keep]
    if target.size and (target.min() < 0 or target.max() >= num_classes):
        bad = np.unique(target[(target < 0) | (target >= num_classes)])[:5]
        raise ValueError(f"target has labels {bad.tolist()} outside [0, {num_classes}) that are not "
                         f"ignore_index={ignore_index}; check num_classes or the label's void value")
    if pred.size and (pred.min() < 0 or pred.max() >= num_classes):
        bad = np.unique(pred[(pred < 0) | (pred >= num_classes)])[:5]
        raise ValueError(f"pred has labels {bad.tolist()} outside [0, {num_classes}) on scored pixels")
    counts = np.bincount(target * num_classes + pred, minlength=num_classes * num_classes)
    return counts.reshape(num_classes, num_classes).astype(np.int64)


def scores(conf: np.ndarray) -> dict:
    """``mean_iou``, ``pixel_acc`` (fractions in [0, 1]) and ``class_iou`` (array, NaN where undefined).

    IoU_c = TP / (TP + FP + FN) (PASCAL VOC measure). A class absent from both the prediction and
    the target has no IoU (NaN) and is left out of the mean. An empty matrix gives NaN scores.
    """
    conf = np.asarray(conf, dtype=np.float64)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"conf must be a square (C, C) confusion matrix, got shape {conf.shape}")
    tp = np.diag(conf)
    union = conf.sum(0) + conf.sum(1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        class_iou = np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)
    total = conf.sum()
    present = ~np.isnan(class_iou)
    return {
        "mean_iou": float(class_iou[present].mean()) if present.any() else float("nan"),
        "pixel_acc": float(tp.sum() / total) if total > 0 else float("nan"),
        "class_iou": class_iou,
    }


def trimap_band(label: np.ndarray, width: float, ignore_index: int | None = IGNORE_INDEX) -> np.ndarray:
    """Bool (H, W): pixels within ``width`` px (Euclidean) of a label boundary.

    A boundary pixel is one whose 4-neighbour has another label, or a void pixel: in VOC the void
    label is the thin band drawn along object outlines, so the papers' trimap grows around it
    (DeepLab v1, Fig. 5; v2, Fig. 10). ``width=0`` gives the boundary pixels alone. Void pixels
    inside the band stay unscored when the band is used with :func:`confusion_matrix`.
    """
    return _boundary_distance(label, ignore_index) <= _check_width(width)


def _check_width(width: float) -> float:
    if not np.isfinite(width) or width < 0:
        raise ValueError(f"trimap width must be a finite number of pixels >= 0, got {width!r}")
    return float(width)


def _boundary_distance(label: np.ndarray, ignore_index: int | None) -> np.ndarray:
    """Euclidean distance (px) from each pixel to the nearest boundary pixel; inf when there is none."""
    from scipy import ndimage

    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be a 2-D (H, W) class map, got shape {label.shape}")
    boundary = np.zeros(label.shape, dtype=bool)
    if ignore_index is not None:
        boundary |= label == ignore_index
    # A pixel is on a boundary when its right or lower neighbour differs: mark both of the pair.
    dy = label[1:, :] != label[:-1, :]
    dx = label[:, 1:] != label[:, :-1]
    boundary[1:, :] |= dy
    boundary[:-1, :] |= dy
    boundary[:, 1:] |= dx
    boundary[:, :-1] |= dx
    if not boundary.any():
        return np.full(label.shape, np.inf)
    return ndimage.distance_transform_edt(~boundary)


def trimap_scores(preds: Sequence[np.ndarray], labels: Sequence[np.ndarray], widths: Iterable[float],
                  num_classes: int, ignore_index: int | None = IGNORE_INDEX):
    """mIoU and pixel accuracy inside the trimap band of each width, accumulated over all images.

    Returns a pandas DataFrame with columns ``width``, ``mean_iou``, ``pixel_acc``, ``pixels``
    (scored pixels in the band): the curve of DeepLab v1 Fig. 5 / v2 Fig. 10 (widths 0 to 40 px).
    """
    import pandas as pd

    preds, labels = list(preds), list(labels)
    widths = [_check_width(w) for w in widths]
    if len(preds) != len(labels):
        raise ValueError(f"got {len(preds)} predictions for {len(labels)} labels; pass one per image")
    confs = {w: np.zeros((num_classes, num_classes), dtype=np.int64) for w in widths}
    for pred, label in zip(preds, labels):
        label = np.asarray(label)
        distance = _boundary_distance(label, ignore_index)
        for w in widths:
            band = distance <= w
            confs[w] += confusion_matrix(np.asarray(pred)[band], label[band], num_classes, ignore_index)
    rows = []
    for w in widths:
        s = scores(confs[w])
        rows.append({"width": w, "mean_iou": s["mean_iou"], "pixel_acc": s["pixel_acc"],
                     "pixels": int(confs[w].sum())})
    return pd.DataFrame(rows)
