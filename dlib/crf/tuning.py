"""Running the fully connected CRF on a data set: refine and score, and choose its parameters.

* :func:`refine_dataset` refines every cached softmax ``<id>.npz`` into a label PNG, over a pool of
  processes (pydensecrf, or torch on the CPU) or in batches on one GPU (torch);
  :func:`refine_and_score` also reads the labels back and scores them against a data set's labels:
  the CRF stage of the command line (``python -m dlib crf``), the ablation and the notebooks.
* :func:`cross_validate`: the papers' coarse-to-fine search of w1, theta_alpha, theta_beta by mIoU on
  held-out images (DeepLab v1, Sec. 5; v2, Sec. 4.1), over :data:`PAPER_SEARCH_RANGES`.
* :func:`setting_effects`: how much the choices the sources leave open (kernel normalisation, the
  smoothness kernel) move the labels.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from dlib.core.config import CRF_DEFAULTS, PAPER_TEXT, RELEASED_RESNET101, available_cpus
from dlib.core.constants import IGNORE_INDEX
from dlib.core.io import load_probs, probs_shape, read_image, read_label, write_label
from dlib.crf.dense import DenseCRF, check_inputs, check_params, resolve_backend
from dlib.evaluation.metrics import confusion_matrix, scores

TORCH_BATCH = 16  # images per lattice when the torch backend refines a data set on a GPU

# The papers' cross-validation ranges, MATLAB notation expanded ([30:10:100] = 30, 40, ..., 100).
PAPER_SEARCH_RANGES = {
    # DeepLab v2, Sec. 4.1: w1 in [3:6], theta_alpha in [30:10:100], theta_beta in [3:6]
    "v2": {"w1": (3, 4, 5, 6), "theta_alpha": tuple(range(30, 101, 10)), "theta_beta": (3, 4, 5, 6)},
    # DeepLab v1, Sec. 5 (CRF parameters): w1 in [5:10], theta_alpha in [50:10:100], theta_beta in [3:10]
    "v1": {"w1": tuple(range(5, 11)), "theta_alpha": tuple(range(50, 101, 10)), "theta_beta": tuple(range(3, 11))},
}


# ----------------------------------------------------------------------------------------------
# A process pool that keeps the order of its tasks
# ----------------------------------------------------------------------------------------------


def resolve_workers(workers: int) -> int:
    """0 -> every core this process may use; otherwise the number given (>= 1)."""
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 0:
        raise ValueError(f"workers must be an int >= 0 (0 = all cores), got {workers!r}")
    if workers == 0:
        return available_cpus()
    return int(workers)


# Per-process state of the worker pool: set by the pool initializer (inherited on fork).
_STATE: dict[str, Any] = {}


def _init_worker(state: dict[str, Any]) -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    if "torch" in sys.modules:  # one thread per worker process (the torch backend): the workers share the cores
        sys.modules["torch"].set_num_threads(1)
    _STATE.clear()
    _STATE.update(state)


def _pool(workers: int, state: dict[str, Any]):
    # fork: the image reader (which may be a lambda) and in-memory arrays reach workers without pickling.
    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    return ctx.Pool(workers, initializer=_init_worker, initargs=(state,))


def _map(fn: Callable, items: Sequence, state: dict[str, Any], workers: int, desc: str, progress: bool) -> list:
    """[fn(state, item) for item in items] over ``workers`` processes, in order, with a progress bar."""
    from tqdm import tqdm

    results: list = [None] * len(items)
    with tqdm(total=len(items), desc=desc, disable=not progress, mininterval=1.0) as bar:
        if workers == 1 or len(items) <= 1:
            for k, item in enumerate(items):
                results[k] = fn(state, item)
                bar.update()
        else:
            with _pool(min(workers, len(items)), state) as pool:
                for k, value in pool.imap_unordered(_run_task, [(fn, k, item) for k, item in enumerate(items)]):
                    results[k] = value
                    bar.update()
    return results


def _run_task(task: tuple[Callable, int, Any]) -> tuple[int, Any]:
    fn, k, item = task
    return k, fn(_STATE, item)

# ----------------------------------------------------------------------------------------------
# Data sets on disk: cached probabilities in, refined label maps out
# ----------------------------------------------------------------------------------------------

ImageSource = str | os.PathLike | Callable[[str], np.ndarray]
_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")


def _load_image(images: ImageSource, image_id: str) -> np.ndarray:
    if callable(images):
        return images(image_id)
    for ext in _IMAGE_EXTENSIONS:
        path = Path(images) / f"{image_id}{ext}"
        if path.exists():
            return read_image(path)
    raise FileNotFoundError(f"no image for id {image_id!r} in {images} (looked for {', '.join(_IMAGE_EXTENSIONS)})")


def _refine_one(state: dict[str, Any], image_id: str) -> str:
    out = Path(state["out_dir"]) / f"{image_id}.png"
    if out.exists() and not state["overwrite"]:
        return str(out)
    probs = load_probs(Path(state["prob_dir"]) / f"{image_id}.npz")
    image = _load_image(state["images"], image_id)
    write_label(out, state["crf"].predict(image, probs))
    return str(out)


def refine_dataset(prob_dir: str | os.PathLike, out_dir: str | os.PathLike, images: ImageSource, *,
                   crf: DenseCRF | None = None, ids: Iterable[str] | None = None, workers: int = 0,
                   overwrite: bool = True, progress: bool = True) -> list[Path]:
    """Refine every cached softmax ``<prob_dir>/<id>.npz`` into ``<out_dir>/<id>.png`` in parallel.

    ``images`` is a folder holding ``<id>.jpg``/``.jpeg``/``.png`` or a callable ``id -> uint8 (H, W, 3)``.
    ``workers`` processes (0 = all cores); each output is exactly ``crf.predict(image, load_probs(npz))``,
    written atomically. ``overwrite=False`` keeps outputs already there (resume an interrupted run).
    Returns the written paths in the order of ``ids`` (default: every .npz, sorted).
    """
    prob_dir, out_dir = Path(prob_dir), Path(out_dir)
    if not prob_dir.is_dir():
        raise FileNotFoundError(f"probability folder {prob_dir} does not exist")
    ids = sorted(p.stem for p in prob_dir.glob("*.npz")) if ids is None else [str(i) for i in ids]
    if not ids:
        raise ValueError(f"no cached probabilities (<id>.npz) in {prob_dir}")
    missing = [i for i in ids if not (prob_dir / f"{i}.npz").exists()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} ids have no {prob_dir}/<id>.npz, e.g. {missing[:3]}")
    out_dir.mkdir(parents=True, exist_ok=True)
    crf = crf if crf is not None else DenseCRF()
    if _on_gpu(crf):  # one process, TORCH_BATCH images per lattice (CUDA does not survive fork)
        return _refine_batched(crf, ids, prob_dir, out_dir, images, overwrite, progress)
    state = {"crf": crf, "images": images, "prob_dir": str(prob_dir),
             "out_dir": str(out_dir), "overwrite": overwrite}
    paths = _map(_refine_one, ids, state, resolve_workers(workers), "CRF", progress)
    return [Path(p) for p in paths]


def _on_gpu(crf: DenseCRF) -> bool:
    return crf.uses_device and crf.device != "cpu"


def _refine_batched(crf: DenseCRF, ids: list[str], prob_dir: Path, out_dir: Path, images: ImageSource,
                    overwrite: bool, progress: bool) -> list[Path]:
    from tqdm import tqdm

    paths = [out_dir / f"{i}.png" for i in ids]
    todo = [k for k, p in enumerate(paths) if overwrite or not p.exists()]
    with tqdm(total=len(todo), desc="CRF", disable=not progress, mininterval=1.0) as bar:
        for start in range(0, len(todo), TORCH_BATCH):
            chunk = todo[start:start + TORCH_BATCH]
            labels = crf.predict_batch([_load_image(images, ids[k]) for k in chunk],
                                       [load_probs(prob_dir / f"{ids[k]}.npz") for k in chunk])
            for k, label in zip(chunk, labels):
                write_label(paths[k], label)
            bar.update(len(chunk))
    return paths


class ImagesAndLabels:
    """Lists as a data set for :func:`refine_and_score`: ``ids``, and ``[k] -> (images[k], labels[k])``."""

    def __init__(self, ids: Sequence[str], images: Sequence[np.ndarray], labels: Sequence[np.ndarray]):
        if not len(ids) == len(images) == len(labels):
            raise ValueError(f"need as many ids, images and labels, got {len(ids)}, {len(images)}, {len(labels)}")
        self.ids, self.images, self.labels = [str(i) for i in ids], list(images), list(labels)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, k: int) -> tuple[np.ndarray, np.ndarray]:
        return self.images[k], self.labels[k]


def check_class_count(prob_dir: Path, ids: Sequence[str], num_classes: int) -> None:
    """Every cached ``<id>.npz`` holds (num_classes, H, W) probabilities; checked from the headers before any work."""
    for name in ids:
        path = prob_dir / f"{name}.npz"
        shape = probs_shape(path)
        if len(shape) != 3 or shape[0] != num_classes:
            raise ValueError(f"cached probabilities {path} have {shape[0] if shape else 0} classes (shape {shape}) "
                             f"but the data set has {num_classes} (model.num_classes); cache them again with "
                             "'python -m dlib evaluate --cache' on the same --profile and --set")


def refine_and_score(prob_dir: str | os.PathLike, out_dir: str | os.PathLike, dataset: Any, *, crf: DenseCRF,
                     num_classes: int, ids: Iterable[str] | None = None, workers: int = 0, progress: bool = True,
                     keep_labels: bool = False, ignore_index: int = IGNORE_INDEX) -> dict[str, Any]:
    """The CRF stage: refine cached softmaxes into label PNGs (:func:`refine_dataset`), read them back, score them.

    ``dataset`` has ``ids`` and ``dataset[k] -> (image, label)`` (as dlib.data's data sets); ``ids`` are the
    images to refine (default: every ``<prob_dir>/<id>.npz``), each one of ``dataset.ids``. The scores are the
    VOC measure over all images (``ignore_index`` not scored), of the labels as written to disk.
    Returns mean_iou, pixel_acc, class_iou (list), confusion ((C, C) int64), num_images, paths, and with
    ``keep_labels`` also labels (the refined maps, (H, W) uint8, in the order of ``paths``).
    """
    prob_dir = Path(prob_dir)
    index = {str(name): k for k, name in enumerate(dataset.ids)}
    ids = sorted(p.stem for p in prob_dir.glob("*.npz")) if ids is None else [str(i) for i in ids]
    unknown = [i for i in ids if i not in index]
    if unknown:
        raise ValueError(f"{len(unknown)} cached ids are not in the data set, e.g. {unknown[:3]}; cache the "
                         "probabilities of the same split and settings ('python -m dlib evaluate --cache' with the "
                         "same --profile, --set and --split)")
    check_class_count(prob_dir, ids, num_classes)
    paths = refine_dataset(prob_dir, out_dir, lambda name: np.asarray(dataset[index[name]][0]), crf=crf,
                           ids=ids or None, workers=workers, progress=progress)
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    refined = []
    for name, path in zip(ids, paths):
        label = read_label(path)
        conf += confusion_matrix(label, np.asarray(dataset[index[name]][1]), num_classes, ignore_index)
        if keep_labels:
            refined.append(label)
    s = scores(conf)
    out = {"mean_iou": s["mean_iou"], "pixel_acc": s["pixel_acc"], "class_iou": [float(v) for v in s["class_iou"]],
           "confusion": conf, "num_images": len(paths), "paths": paths}
    return {**out, "labels": refined} if keep_labels else out

# ----------------------------------------------------------------------------------------------
# Cross-validation (DeepLab v1, Sec. 5; v2, Sec. 4.1): coarse grid, then a finer grid around the best
# ----------------------------------------------------------------------------------------------

class CVResult(NamedTuple):
    table: Any  # pandas DataFrame: stage, w1, theta_alpha, theta_beta, mean_iou, pixel_acc
    best: dict  # the best row as a dict
    baseline: dict  # mean_iou and pixel_acc of argmax P (no CRF)


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


def edges(table: Any) -> list[str]:
    """The parameters whose best value (stage 1) sits on the edge of the values scored: not bracketed."""
    stage1 = table[table["stage"] == 1]
    best = stage1.loc[stage1["mean_iou"].idxmax()]
    return [k for k in ("w1", "theta_alpha", "theta_beta")
            if stage1[k].nunique() > 1 and best[k] in (stage1[k].min(), stage1[k].max())]


def _finer(grid: Sequence[float], best: float, lower: float) -> list[float]:
    """best and best +- half the coarse step (values above ``lower`` only)."""
    values = sorted(set(float(v) for v in grid))
    steps = np.diff(values)
    if len(values) < 2:
        return [best]
    half = float(steps.min()) / 2
    return [v for v in (best - half, best, best + half) if v > lower]


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


def _score_points(state: dict[str, Any], stage: int, workers: int, on_gpu: bool, progress: bool) -> list[dict]:
    """One table row per point of ``state["points"]``: its mIoU and pixel accuracy over all images."""
    points, num_classes = state["points"], state["num_classes"]
    tasks = [(p, k) for p in range(len(points)) for k in range(len(state["images"]))]
    desc = f"CRF cross-validation, stage {stage}"
    if on_gpu:
        confs = sum(_map(_cv_point_batched, range(len(points)), state, 1, desc, progress), [])
    else:
        confs = _map(_cv_one, tasks, state, workers, desc, progress)
    totals = [np.zeros((num_classes, num_classes), dtype=np.int64) for _ in points]
    for (p, _), conf in zip(tasks, confs):
        totals[p] += conf
    rows = []
    for (w1, ta, tb), conf in zip(points, totals):
        s = scores(conf)
        rows.append({"stage": stage, "w1": w1, "theta_alpha": ta, "theta_beta": tb,
                     "mean_iou": s["mean_iou"], "pixel_acc": s["pixel_acc"]})
    return rows


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
    on_gpu = _on_gpu(DenseCRF(**fixed))
    base = scores(sum(confusion_matrix(p.argmax(0), lab, num_classes, ignore_index) for p, lab in zip(probs, labels)))
    state = {"fixed": fixed, "images": images, "probs": probs, "labels": labels, "num_classes": num_classes,
             "ignore_index": ignore_index}
    workers = resolve_workers(workers)
    coarse = [(float(a), float(b), float(c)) for a in w1_grid for b in theta_alpha_grid for c in theta_beta_grid]
    rows = _score_points({**state, "points": coarse}, 1, workers, on_gpu, progress)
    grids = {"w1": list(w1_grid), "theta_alpha": list(theta_alpha_grid), "theta_beta": list(theta_beta_grid)}
    for _ in range(widen):
        best = max(rows, key=lambda r: r["mean_iou"])
        grown = {k: _widened(g, best[k]) for k, g in grids.items()}
        if grown == grids:
            break
        grids = grown
        scored = {(r["w1"], r["theta_alpha"], r["theta_beta"]) for r in rows}
        new = [(float(a), float(b), float(c)) for a in grids["w1"] for b in grids["theta_alpha"]
               for c in grids["theta_beta"] if (float(a), float(b), float(c)) not in scored]
        rows += _score_points({**state, "points": new}, 1, workers, on_gpu, progress)
        coarse += new
    if refine:
        b = max(rows, key=lambda r: r["mean_iou"])
        fine = [(a, t, c) for a in _finer(grids["w1"], b["w1"], 0.0)
                for t in _finer(grids["theta_alpha"], b["theta_alpha"], 0.0)
                for c in _finer(grids["theta_beta"], b["theta_beta"], 0.0)]
        fine = [pt for pt in dict.fromkeys(fine) if pt not in set(coarse)]  # each point scored once
        rows += _score_points({**state, "points": fine}, 2, workers, on_gpu, progress)
    table = pd.DataFrame(rows)
    best = table.loc[table["mean_iou"].idxmax()].to_dict()
    best["stage"] = int(best["stage"])
    return CVResult(table=table, best=best, baseline={"mean_iou": base["mean_iou"], "pixel_acc": base["pixel_acc"]})


# ----------------------------------------------------------------------------------------------
# Which CRF: the published choices and what they change
# ----------------------------------------------------------------------------------------------

def setting_variants() -> dict[str, dict[str, Any]]:
    """The choices the sources leave open, as DenseCRF keyword overrides: the kernel normalisation (pydensecrf's
    default "symmetric", DeepLab's "deeplab") x the smoothness kernel (the paper's text theta_gamma = 3, the released
    ResNet-101 settings theta_gamma = 1; both w2 = 3). The first is our default configuration."""
    out = {}
    for norm, norm_name in (("symmetric", "symmetric (pydensecrf)"), ("deeplab", "per pixel (DeepLab's densecrf)")):
        for setting in (PAPER_TEXT, RELEASED_RESNET101):
            out[f"{norm_name}, theta_gamma={setting.theta_gamma:g} ({setting.name})"] = {
                "normalization": norm, "w2": setting.w2, "theta_gamma": setting.theta_gamma}
    return out


def setting_effects(images: Sequence[np.ndarray], probs: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                    variants: dict[str, dict[str, Any]] | None = None, *, base: DenseCRF | None = None,
                    ignore_index: int = IGNORE_INDEX):
    """How much each CRF variant moves the labels: a table (pandas DataFrame), one row per variant.

    ``variants``: name -> DenseCRF keyword overrides on ``base`` (default :func:`setting_variants` on
    ``DenseCRF()``); the first variant is the reference. Columns: ``mean_iou`` (%, VOC measure over all
    images, void ignored), ``changed_vs_reference`` and ``changed_vs_no_crf`` (% of all pixels whose label
    differs from the reference variant's / from the argmax of P). The first row, "no CRF", is argmax P.
    """
    import pandas as pd

    variants = setting_variants() if variants is None else variants
    if not variants:
        raise ValueError("give at least one variant (name -> DenseCRF keyword overrides)")
    base = DenseCRF() if base is None else base
    num_classes = probs[0].shape[0]
    preds = {"no CRF": [p.argmax(0) for p in probs]}
    settings = {"no CRF": {"normalization": None, "w2": None, "theta_gamma": None}}
    for name, overrides in variants.items():
        model = DenseCRF(**{**base.params, **base.options, **overrides})
        preds[name] = model.predict_batch(images, probs)
        settings[name] = {"normalization": model.normalization, "w2": model.w2, "theta_gamma": model.theta_gamma}
    reference = next(iter(variants))
    total = sum(lab.size for lab in labels)

    def changed(a: str, b: str) -> float:
        return 100.0 * sum(int((x != y).sum()) for x, y in zip(preds[a], preds[b])) / total

    rows = []
    for name, pred in preds.items():
        conf = sum(confusion_matrix(x, np.asarray(y), num_classes, ignore_index) for x, y in zip(pred, labels))
        rows.append({"setting": name, **settings[name], "mean_iou": 100.0 * scores(conf)["mean_iou"],
                     "changed_vs_reference": changed(name, reference), "changed_vs_no_crf": changed(name, "no CRF")})
    return pd.DataFrame(rows).set_index("setting")
