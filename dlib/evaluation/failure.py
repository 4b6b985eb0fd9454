"""Failure analysis (DeepLab v2, Sec. 4.5 and Fig. 14): thin structures, worst images, per-object recall.

DeepLab v2 (Sec. 4.5, "Failure Modes") reports that the model "fails to capture the delicate
boundaries of objects, such as bicycle and chair", and that the CRF cannot recover them because
the unary term is not confident there. This module measures that on any data set:

* **Thinness of an object.** An object is a connected component (8-connected) of one class in a
  label map. Its skeleton comes from the Zhang-Suen thinning algorithm (Zhang & Suen, CACM 1984),
  and its **mean width** ``w`` is the width of the *ribbon* with round caps (a band of constant
  width around a centre line of length ``l``) that has the object's area ``A`` and skeleton length
  ``l``::

      A = w * l + pi * w**2 / 4   =>   w = 2 * (sqrt(l**2 + pi * A) - l) / pi

  Closed forms: a disc of radius r (skeleton one point, l = 0) has w = 2 r, its diameter; a
  straight 1-px line of n pixels (l = n - 1) has w -> 1; a w x L rectangle (skeleton about
  L - w long) has a width that tends to w as L / w grows. For a long object this is area over
  skeleton length; unlike that ratio it stays finite for compact blobs (area / length alone
  diverges for a disc, whose skeleton is a point).
* **Per-object recall**: the fraction of an object's pixels predicted as its class. Recall,
  not IoU: a prediction has no object identity, so false positives cannot be assigned to one object.
* **Worst images**: per-image mean IoU over the classes present in the label or the prediction.

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

SQRT2 = float(np.sqrt(2.0))


# ----------------------------------------------------------------------------------------------
# Zhang-Suen thinning
# ----------------------------------------------------------------------------------------------

def _zhang_suen_tables() -> tuple[np.ndarray, np.ndarray]:
    """Deletion tables for the two sub-iterations, indexed by the 8-neighbour code (0..255).

    Bit k of the code is neighbour P(k+2) in Zhang & Suen's numbering, clockwise from north:
    P2 = N, P3 = NE, P4 = E, P5 = SE, P6 = S, P7 = SW, P8 = W, P9 = NW.
    """
    codes = np.arange(256)
    p = [(codes >> k) & 1 for k in range(8)]  # p[0] = P2, ..., p[7] = P9
    b = sum(p)  # B(P1): number of object neighbours
    # A(P1): number of 0 -> 1 transitions in the cyclic sequence P2, P3, ..., P9, P2.
    a = sum(((p[k] == 0) & (p[(k + 1) % 8] == 1)).astype(int) for k in range(8))
    common = (b >= 2) & (b <= 6) & (a == 1)
    p2, p4, p6, p8 = p[0], p[2], p[4], p[6]
    first = common & (p2 * p4 * p6 == 0) & (p4 * p6 * p8 == 0)  # sub-iteration 1: south-east boundary
    second = common & (p2 * p4 * p8 == 0) & (p2 * p6 * p8 == 0)  # sub-iteration 2: north-west boundary
    return first, second


_ZS_TABLES = _zhang_suen_tables()


def zhang_suen(mask: np.ndarray) -> np.ndarray:
    """Zhang-Suen thinning of a binary mask (H, W) -> bool (H, W), lines one or two pixels wide.

    Outside the image counts as background. Each sub-iteration decides every pixel from the same
    snapshot, as in the paper; only contour pixels (those with a background 8-neighbour) can be
    deleted, so only they are examined, which keeps thick objects cheap. Known property of the
    algorithm: a 2 x 2 square is erased completely (callers treat an empty skeleton as length 0),
    and diagonal runs are left as 4-connected staircases (:func:`skeleton` removes those).
    """
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be a 2-D (H, W) array, got shape {mask.shape}")
    h, w = mask.shape
    m = np.zeros((h + 2, w + 2), dtype=np.uint8)  # 1-px frame of background
    m[1:-1, 1:-1] = mask.astype(bool)
    width = w + 2
    flat = m.ravel()
    offsets = np.array([-width, -width + 1, 1, width + 1, width, width - 1, -1, -width - 1])  # P2..P9
    weights = (1 << np.arange(8)).astype(np.int64)

    idx = np.flatnonzero(flat)
    candidates = idx[(flat[idx[:, None] + offsets] == 0).any(axis=1)]  # contour pixels
    listed = np.zeros(flat.size, dtype=bool)
    listed[candidates] = True
    while True:
        changed = False
        for table in _ZS_TABLES:
            code = (flat[candidates[:, None] + offsets].astype(np.int64) * weights).sum(axis=1)
            delete = candidates[table[code]]
            if delete.size == 0:
                continue
            changed = True
            flat[delete] = 0  # every decision above was taken on the snapshot before this line
            listed[delete] = False
            # Object pixels next to a deleted one are now contour pixels: add those not listed yet.
            fresh = (delete[:, None] + offsets).ravel()
            fresh = np.unique(fresh[(flat[fresh] == 1) & ~listed[fresh]])
            listed[fresh] = True
            candidates = np.concatenate([candidates[flat[candidates] == 1], fresh])
        if not changed:
            break
    return m[1:-1, 1:-1].astype(bool)


# A pixel with two perpendicular 4-neighbours (say N and E) is redundant in an 8-connected curve:
# N and E touch diagonally. Deleting it keeps every other neighbour 8-connected to them as long as
# the one neighbour that touches neither N nor E (here SW) is empty, and it opens no new hole as
# long as one of the other two 4-neighbours (S, W) is empty. Offsets (dy, dx), four orientations:
_CORNERS = (  # ((pair), (pair), opposite diagonal, (the other two 4-neighbours))
    ((-1, 0), (0, 1), (1, -1), (1, 0), (0, -1)),  # N, E; SW; S, W
    ((0, 1), (1, 0), (-1, -1), (0, -1), (-1, 0)),  # E, S; NW; W, N
    ((1, 0), (0, -1), (-1, 1), (-1, 0), (0, 1)),  # S, W; NE; N, E
    ((0, -1), (-1, 0), (1, 1), (0, 1), (1, 0)),  # W, N; SE; E, S
)


def remove_staircases(thin: np.ndarray) -> np.ndarray:
    """Delete the corner pixels of 4-connected staircases from a thinned mask, one at a time.

    Zhang-Suen leaves 45-degree runs as staircases (two axial steps where one diagonal step would
    do), which would make a skeleton up to sqrt(2) times too long. A pixel is deleted when two
    perpendicular 4-neighbours are set, the pixel diagonally opposite them is not (every neighbour
    stays 8-connected to the rest) and one of its other two 4-neighbours is not (no hole opens);
    pixels are visited in raster order until nothing changes.
    """
    m = np.pad(np.asarray(thin, dtype=bool), 1)
    changed = True
    while changed:
        changed = False
        for y, x in np.argwhere(m):
            for (ay, ax), (by, bx), (cy, cx), (dy, dx), (ey, ex) in _CORNERS:
                if (m[y + ay, x + ax] and m[y + by, x + bx] and not m[y + cy, x + cx]
                        and not (m[y + dy, x + dx] and m[y + ey, x + ex])):
                    m[y, x] = False
                    changed = True
                    break
    return m[1:-1, 1:-1]


def skeleton(mask: np.ndarray) -> np.ndarray:
    """The skeleton of a binary mask (H, W): Zhang-Suen thinning, then staircase removal -> bool (H, W)."""
    return remove_staircases(zhang_suen(mask))


def skeleton_length(skel: np.ndarray, components: np.ndarray | None = None,
                    num_components: int | None = None) -> float | np.ndarray:
    """Length (px) of an 8-connected skeleton: 1 per horizontal/vertical link, sqrt(2) per diagonal one.

    A diagonal link is not counted when the two pixels also meet through a common 4-neighbour in
    the skeleton (the path runs through that corner pixel, already counted as two links). With
    ``components`` (int map, 0 = none, 1..n) returns an array of n + 1 lengths, one per component
    id (entry 0 unused); otherwise the total.
    """
    s = np.asarray(skel, dtype=bool)
    if s.ndim != 2:
        raise ValueError(f"skeleton must be 2-D (H, W), got shape {s.shape}")
    p = np.pad(s, 1)
    centre = p[1:-1, 1:-1]
    east, south = p[1:-1, 2:], p[2:, 1:-1]
    west = p[1:-1, :-2]
    south_east, south_west = p[2:, 2:], p[2:, :-2]
    weight = (centre & east) * 1.0 + (centre & south) * 1.0
    weight += (centre & south_east & ~east & ~south) * SQRT2
    weight += (centre & south_west & ~west & ~south) * SQRT2
    if components is None:
        return float(weight.sum())
    comp = np.asarray(components)
    if comp.shape != s.shape:
        raise ValueError(f"components {comp.shape} and skeleton {s.shape} must have the same shape")
    n = int(comp.max()) if num_components is None else int(num_components)
    return np.bincount(comp.ravel(), weights=weight.ravel(), minlength=n + 1)[: n + 1]


def ribbon_width(area: float | np.ndarray, length: float | np.ndarray) -> float | np.ndarray:
    """Width w (px) of the round-capped ribbon with this area (px^2) and centre-line length (px).

    Solves A = w l + pi w^2 / 4 for w >= 0: w = 2 (sqrt(l^2 + pi A) - l) / pi. l = 0 gives the
    diameter of the disc of area A; for l >> w it is A / l.
    """
    area = np.asarray(area, dtype=np.float64)
    length = np.asarray(length, dtype=np.float64)
    if (area < 0).any() or (length < 0).any():
        raise ValueError("area and length must be >= 0")
    # Same value as 2 (sqrt(l^2 + pi A) - l) / pi, rationalised to avoid cancellation when l >> A / l.
    width = 2.0 * area / (np.sqrt(length ** 2 + np.pi * area) + length + (area == 0))
    return float(width) if width.ndim == 0 else width


def mean_width(mask: np.ndarray) -> float:
    """Mean width (px) of one object given as a binary mask (all of its pixels, any connectivity)."""
    mask = np.asarray(mask, dtype=bool)
    return ribbon_width(float(mask.sum()), skeleton_length(skeleton(mask)))


# ----------------------------------------------------------------------------------------------
# Objects: width, area and recall per connected component
# ----------------------------------------------------------------------------------------------

_EIGHT = np.ones((3, 3), dtype=bool)


def object_table(label: np.ndarray, predictions: Mapping[str, np.ndarray] | np.ndarray | None = None, *,
                 image_id: Any = None, num_classes: int = NUM_CLASSES, background: int | None = 0,
                 ignore_index: int = IGNORE_INDEX, min_area: int = 1):
    """One row per object (8-connected component of one class in ``label`` (H, W)).

    Columns: ``image_id``, ``class``, ``object`` (component number within its class), ``area``
    (px), ``skeleton_length`` (px), ``width`` (px, :func:`ribbon_width`), and for each prediction
    (a mapping name -> (H, W) class map, or one map, named ``""``) ``recall_<name>`` (or ``recall``):
    the fraction of the object's pixels predicted as its class. The ``background`` class and
    ``ignore_index`` (void) are not objects; components smaller than ``min_area`` px are dropped.
    """
    import pandas as pd
    from scipy import ndimage

    label = np.asarray(label)
    if label.ndim != 2:
        raise ValueError(f"label must be a 2-D (H, W) class map, got shape {label.shape}")
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
    rows = []
    classes = [int(c) for c in np.unique(label) if c != ignore_index and c != background]
    for c in classes:
        if not 0 <= c < num_classes:
            raise ValueError(f"label has class {c} outside 0..{num_classes - 1} (and it is not void "
                             f"{ignore_index}); check num_classes")
        mask = label == c
        rows_, cols_ = np.nonzero(mask)
        r0, r1, c0, c1 = rows_.min(), rows_.max() + 1, cols_.min(), cols_.max() + 1
        crop = mask[r0:r1, c0:c1]  # objects of one class are thinned together: components are
        comp, n = ndimage.label(crop, structure=_EIGHT)  # 8-separated, so thinning acts on each alone
        area = np.bincount(comp.ravel(), minlength=n + 1)
        length = skeleton_length(skeleton(crop), comp, n)
        hits = {name: np.bincount(comp.ravel(), weights=(pred[r0:r1, c0:c1] == c).ravel(), minlength=n + 1)
                for name, pred in preds.items()}
        for k in range(1, n + 1):
            if area[k] < min_area:
                continue
            row = {"image_id": image_id, "class": c, "object": k, "area": int(area[k]),
                   "skeleton_length": float(length[k]), "width": ribbon_width(float(area[k]), float(length[k]))}
            for name, h in hits.items():
                row[f"recall_{name}" if name else "recall"] = float(h[k] / area[k])
            rows.append(row)
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


# ----------------------------------------------------------------------------------------------
# Worst images
# ----------------------------------------------------------------------------------------------

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
# Sentences computed from the tables (the notebook's reading of its results)
# ----------------------------------------------------------------------------------------------

def pixel_recall(table, column: str) -> float:
    """Recall over all the pixels of a table's objects: ``column`` weighted by ``area``; NaN for no objects."""
    area = float(table["area"].sum()) if len(table) else 0.0
    return float((table[column] * table["area"]).sum() / area) if area else float("nan")


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
