"""Running the fully connected CRF on a data set: refine and score, and what the open settings change.

* :func:`refine_dataset` refines every cached softmax ``<id>.npz`` into a label PNG, over a pool of
  processes (pydensecrf, or torch on the CPU) or in batches on one GPU (torch; dlib.crf.parallel);
  :func:`refine_and_score` also reads the labels back and scores them against a data set's labels:
  the CRF stage of the command line (``python -m dlib crf``), the ablation and the notebooks.
* :func:`setting_effects`: how much the choices the sources leave open (kernel normalisation, the
  smoothness kernel) move the labels.

The parameter search (DeepLab v1, Sec. 5; v2, Sec. 4.1) is :mod:`dlib.crf.crossval`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dlib.core.config import PAPER_TEXT, RELEASED_RESNET101
from dlib.core.constants import IGNORE_INDEX
from dlib.core.io import load_probs, probs_shape, read_image, read_label, write_label
from dlib.crf.dense import DenseCRF
from dlib.crf.parallel import TORCH_BATCH, on_gpu, ordered_map, resolve_workers
from dlib.evaluation.metrics import confusion_matrix, scores

__all__ = ["TORCH_BATCH", "ImagesAndLabels", "check_class_count", "refine_and_score", "refine_dataset",
           "resolve_workers", "setting_effects", "setting_variants"]

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
    if on_gpu(crf):  # one process, TORCH_BATCH images per lattice (CUDA does not survive fork)
        return _refine_batched(crf, ids, prob_dir, out_dir, images, overwrite, progress)
    state = {"crf": crf, "images": images, "prob_dir": str(prob_dir),
             "out_dir": str(out_dir), "overwrite": overwrite}
    paths = ordered_map(_refine_one, ids, state, resolve_workers(workers), "CRF", progress)
    return [Path(p) for p in paths]


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
