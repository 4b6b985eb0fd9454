"""Failure analysis (DeepLab v2, Sec. 4.5 and Fig. 14): thin objects, per-object recall, worst images.

DeepLab v2 (Sec. 4.5, "Failure Modes") reports that the model "fails to capture the delicate
boundaries of objects, such as bicycle and chair", and that the CRF cannot recover them because
the unary term is not confident there. This module measures that on any data set:

* **Objects.** An object is a connected component (8-connected) of one class in a label map; its
  width is the ribbon width of :mod:`dlib.evaluation.thinness`.
* **Per-object recall**: the fraction of an object's pixels predicted as its class. Recall,
  not IoU: a prediction has no object identity, so false positives cannot be assigned to one object.
* **Worst images**: per-image mean IoU over the classes present in the label or the prediction.
* **Tables of notebook 07**: recall by width bin and by class, the trimap curve before and after the CRF
  and its gain, and the numbers its summary records.

The paper shows these failures qualitatively only (Fig. 14); the width measure and per-object recall
are this project's way of quantifying them, not the paper's.

    >>> table = object_table(label, {"net": pred})      # doctest: +SKIP
    >>> table[["class", "width", "area", "recall_net"]]  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from dlib.core.constants import IGNORE_INDEX, NUM_CLASSES
from dlib.evaluation.thinness import ribbon_width, skeleton, skeleton_length

# ----------------------------------------------------------------------------------------------
# Objects: width, area and recall per connected component
# ----------------------------------------------------------------------------------------------

_EIGHT = np.ones((3, 3), dtype=bool)


def _named_predictions(label: np.ndarray, predictions) -> dict[str, np.ndarray]:
    """``predictions`` (None, one map or a mapping name -> map) as {name: (H, W) map}, each of the label's shape."""
    if predictions is None:
        preds: dict[str, np.ndarray] = {}
    elif isinstance(predictions, Mapping):
        preds = {str(k): np.asarray(v) for k, v in predictions.items()}
    else:
        preds = {"": np.asarray(predictions)}
    for name, pred in preds.items():
        if pred.shape != label.shape:
            raise ValueError(f"prediction {name!r} is {pred.shape} but the label is {label.shape}; "
                             "upsample the prediction to the label's size first")
    return preds


def _class_rows(label: np.ndarray, c: int, preds: Mapping[str, np.ndarray], image_id: Any,
                min_area: int) -> list[dict]:
    """The rows of :func:`object_table` for the objects of class ``c``."""
    from scipy import ndimage

    mask = label == c
    rows_, cols_ = np.nonzero(mask)
    r0, r1, c0, c1 = rows_.min(), rows_.max() + 1, cols_.min(), cols_.max() + 1
    crop = mask[r0:r1, c0:c1]  # objects of one class are thinned together: components are
    comp, n = ndimage.label(crop, structure=_EIGHT)  # 8-separated, so thinning acts on each alone
    area = np.bincount(comp.ravel(), minlength=n + 1)
    length = skeleton_length(skeleton(crop), comp, n)
    hits = {name: np.bincount(comp.ravel(), weights=(pred[r0:r1, c0:c1] == c).ravel(), minlength=n + 1)
            for name, pred in preds.items()}
    rows = []
    for k in range(1, n + 1):
        if area[k] < min_area:
            continue
        row = {"image_id": image_id, "class": c, "object": k, "area": int(area[k]),
               "skeleton_length": float(length[k]), "width": ribbon_width(float(area[k]), float(length[k]))}
        for name, h in hits.items():
            row[f"recall_{name}" if name else "recall"] = float(h[k] / area[k])
        rows.append(row)
    return rows


def object_table(label: np.ndarray, predictions: Mapping[str, np.ndarray] | np.ndarray | None = None, *,
                 image_id: Any = None, num_classes: int = NUM_CLASSES, background: int | None = 0,
                 ignore_index: int = IGNORE_INDEX, min_area: int = 1):
    """One row per object (8-connected component of one class in ``label`` (H, W)).

    Columns: ``image_id``, ``class``, ``object`` (component number within its class), ``area``
    (px), ``skeleton_length`` (px), ``width`` (px, :func:`~dlib.evaluation.thinness.ribbon_width`), and for
    each prediction (a mapping name -> (H, W) class map, or one map, named ``""``) ``recall_<name>`` (or
    ``recall``): the fraction of the object's pixels predicted as its class. The ``background`` class and
    ``ignore_index`` (void) are not objects; components smaller than ``min_area`` px are dropped.
    """
    import pandas as pd

    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be a 2-D (H, W) class map, got shape {label.shape}")
    preds = _named_predictions(label, predictions)
    rows = []
    classes = [int(c) for c in np.unique(label) if c != ignore_index and c != background]
    for c in classes:
        if not 0 <= c < num_classes:
            raise ValueError(f"label has class {c} outside 0..{num_classes - 1} (and it is not void "
                             f"{ignore_index}); check num_classes")
        rows += _class_rows(label, c, preds, image_id, min_area)
    columns = ["image_id", "class", "object", "area", "skeleton_length", "width"]
    columns += [f"recall_{n}" if n else "recall" for n in preds]
    return pd.DataFrame(rows, columns=columns)


def object_tables(labels: Sequence[np.ndarray], predictions: Mapping[str, Sequence[np.ndarray]] | None = None, *,
                  ids: Sequence[Any] | None = None, class_names: Sequence[str] | None = None, **kwargs):
    """:func:`object_table` over a data set, concatenated; ``class_names`` adds a ``name`` column."""
    import pandas as pd

    labels = list(labels)
    ids = list(range(len(labels))) if ids is None else list(ids)
    predictions = {k: list(v) for k, v in (predictions or {}).items()}
    for name, preds in predictions.items():
        if len(preds) != len(labels):
            raise ValueError(f"{len(preds)} predictions {name!r} for {len(labels)} labels; pass one per image")
    if len(ids) != len(labels):
        raise ValueError(f"{len(ids)} ids for {len(labels)} labels")
    tables = [object_table(label, {k: v[i] for k, v in predictions.items()}, image_id=ids[i], **kwargs)
              for i, label in enumerate(labels)]
    table = pd.concat(tables, ignore_index=True) if tables else object_table(np.zeros((1, 1), np.uint8))
    if class_names is not None:
        table.insert(2, "name", [class_names[c] for c in table["class"]])
    return table


def pixel_recall(table, column: str) -> float:
    """Recall over all the pixels of a table's objects: ``column`` weighted by ``area``; NaN for no objects."""
    area = float(table["area"].sum()) if len(table) else 0.0
    return float((table[column] * table["area"]).sum() / area) if area else float("nan")


def recall_by_width(table, edges: Sequence[float], column: str = "recall"):
    """Recall of the objects binned by width: one row per bin [lo, hi) with ``objects``,
    ``median_width``, ``mean_recall`` (mean over objects) and ``pixel_recall`` (over all their
    pixels: area-weighted). ``column`` names the recall column of an :func:`object_table`."""
    import pandas as pd

    edges = [float(e) for e in edges]
    if len(edges) < 2 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"edges must be at least two increasing widths, got {edges}")
    rows = []
    for lo, hi in zip(edges, edges[1:]):
        part = table[(table["width"] >= lo) & (table["width"] < hi)]
        area = part["area"].sum()
        rows.append({"width_lo": lo, "width_hi": hi, "objects": len(part),
                     "median_width": float(part["width"].median()) if len(part) else float("nan"),
                     "mean_recall": float(part[column].mean()) if len(part) else float("nan"),
                     "pixel_recall": float((part[column] * part["area"]).sum() / area) if area else float("nan")})
    return pd.DataFrame(rows)


def recall_by_width_of(table, edges: Sequence[float], predictions: Sequence[str]):
    """:func:`recall_by_width` of each prediction's ``recall_<name>`` column, stacked, with a ``prediction``
    column naming it (the table notebook 07 writes as ``recall_by_width.csv``)."""
    import pandas as pd

    return pd.concat([recall_by_width(table, edges, column=f"recall_{m}").assign(prediction=m)
                      for m in predictions], ignore_index=True)


def objects_by_class(objects, names: Sequence[str], recalls: Mapping[str, str],
                     ious: Mapping[str, Sequence[float]]):
    """One row per class 1 .. len(names) - 1 that has objects in an :func:`object_table`.

    Columns: ``class`` (its name), ``objects``, ``median_width_px``, then for each ``out: column`` of
    ``recalls`` the :func:`pixel_recall` of the class's objects in ``column``, then for each ``out: values``
    of ``ious`` the class's entry ``values[k]`` (a per-class IoU, indexed by class number).
    """
    import pandas as pd

    rows = []
    for k in range(1, len(names)):
        mine = objects[objects["class"] == k]
        if not len(mine):
            continue
        row = {"class": names[k], "objects": len(mine), "median_width_px": mine["width"].median()}
        row.update({out: pixel_recall(mine, column) for out, column in recalls.items()})
        row.update({out: values[k] for out, values in ious.items()})
        rows.append(row)
    return pd.DataFrame(rows)


def width_iou_correlation(by_class, width: str = "median_width_px", iou: str = "iou_before") -> float:
    """Spearman rank correlation between a class's median object width and its IoU, from
    :func:`objects_by_class`; NaN when every IoU is equal (the correlation is undefined)."""
    return by_class[width].corr(by_class[iou], method="spearman") if by_class[iou].nunique() > 1 else float("nan")


# ----------------------------------------------------------------------------------------------
# Classes and images
# ----------------------------------------------------------------------------------------------

def rank_classes(class_iou, column: str = "after_crf"):
    """The rows of a per-class IoU table that have a score in ``column`` (NaN: the class is in neither
    label nor prediction), lowest IoU first."""
    return class_iou.dropna(subset=[column]).sort_values(column)


def image_scores(preds: Sequence[np.ndarray], labels: Sequence[np.ndarray], num_classes: int, *,
                 ids: Sequence[Any] | None = None, ignore_index: int = IGNORE_INDEX):
    """Per-image scores, worst first: columns ``index``, ``image_id``, ``mean_iou`` (over the classes
    in the image's label or prediction, void ignored), ``pixel_acc``, ``classes`` (in the label)."""
    import pandas as pd

    from dlib.evaluation.metrics import confusion_matrix, scores

    preds, labels = list(preds), list(labels)
    if len(preds) != len(labels):
        raise ValueError(f"got {len(preds)} predictions for {len(labels)} labels; pass one per image")
    ids = list(range(len(labels))) if ids is None else list(ids)
    rows = []
    for i, (pred, label) in enumerate(zip(preds, labels)):
        s = scores(confusion_matrix(np.asarray(pred), np.asarray(label), num_classes, ignore_index))
        present = [int(c) for c in np.unique(label) if c != ignore_index]
        rows.append({"index": i, "image_id": ids[i], "mean_iou": s["mean_iou"], "pixel_acc": s["pixel_acc"],
                     "classes": present})
    frame = pd.DataFrame(rows, columns=["index", "image_id", "mean_iou", "pixel_acc", "classes"])
    return frame.sort_values(["mean_iou", "index"], kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------------------------
# The trimap curve before and after the CRF (DeepLab v2, Fig. 10)
# ----------------------------------------------------------------------------------------------

def trimap_table(predictions: Mapping[str, Sequence[np.ndarray]], labels: Sequence[np.ndarray],
                 widths: Sequence[float], num_classes: int):
    """:func:`~dlib.evaluation.metrics.trimap_scores` of each named set of predictions, stacked, with a
    ``method`` column naming it."""
    import pandas as pd

    from dlib.evaluation.metrics import trimap_scores

    return pd.concat([trimap_scores(preds, labels, widths, num_classes).assign(method=name)
                      for name, preds in predictions.items()], ignore_index=True)


def crf_gain(trimap, before: str, after: str):
    """mIoU per trimap width (rows) and method (columns) from a :func:`trimap_table`, with
    ``crf_gain_points``: 100 x (``after`` - ``before``), in points of mIoU."""
    gain = trimap.pivot(index="width", columns="method", values="mean_iou")
    gain["crf_gain_points"] = 100 * (gain[after] - gain[before])
    return gain


def widest_band_share(trimap, labels: Sequence[np.ndarray], ignore_index: int = IGNORE_INDEX) -> float:
    """The fraction of the scored (non-void) pixels of ``labels`` that the widest band of a
    :func:`trimap_table` holds (its first method's last width)."""
    scored = sum(int((np.asarray(label) != ignore_index).sum()) for label in labels)
    widths = trimap["width"].drop_duplicates()
    return trimap["pixels"].iloc[len(widths) - 1] / scored


# ----------------------------------------------------------------------------------------------
# The numbers notebook 07's summary records
# ----------------------------------------------------------------------------------------------

def recall_split(objects, *, narrow: float = 3.0, wide: float = 12.0):
    """The objects narrower than ``narrow`` px and those ``wide`` px and wider, from an :func:`object_table`."""
    return objects[objects["width"] < narrow], objects[objects["width"] >= wide]


def summary_tables(class_iou, thin: Sequence[int], objects, worst, gain, *, stride: int, narrow: float = 3.0,
                   wide: float = 12.0) -> dict:
    """The tables of notebook 07's ``summary.json``: the ``thin`` classes' IoU before and after the CRF, pixel
    recall of the narrow and wide objects (network, CRF, stride bound), the worst images and the trimap gain."""
    def recalls(part):
        return {"objects": len(part), "before": pixel_recall(part, "recall_model"),
                "after": pixel_recall(part, "recall_crf"), f"stride{stride}_bound": pixel_recall(part, "recall_bound")}

    thin_objects, wide_objects = recall_split(objects, narrow=narrow, wide=wide)
    return {
        "thin_classes": {class_iou["class"][k]: {"iou_before": class_iou["before_crf"][k],
                                                 "iou_after": class_iou["after_crf"][k]} for k in thin},
        f"recall_narrower_than_{narrow:g}px": recalls(thin_objects),
        f"recall_{wide:g}px_and_wider": recalls(wide_objects),
        "worst_images": worst[["image_id", "mean_iou", "mean_iou_after_crf"]].to_dict("records"),
        "trimap_crf_gain_points": {str(w): g for w, g in gain["crf_gain_points"].items()},
    }
