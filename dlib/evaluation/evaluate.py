"""Whole-image evaluation (DeepLab v2, Sec. 4): scores, optional multi-scale (MSC) and flip, cached softmax.

For each image: normalise, pad to ``data.eval_pad`` (513 in the ``gpu`` profile, mean colour; the
padding is cut off again), run the network (with MSC: max fusion over scales {1, 0.75, 0.5},
DeepLab v2, Sec. 3.2), upsample the stride-8 scores bilinearly to the image size
(:func:`dlib.nets.models.upsample_logits`), optionally average with the horizontally flipped image's
scores, take the softmax and its argmax (in float32, or bf16 autocast on CUDA: :func:`eval_precision`;
a released Caffe model in float32). The confusion matrix is accumulated over the whole set
and scored by :mod:`dlib.evaluation.metrics` (mIoU, pixel accuracy, per-class IoU). With ``cache_dir`` every
softmax is written as ``<cache_dir>/<id>.npz`` (key ``probs``, (C, H, W) float16, compressed;
:func:`dlib.core.io.save_probs`) for the CRF stage (:func:`dlib.crf.tuning.refine_and_score`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from dlib.core.config import Config, pick_device
from dlib.core.constants import IGNORE_INDEX, NUM_CLASSES, VOC_CLASSES
from dlib.core.io import save_probs
from dlib.data.transforms import normalisation, to_tensor
from dlib.data.voc import preflight
from dlib.evaluation.metrics import confusion_matrix, scores
from dlib.nets.models import upsample_logits
from dlib.nets.network import as_evaluated, precision

_BATCH = 8  # same-sized images are scored together (batch norm is in eval mode: results do not change)


@torch.no_grad()
def predict_logits(net: nn.Module, images: torch.Tensor, size: tuple[int, int], *, flip: bool = False,
                   pad: int = 0) -> torch.Tensor:
    """Full-resolution scores (N, C, H, W) for normalised images (N, 3, H, W) (already on the device).

    ``pad`` > 0 pads bottom/right with zeros (the mean colour after normalisation) to pad x pad first;
    the stride-8 scores are upsampled to the padded size and cropped back to ``size``. With ``flip``
    the scores of the mirrored image, mirrored back, are averaged in.
    """
    h, w = size

    def run(x: torch.Tensor) -> torch.Tensor:
        if pad:  # bottom/right, so the image keeps its place on the stride-8 grid
            x = F.pad(x, (0, max(pad - w, 0), 0, max(pad - h, 0)))
        logits = net(x)
        return upsample_logits(logits.float(), tuple(x.shape[-2:]))[..., :h, :w]

    scores = run(images)
    if flip:
        scores = 0.5 * (scores + run(images.flip(-1)).flip(-1))
    return scores


def predict(model: nn.Module, image: np.ndarray, cfg: Config, *, msc: bool | None = None,
            flip: bool | None = None, device: str | None = None) -> np.ndarray:
    """Softmax probabilities (C, H, W) float32 for one uint8 image (H, W, 3)."""
    msc = cfg.eval.msc if msc is None else msc
    flip = cfg.eval.flip if flip is None else flip
    dev = torch.device(device or pick_device(cfg))
    net = as_evaluated(model, cfg, msc).to(dev).eval()
    mean, std, bgr = normalisation(cfg.data)
    x, _ = to_tensor(image, None, mean, std, bgr=bgr)
    scores = predict_logits(net, x[None].to(dev), image.shape[:2], flip=flip, pad=cfg.data.eval_pad)
    return torch.softmax(scores[0], dim=0).cpu().numpy()


def dataset_id(dataset: Any, i: int) -> str:
    """Item ``i``'s id: the data set's own (``ids``) or its index as six digits (the probability cache's name)."""
    ids = getattr(dataset, "ids", None)
    return str(ids[i]) if ids is not None else f"{i:06d}"


def same_size_batches(dataset: Any, n: int, batch: int = _BATCH) -> Iterator[list[tuple[Any, Any]]]:
    """The first ``n`` items of ``dataset`` in order, grouped into runs of up to ``batch`` same-sized images."""
    i = 0
    while i < n:
        group = [dataset[i]]
        while i + len(group) < n and len(group) < batch:
            nxt = dataset[i + len(group)]
            if nxt[0].shape != group[0][0].shape:
                break
            group.append(nxt)
        yield group
        i += len(group)


def evaluate(cfg: Config, model: nn.Module, dataset: Any, *, msc: bool | None = None, flip: bool | None = None,
             cache_dir: str | os.PathLike | None = None, max_images: int | None = None, results: Any = None,
             name: str = "scores", keep_predictions: bool = False, progress: bool | None = None,
             device: str | None = None) -> dict[str, Any]:
    """Score ``model`` on ``dataset`` (items ``(image uint8 (H, W, 3), label (H, W))``, whole images).

    ``msc``/``flip`` default to ``cfg.eval``; ``max_images`` to ``cfg.eval.max_images`` (None: all).
    Returns ``mean_iou``, ``pixel_acc`` (fractions), ``class_iou`` (list, NaN for classes absent from
    both prediction and label), ``confusion`` (C, C) int64, ``num_images``, ``msc``, ``flip``, ``precision``
    (:func:`eval_precision`), and
    ``predictions`` (list of uint8 maps) with ``keep_predictions``. With ``results`` (a
    :class:`dlib.experiments.results.Results`) writes ``<name>.json`` and ``<name>_class_iou.csv``.
    """
    msc = cfg.eval.msc if msc is None else msc
    flip = cfg.eval.flip if flip is None else flip
    max_images = cfg.eval.max_images if max_images is None else max_images
    num_classes = cfg.model.num_classes
    dev = torch.device(device or pick_device(cfg))
    was_training = model.training
    net = as_evaluated(model, cfg, msc).to(dev).eval()
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    if n == 0:
        raise ValueError("the evaluation data set is empty")
    preflight(dataset, max_images=n)  # every image and label opened (headers, sizes) before any scoring
    show = sys.stderr.isatty() if progress is None else progress
    conf, predictions = _confusion(net, cfg, dataset, n, dev, flip=flip, cache_dir=cache_dir,
                                   keep_predictions=keep_predictions, show=show)
    if was_training:
        model.train()
    s = scores(conf)
    out: dict[str, Any] = {"mean_iou": s["mean_iou"], "pixel_acc": s["pixel_acc"],
                           "class_iou": [float(v) for v in s["class_iou"]], "confusion": conf,
                           "num_images": n, "msc": bool(msc), "flip": bool(flip),
                           "precision": eval_precision(cfg, dev)}
    if keep_predictions:
        out["predictions"] = predictions
    if results is not None:
        write_scores(results, name, out, class_names(dataset, num_classes))
    return out


def _confusion(net: nn.Module, cfg: Config, dataset: Any, n: int, dev: torch.device, *, flip: bool,
               cache_dir: str | os.PathLike | None, keep_predictions: bool, show: bool
               ) -> tuple[np.ndarray, list[np.ndarray]]:
    """The confusion matrix of the first ``n`` images (and their label maps with ``keep_predictions``), the
    softmax of each saved to ``cache_dir`` as ``<id>.npz`` when given: the scoring loop of :func:`evaluate`."""
    num_classes = cfg.model.num_classes
    cache = Path(cache_dir) if cache_dir is not None else None
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    predictions: list[np.ndarray] = []
    done = 0
    with tqdm(total=n, desc="evaluate", unit="img", disable=not show) as bar:
        for batch in same_size_batches(dataset, n):
            probs = _batch_probs(net, cfg, [image for image, _ in batch], dev, flip=flip)
            preds = probs.argmax(1).to(torch.uint8).cpu().numpy()
            for k, ((_, label), pred) in enumerate(zip(batch, preds)):
                conf += confusion_matrix(pred, np.asarray(label), num_classes, IGNORE_INDEX)
                if cache is not None:
                    save_probs(cache / f"{dataset_id(dataset, done + k)}.npz", probs[k].cpu().numpy())
                if keep_predictions:
                    predictions.append(pred)
            done += len(batch)
            bar.update(len(batch))
    return conf, predictions


def eval_precision(cfg: Config, device: str | torch.device | None = None) -> str:
    """The precision an evaluation runs in, "float32" or "bf16" (``eval.precision``; "auto": float32 for a
    released Caffe model, bf16 on CUDA when ``train.bf16``, float32 on CPU)."""
    if cfg.eval.precision != "auto":
        return cfg.eval.precision
    if cfg.model.caffemodel is not None:
        return "float32"
    dev = torch.device(device or pick_device(cfg))
    return "bf16" if dev.type == "cuda" and cfg.train.bf16 else "float32"


def _batch_probs(net: nn.Module, cfg: Config, images: Sequence[np.ndarray], dev: torch.device, *,
                 flip: bool) -> torch.Tensor:
    """Softmax (N, C, H, W) of same-sized uint8 images (data.input_convention; :func:`eval_precision`)."""
    mean, std, bgr = normalisation(cfg.data)  # data.input_convention (dlib.data.transforms)
    x = torch.stack([to_tensor(image, None, mean, std, bgr=bgr)[0] for image in images]).to(dev)
    with precision(eval_precision(cfg, dev), dev):
        logits = predict_logits(net, x, images[0].shape[:2], flip=flip, pad=cfg.data.eval_pad)
    return torch.softmax(logits.float(), dim=1)


def class_names(dataset: Any, num_classes: int) -> list[str]:
    names = getattr(dataset, "classes", None)
    if names is not None and len(names) == num_classes:
        return list(names)
    return list(VOC_CLASSES) if num_classes == len(VOC_CLASSES) else [str(c) for c in range(num_classes)]


def write_scores(results: Any, name: str, out: dict[str, Any], names: Sequence[str]) -> None:
    """``<name>.json`` (mIoU, pixel accuracy, per-class IoU by name, confusion matrix) and ``<name>_class_iou.csv``."""
    payload = {"mean_iou": out["mean_iou"], "pixel_acc": out["pixel_acc"], "num_images": out["num_images"],
               "msc": out["msc"], "flip": out["flip"],
               "class_iou": {c: v for c, v in zip(names, out["class_iou"])},
               "confusion": np.asarray(out["confusion"]).tolist(), "classes": list(names)}
    results.json(name, payload)
    results.csv(f"{name}_class_iou", [{"class": c, "iou": v} for c, v in zip(names, out["class_iou"])])


def trivial_baseline(dataset: Any, num_classes: int = NUM_CLASSES, *,
                     max_images: int | None = None) -> dict[str, float]:
    """Scores of predicting the most frequent training-free guess, class 0 (background), everywhere."""
    conf = np.zeros((num_classes, num_classes), dtype=np.int64)
    n = len(dataset) if max_images is None else min(len(dataset), max_images)
    for i in range(n):
        label = np.asarray(dataset[i][1])
        conf += confusion_matrix(np.zeros_like(label), label, num_classes, IGNORE_INDEX)
    s = scores(conf)
    return {"mean_iou": s["mean_iou"], "pixel_acc": s["pixel_acc"]}
