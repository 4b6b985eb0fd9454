"""The sentences notebook 07 prints and records: its reading of the failure tables, computed from them.

Every sentence is built from a table of :mod:`dlib.evaluation.failure` (per-class IoU, per-object recall,
the trimap gain) or of :mod:`dlib.evaluation.stride_bound`, so the notebook's prose cannot drift from its
numbers. Scores are fractions in [0, 1]; sentences print them as percentages or as points (x 100).

    >>> thin_classes_sentence(class_iou, ["bicycle", "chair"])   # doctest: +SKIP
    'The CRF erases bicycle (IoU 6.2% -> 0.0%) and lowers chair (IoU 32.5% -> 23.3%).'
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from dlib.evaluation.failure import pixel_recall


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def _objects(n: int) -> str:
    return f"{n} object" if n == 1 else f"{n} objects"


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def change_verb(before: float, after: float, *, tolerance: float = 0.005) -> str:
    """What a step did to a score in [0, 1]: 'erases' (to 0 from above it), 'lowers', 'leaves unchanged' (within
    ``tolerance``), 'raises'."""
    if after == 0 < before:
        return "erases"
    if abs(after - before) <= tolerance:
        return "leaves unchanged"
    return "raises" if after > before else "lowers"


def thin_classes_sentence(class_iou, thin: Sequence[str], *, before: str = "before_crf",
                          after: str = "after_crf") -> str:
    """What the CRF does to the IoU of the ``thin`` classes, from a table with columns ``class``, ``before``,
    ``after`` (IoU in [0, 1]; NaN where a class is in neither label nor prediction)."""
    rows = class_iou.set_index("class")
    parts, absent = [], []
    for name in thin:
        b, a = (float(rows.at[name, before]), float(rows.at[name, after])) if name in rows.index else (np.nan, np.nan)
        if np.isnan(b) or np.isnan(a):
            absent.append(name)
            continue
        verb = change_verb(b, a)
        phrase = f"leaves {name} unchanged" if verb == "leaves unchanged" else f"{verb} {name}"
        parts.append(f"{phrase} (IoU {_pct(b)} -> {_pct(a)})")
    text = ("The CRF " + _join(parts) + ".") if parts else ""
    if absent:
        text += (" " if text else "") + f"Not scored (absent from labels and predictions): {', '.join(absent)}."
    return text


def crf_on_thin_objects_sentence(objects, *, narrow: float = 3.0, wide: float = 12.0,
                                 before: str = "recall_model", after: str = "recall_crf") -> str:
    """What the CRF does to the pixel recall of the objects narrower than ``narrow`` px, against those ``wide``
    px and wider, from an :func:`object_table` with the two recall columns."""
    thin, thick = objects[objects["width"] < narrow], objects[objects["width"] >= wide]
    if not len(thin):
        return f"No object is narrower than {narrow:g} px: the CRF's effect on thin objects is not measured here."
    b, a = pixel_recall(thin, before), pixel_recall(thin, after)
    verb = change_verb(b, a)
    reading = {"erases": "it erases what the network had found of them and brings none back",
               "lowers": "it removes part of what the network had found of them rather than bringing them back",
               "leaves unchanged": "it neither brings them back nor removes them",
               "raises": f"it brings back {100 * (a - b):.1f} points of their pixels"}[verb]
    text = (f"Objects narrower than {narrow:g} px ({_objects(len(thin))}) keep {_pct(b)} of their pixels before the "
            f"CRF and {_pct(a)} after: {reading}")
    if len(thick):
        text += (f"; objects {wide:g} px and wider ({_objects(len(thick))}) go from "
                 f"{_pct(pixel_recall(thick, before))} to {_pct(pixel_recall(thick, after))}")
    return text + "."


def stride_bound_sentence(objects, *, stride: int, narrow: float = 3.0, model: str = "recall_model",
                          bound: str = "recall_bound", where: str = "") -> str:
    """How much of the network's loss on objects narrower than ``narrow`` px a perfect score map at ``stride``
    explains: ``bound`` is the recall of the label pooled over stride x stride cells, upsampled and arg-maxed
    (``atrous.label_at_output_stride``), ``model`` the network's, both columns of one :func:`object_table`."""
    thin = objects[objects["width"] < narrow]
    if not len(thin):
        return f"No object{where} is narrower than {narrow:g} px: the stride-{stride} bound is not measured on them."
    m, k = pixel_recall(thin, model), pixel_recall(thin, bound)
    text = (f"A perfect score map at output stride {stride} (the label pooled over {stride} x {stride} cells, "
            f"upsampled and arg-maxed: this notebook's bound) keeps {_pct(k)} of the pixels of the "
            f"{_objects(len(thin))}{where} narrower than {narrow:g} px; the network keeps {_pct(m)}.")
    if m >= k:
        return text + (f" The network keeps at least as much as the bound: the {100 * (1 - m):.1f} points it loses "
                       f"are within what output stride {stride} loses by itself.")
    lost, by_stride = 1.0 - m, 1.0 - k
    share = "most" if by_stride > 0.5 * lost else "less than half"
    return text + (f" Output stride {stride} accounts for {100 * by_stride:.1f} of the {100 * lost:.1f} points lost "
                   f"({share}); the other {100 * (k - m):.1f} points are the network's own (its score map is not the "
                   "perfect one).")


def voc_bound_sentence(voc_objects, *, narrow: float = 3.0, wide: float = 12.0, bound: str = "recall_bound",
                       compare: tuple[str, float] | None = None) -> str:
    """The stride bound on real annotations: pixel recall of their objects narrower than ``narrow`` px against
    those ``wide`` px and wider, from an :func:`object_table` with the ``bound`` column; ``compare`` = (name,
    recall) sets it beside the bound's recall of the thin objects of another data set."""
    thin, thick = voc_objects[voc_objects["width"] < narrow], voc_objects[voc_objects["width"] >= wide]
    if not len(thin):
        return f"No VOC object here is narrower than {narrow:g} px."
    k = pixel_recall(thin, bound)
    text = (f"On the VOC annotations the same bound keeps {_pct(k)} of the pixels of the {_objects(len(thin))} "
            f"narrower than {narrow:g} px")
    if len(thick):
        text += f" and {_pct(pixel_recall(thick, bound))} of those {wide:g} px and wider"
    if compare is not None and not np.isnan(compare[1]):
        relation = "more than" if k > compare[1] + 0.005 else "less than" if k < compare[1] - 0.005 else "as much as"
        text += f": {relation} on the {compare[0]} objects of that width ({_pct(compare[1])})"
    return text + "."


# ----------------------------------------------------------------------------------------------
# Lines printed beside the tables
# ----------------------------------------------------------------------------------------------

def worst_classes_line(ranked, k: int = 3) -> str:
    """The ``k`` lowest classes of a :func:`~dlib.evaluation.failure.rank_classes` table, IoU before -> after."""
    return "Worst classes after the CRF: " + ", ".join(
        f"{r['class']} ({100 * r['before_crf']:.1f}% -> {100 * r['after_crf']:.1f}%)"
        for _, r in ranked.head(k).iterrows())


def thin_class_ranks_line(class_iou, ranked, thin: Sequence[int]) -> str:
    """The IoU of the ``thin`` classes (by number) before -> after the CRF and their rank from the bottom among
    the scored classes of ``ranked``; classes that are not scored are left out."""
    order = list(ranked["class"])
    names = class_iou["class"]
    return "Thin classes: " + ", ".join(
        f"{names[k]} IoU {100 * class_iou['before_crf'][k]:.1f}% -> {100 * class_iou['after_crf'][k]:.1f}% "
        f"(rank {order.index(names[k]) + 1} of {len(ranked)} from the bottom)" for k in thin if names[k] in order)


def crf_gain_line(gain, mean_iou_before: float, mean_iou_after: float) -> str:
    """The CRF's gain (points of mIoU) in the narrowest and widest trimap bands of a
    :func:`~dlib.evaluation.failure.crf_gain` table, and over whole images."""
    points = gain["crf_gain_points"]
    return (f"CRF gain in the {gain.index[0]:g}-px band: {points.iloc[0]:+.2f} points; "
            f"in the {gain.index[-1]:g}-px band: {points.iloc[-1]:+.2f}; whole image: "
            f"{100 * (mean_iou_after - mean_iou_before):+.2f}")


def trimap_sentence(gain, mean_iou_before: float, mean_iou_after: float) -> str:
    """:func:`crf_gain_line` as a sentence, to one decimal."""
    points = gain["crf_gain_points"]
    return (f"The CRF changes mIoU by {points.iloc[0]:+.1f} points in the {gain.index[0]:g}-px trimap band, by "
            f"{points.iloc[-1]:+.1f} in the {gain.index[-1]:g}-px band and by "
            f"{100 * (mean_iou_after - mean_iou_before):+.1f} over whole images.")


def void_share_line(shares: Mapping[str, float]) -> str:
    """The share of void pixels (a fraction) of each named label set."""
    return "Void pixels: " + ", ".join(f"{100 * v:.1f}% of the {name} labels" for name, v in shares.items())


def lowest_classes_line(by_class, stride: int) -> str:
    """The classes of a :func:`~dlib.evaluation.failure.objects_by_class` table (columns ``class``, ``iou``,
    ``median_width_px``), in its order, with the IoU of the stride bound and the median object width."""
    return f"Lowest IoU of the stride-{stride} upper bound: " + ", ".join(
        f"{r['class']} {100 * r['iou']:.1f}% (median width {r['median_width_px']:.1f} px)"
        for _, r in by_class.iterrows())
