"""Choosing the CRF's parameters: the papers' coarse-to-fine cross-validation (DeepLab v1, Sec. 5; v2, Sec. 4.1).

* :func:`cross_validate`: score a coarse grid of w1, theta_alpha, theta_beta by mIoU on held-out images (default:
  :data:`PAPER_SEARCH_RANGES`), optionally grow the grid past an edge optimum, then a finer grid around the best.
* :func:`edges`, :func:`searched_values`, :func:`best_on_edge`: whether the optimum found is bracketed.
* :func:`one_at_a_time`: each parameter swept alone around a configured CRF (notebook 04's parameter sweeps).
* :func:`grid_neighbours`, :func:`per_image_miou`, :func:`optimum_margin`, :func:`read_optimum`: whether the best
  point stands out from its neighbours by more than the images' noise.

The work is spread by dlib.crf.parallel: one (point, image) pair per worker task on the CPU, TORCH_BATCH images per
call on a GPU.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, NamedTuple

import numpy as np

from dlib.core.config import CRF_DEFAULTS
from dlib.core.constants import IGNORE_INDEX
from dlib.crf.dense import DenseCRF, check_inputs, check_params, resolve_backend
from dlib.crf.parallel import TORCH_BATCH, on_gpu, ordered_map, resolve_workers
from dlib.evaluation.metrics import confusion_matrix, scores

SEARCHED = ("w1", "theta_alpha", "theta_beta")  # the parameters the papers cross-validate

# The papers' cross-validation ranges, MATLAB notation expanded ([30:10:100] = 30, 40, ..., 100).
PAPER_SEARCH_RANGES = {
    # DeepLab v2, Sec. 4.1: w1 in [3:6], theta_alpha in [30:10:100], theta_beta in [3:6]
    "v2": {"w1": (3, 4, 5, 6), "theta_alpha": tuple(range(30, 101, 10)), "theta_beta": (3, 4, 5, 6)},
    # DeepLab v1, Sec. 5 (CRF parameters): w1 in [5:10], theta_alpha in [50:10:100], theta_beta in [3:10]
    "v1": {"w1": tuple(range(5, 11)), "theta_alpha": tuple(range(50, 101, 10)), "theta_beta": tuple(range(3, 11))},
}

Point = tuple[float, float, float]  # (w1, theta_alpha, theta_beta)


class CVResult(NamedTuple):
    table: Any  # pandas DataFrame: stage, w1, theta_alpha, theta_beta, mean_iou, pixel_acc
    best: dict  # the best row as a dict
    baseline: dict  # mean_iou and pixel_acc of argmax P (no CRF)


# ----------------------------------------------------------------------------------------------
# Scoring the points of a grid
# ----------------------------------------------------------------------------------------------

def _cv_one(state: dict[str, Any], task: tuple[int, int]) -> np.ndarray:
    p, k = task
    w1, theta_alpha, theta_beta = state["points"][p]
    crf = DenseCRF(w1=w1, theta_alpha=theta_alpha, theta_beta=theta_beta, **state["fixed"])
    pred = crf.predict(state["images"][k], state["probs"][k])
    return confusion_matrix(pred, state["labels"][k], state["num_classes"], state["ignore_index"])


def _cv_point_batched(state: dict[str, Any], p: int) -> list[np.ndarray]:
    """The confusion matrices of every image at point p, TORCH_BATCH images per call (torch on a GPU)."""
    w1, theta_alpha, theta_beta = state["points"][p]
    crf = DenseCRF(w1=w1, theta_alpha=theta_alpha, theta_beta=theta_beta, **state["fixed"])
    confs = []
    for start in range(0, len(state["images"]), TORCH_BATCH):
        preds = crf.predict_batch(state["images"][start:start + TORCH_BATCH], state["probs"][start:start + TORCH_BATCH])
        confs += [confusion_matrix(pred, lab, state["num_classes"], state["ignore_index"])
                  for pred, lab in zip(preds, state["labels"][start:start + TORCH_BATCH])]
    return confs


def _score_points(state: dict[str, Any], stage: int, workers: int, gpu: bool, progress: bool) -> list[dict]:
    """One table row per point of ``state["points"]``: its mIoU and pixel accuracy over all images."""
    points, num_classes = state["points"], state["num_classes"]
    tasks = [(p, k) for p in range(len(points)) for k in range(len(state["images"]))]
    desc = f"CRF cross-validation, stage {stage}"
    if gpu:
        confs = sum(ordered_map(_cv_point_batched, range(len(points)), state, 1, desc, progress), [])
    else:
        confs = ordered_map(_cv_one, tasks, state, workers, desc, progress)
    totals = [np.zeros((num_classes, num_classes), dtype=np.int64) for _ in points]
    for (p, _), conf in zip(tasks, confs):
        totals[p] += conf
    rows = []
    for (w1, ta, tb), conf in zip(points, totals):
        s = scores(conf)
        rows.append({"stage": stage, "w1": w1, "theta_alpha": ta, "theta_beta": tb,
                     "mean_iou": s["mean_iou"], "pixel_acc": s["pixel_acc"]})
    return rows


def _check_cv_inputs(images: list, probs: list, labels: list) -> int:
    """Raise unless images, probs and labels pair up; return the number of classes."""
    if not (len(images) == len(probs) == len(labels)) or not images:
        raise ValueError(f"need the same non-zero number of images, probs and labels, got "
                         f"{len(images)}, {len(probs)}, {len(labels)}")
    num_classes = probs[0].shape[0]
    for img, p, lab in zip(images, probs, labels):
        check_inputs(img, p)
        if np.shape(lab) != img.shape[:2] or p.shape[0] != num_classes:
            raise ValueError("every label must match its image's (H, W) and every probs the same C")
    return num_classes


# ----------------------------------------------------------------------------------------------
# The grids: coarse, widened past an edge, then finer around the best
# ----------------------------------------------------------------------------------------------

def _points(grids: Mapping[str, Sequence[float]]) -> list[Point]:
    """Every (w1, theta_alpha, theta_beta) of the grids' product, w1 outermost."""
    return [(float(a), float(b), float(c)) for a in grids["w1"] for b in grids["theta_alpha"]
            for c in grids["theta_beta"]]


def _widened(grid: Sequence[float], best: float) -> list[float]:
    """``grid`` with one more value past ``best`` when best is its largest (the last step again) or smallest
    (half of it: every parameter is positive) value; unchanged when best lies inside."""
    values = sorted(set(float(v) for v in grid))
    if len(values) < 2:
        return values
    if best == values[-1]:
        return values + [values[-1] + (values[-1] - values[-2])]
    if best == values[0]:
        return [values[0] / 2] + values
    return values


def _finer(grid: Sequence[float], best: float, lower: float) -> list[float]:
    """best and best +- half the coarse step (values above ``lower`` only)."""
    values = sorted(set(float(v) for v in grid))
    steps = np.diff(values)
    if len(values) < 2:
        return [best]
    half = float(steps.min()) / 2
    return [v for v in (best - half, best, best + half) if v > lower]


def _coarse_stage(score: Callable[[list[Point], int], list[dict]], grids: dict[str, list],
                  widen: int) -> tuple[list[dict], dict[str, list], list[Point]]:
    """Stage 1: every point of ``grids``; then, at most ``widen`` times while the best point sits on a grid's edge,
    that grid grown one step past it and the new points scored (stage 1 too). Returns rows, grids, points scored."""
    coarse = _points(grids)
    rows = score(coarse, 1)
    for _ in range(widen):
        best = max(rows, key=lambda r: r["mean_iou"])
        grown = {k: _widened(g, best[k]) for k, g in grids.items()}
        if grown == grids:
            break
        grids = grown
        scored = {(r["w1"], r["theta_alpha"], r["theta_beta"]) for r in rows}
        new = [pt for pt in _points(grids) if pt not in scored]
        rows += score(new, 1)
        coarse += new
    return rows, grids, coarse


def _fine_stage(score: Callable[[list[Point], int], list[dict]], rows: list[dict], grids: dict[str, list],
                coarse: list[Point]) -> list[dict]:
    """Stage 2: the points at half the coarse step around stage 1's best, each not scored before."""
    b = max(rows, key=lambda r: r["mean_iou"])
    fine = [(a, t, c) for a in _finer(grids["w1"], b["w1"], 0.0)
            for t in _finer(grids["theta_alpha"], b["theta_alpha"], 0.0)
            for c in _finer(grids["theta_beta"], b["theta_beta"], 0.0)]
    fine = [pt for pt in dict.fromkeys(fine) if pt not in set(coarse)]  # each point scored once
    return score(fine, 2)


def cross_validate(images: Sequence[np.ndarray], probs: Sequence[np.ndarray], labels: Sequence[np.ndarray], *,
                   w1_grid: Sequence[float] = PAPER_SEARCH_RANGES["v2"]["w1"],
                   theta_alpha_grid: Sequence[float] = PAPER_SEARCH_RANGES["v2"]["theta_alpha"],
                   theta_beta_grid: Sequence[float] = PAPER_SEARCH_RANGES["v2"]["theta_beta"],
                   w2: float = CRF_DEFAULTS.w2, theta_gamma: float = CRF_DEFAULTS.theta_gamma,
                   iterations: int = CRF_DEFAULTS.iterations, refine: bool = True,
                   ignore_index: int = IGNORE_INDEX, workers: int = 0, progress: bool = True,
                   backend: str = CRF_DEFAULTS.backend, normalization: str = CRF_DEFAULTS.normalization,
                   device: str = CRF_DEFAULTS.device, widen: int = 0) -> CVResult:
    """The papers' coarse-to-fine search of w1, theta_alpha, theta_beta by mIoU on held-out images.

    Stage 1 scores every point of the grid (default: DeepLab v2's ranges); with ``widen`` > 0, while the best
    point sits on the grid's edge in some parameter, that parameter's grid is extended one step beyond it (at
    most ``widen`` times; the new points get stage 1 too), so the optimum ends bracketed or the table shows the
    parameter still improving at the widest value tried (:func:`edges`). Stage 2 (``refine``) scores
    the points at half the coarse step around stage 1's best, as the papers "refine the search step
    sizes around the first round's best values". mIoU is accumulated over all images (VOC measure).
    Work is spread over ``workers`` processes (0 = all cores), one (point, image) pair per task;
    the torch backend on a GPU runs in this process instead, TORCH_BATCH images per call.
    ``backend``, ``normalization``, ``device``: as :class:`DenseCRF`.
    """
    import pandas as pd

    images, probs, labels = list(images), list(probs), list(labels)
    num_classes = _check_cv_inputs(images, probs, labels)
    fixed = {"w2": w2, "theta_gamma": theta_gamma, "iterations": iterations, "normalization": normalization,
             "backend": resolve_backend(backend), "device": device}
    check_params(min(w1_grid), min(theta_alpha_grid), min(theta_beta_grid), w2, theta_gamma, iterations)
    gpu = on_gpu(DenseCRF(**fixed))
    base = scores(sum(confusion_matrix(p.argmax(0), lab, num_classes, ignore_index) for p, lab in zip(probs, labels)))
    state = {"fixed": fixed, "images": images, "probs": probs, "labels": labels, "num_classes": num_classes,
             "ignore_index": ignore_index}
    workers = resolve_workers(workers)

    def score(points: list[Point], stage: int) -> list[dict]:
        return _score_points({**state, "points": points}, stage, workers, gpu, progress)

    grids = {"w1": list(w1_grid), "theta_alpha": list(theta_alpha_grid), "theta_beta": list(theta_beta_grid)}
    rows, grids, coarse = _coarse_stage(score, grids, widen)
    if refine:
        rows += _fine_stage(score, rows, grids, coarse)
    table = pd.DataFrame(rows)
    best = table.loc[table["mean_iou"].idxmax()].to_dict()
    best["stage"] = int(best["stage"])
    return CVResult(table=table, best=best, baseline={"mean_iou": base["mean_iou"], "pixel_acc": base["pixel_acc"]})


# ----------------------------------------------------------------------------------------------
# Reading a search: is the optimum bracketed?
# ----------------------------------------------------------------------------------------------

def edges(table: Any) -> list[str]:
    """The parameters whose best value (stage 1) sits on the edge of the values scored: not bracketed."""
    stage1 = table[table["stage"] == 1]
    best = stage1.loc[stage1["mean_iou"].idxmax()]
    return [k for k in SEARCHED if stage1[k].nunique() > 1 and best[k] in (stage1[k].min(), stage1[k].max())]


def searched_values(table: Any) -> dict[str, list[float]]:
    """Every value scored per parameter, both stages, sorted: ``{"w1": [...], "theta_alpha": [...], ...}``."""
    return {k: sorted(table[k].unique()) for k in SEARCHED}


def best_on_edge(searched: Mapping[str, Sequence[float]], best: Mapping[str, float]) -> list[str]:
    """The parameters of ``searched`` (:func:`searched_values`) whose ``best`` value is not strictly inside the
    values scored (so the search does not bracket it); a parameter scored at one value only is never named."""
    return [k for k, values in searched.items() if len(values) > 1 and not values[0] < best[k] < values[-1]]


def one_at_a_time(images: Sequence[np.ndarray], probs: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                  values: Mapping[str, Sequence[float]], *, base: DenseCRF, workers: int = 0,
                  progress: bool = False) -> dict[str, CVResult]:
    """Each parameter of ``values`` (w1, theta_alpha or theta_beta) swept over its values, the others held at
    ``base``'s, scored as :func:`cross_validate`'s stage 1 (mIoU over all images): one search per parameter, in
    the order of ``values``. ``base`` gives w2, theta_gamma, iterations, backend, normalisation and device too."""
    unknown = set(values) - set(SEARCHED)
    if unknown:
        raise ValueError(f"can sweep only {', '.join(SEARCHED)}, got {sorted(unknown)}")
    search = partial(cross_validate, images, probs, labels, w2=base.w2, theta_gamma=base.theta_gamma,
                     iterations=base.iterations, refine=False, workers=workers, progress=progress, **base.options)
    out = {}
    for name, swept in values.items():
        out[name] = search(**{f"{k}_grid": (swept if k == name else (getattr(base, k),)) for k in SEARCHED})
    return out


# ----------------------------------------------------------------------------------------------
# Reading a search: is the optimum resolved from its neighbours?
# ----------------------------------------------------------------------------------------------

def grid_neighbours(table: Any, best: Mapping[str, float]) -> list[dict[str, float]]:
    """The points of ``table`` next to ``best`` in one parameter (the nearest value scored below and above it, the
    other two held): each ``{"w1", "theta_alpha", "theta_beta", "changed"}``."""
    out = []
    for k in SEARCHED:
        others = [o for o in SEARCHED if o != k]
        line = table[np.logical_and.reduce([np.isclose(table[o], best[o]) for o in others])]
        values = sorted(float(v) for v in line[k].unique())
        below = [v for v in values if v < best[k]]
        above = [v for v in values if v > best[k]]
        for v in ([below[-1]] if below else []) + ([above[0]] if above else []):
            out.append({**{o: float(best[o]) for o in others}, k: v, "changed": k})
    return [{k: p[k] for k in (*SEARCHED, "changed")} for p in out]


def per_image_miou(images: Sequence[np.ndarray], probs: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                   points: Sequence[Mapping[str, float]], *, ignore_index: int = IGNORE_INDEX,
                   **fixed: Any) -> np.ndarray:
    """mIoU (fraction) of each point (w1, theta_alpha, theta_beta) on each image alone: (points, images).
    ``fixed``: the other DenseCRF keywords (w2, theta_gamma, iterations, backend, normalization, device)."""
    num_classes = _check_cv_inputs(list(images), list(probs), list(labels))
    out = np.zeros((len(points), len(images)))
    for p, point in enumerate(points):
        crf = DenseCRF(**{k: point[k] for k in SEARCHED}, **fixed)
        for i, pred in enumerate(crf.predict_batch(list(images), list(probs))):
            out[p, i] = scores(confusion_matrix(pred, labels[i], num_classes, ignore_index))["mean_iou"]
    return out


def optimum_margin(images: Sequence[np.ndarray], probs: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                   table: Any, best: Mapping[str, float], **fixed: Any) -> Any:
    """How far the best point of a search stands above each grid neighbour (:func:`grid_neighbours`), against the
    noise the images show: one row per neighbour with the pooled difference (mIoU points, from ``table``), the
    per-image differences' mean, smallest and largest, their paired 95% t-interval and whether it excludes 0
    (``resolved``). ``fixed`` as :func:`per_image_miou`."""
    import pandas as pd
    from scipy import stats

    neighbours = grid_neighbours(table, best)
    per_image = per_image_miou(images, probs, labels, [best, *neighbours], **fixed)
    n = per_image.shape[1]
    rows = []
    for k, nb in enumerate(neighbours, start=1):
        match = np.logical_and.reduce([np.isclose(table[s], nb[s]) for s in SEARCHED])
        diff = 100 * (per_image[0] - per_image[k])
        half = stats.t.ppf(0.975, n - 1) * diff.std(ddof=1) / np.sqrt(n) if n > 1 else float("nan")
        low, high = diff.mean() - half, diff.mean() + half
        rows.append({**nb, "pooled_difference": 100 * (best["mean_iou"] - float(table.loc[match, "mean_iou"].max())),
                     "per_image_mean": float(diff.mean()), "per_image_min": float(diff.min()),
                     "per_image_max": float(diff.max()), "ci_low": float(low), "ci_high": float(high),
                     "resolved": bool(n > 1 and (low > 0 or high < 0))})
    return pd.DataFrame(rows)


def read_optimum(margins: Any, best: Mapping[str, float], on_edge: Sequence[str], images: int) -> str:
    """One paragraph reading a search's optimum from :func:`optimum_margin`'s rows and :func:`best_on_edge`."""
    where = f"w1={best['w1']:g}, theta_alpha={best['theta_alpha']:g} px, theta_beta={best['theta_beta']:g}"
    if len(margins) == 0:
        return f"The best point ({where}) has no scored neighbour: nothing to compare it with."
    close = margins.loc[margins["pooled_difference"].idxmin()]
    text = (f"The best point ({where}) beats its closest grid neighbour ({close['changed']} = "
            f"{close[close['changed']]:g}) by {close['pooled_difference']:.2f} mIoU points pooled over {images} "
            f"images; image by image that difference runs from {close['per_image_min']:+.2f} to "
            f"{close['per_image_max']:+.2f} points (paired 95% interval {close['ci_low']:+.2f} to "
            f"{close['ci_high']:+.2f}). ")
    unresolved = margins.loc[~margins["resolved"], "changed"].unique().tolist()
    if unresolved:
        text += (f"Against {len(margins.loc[~margins['resolved']])} of its {len(margins)} neighbours (in "
                 f"{', '.join(unresolved)}) the interval includes 0: these {images} images do not tell the best "
                 "point from them, so read the optimum as a flat region of the grid, not a point")
    else:
        text += "Every neighbour's interval excludes 0: the images resolve this optimum from its neighbours"
    if on_edge:
        text += f"; and it sits on the edge of the values scored for {', '.join(on_edge)} (not bracketed there)"
    return text + "."
