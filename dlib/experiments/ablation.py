"""The ablation tables of DeepLab v2: every row trained and evaluated, the paper's number beside it.

Table 4 (ResNet-101, PASCAL VOC 2012 val; the components are cumulative, top to bottom):

    baseline 68.72 | +MSC 71.27 | +COCO 73.28 | +Aug 74.87 | +LargeFOV 75.54 | ASPP 76.35 | +CRF 77.69

Table 3 (VGG-16, no scale augmentation, before / after CRF): LargeFOV 65.76 / 69.84, ASPP-S 66.98 / 69.73,
ASPP-L 68.96 / 71.57.

A row is a *training* (backbone + head, MSC or not, COCO init or not, scale augmentation or not) plus
whether the fully connected CRF post-processes its output. Trainings shared by several rows run once.
Every training goes to its own folder under ``run_root`` and resumes there (``dlib.training.train``); every
scored row is cached as JSON beside it, so an interrupted notebook picks up where it stopped. Beside the
cumulative Table 4, :data:`dlib.experiments.ablation_tables.ONE_AT_A_TIME` adds each component alone to the baseline.

Profiles: ``gpu`` uses the paper's networks on VOC from ImageNet weights; the COCO rows start from the
COCO-pretrained DeepLab model at ``model.coco_checkpoint`` (without one they are reported as not run,
never faked). ``cpu``/``smoke`` use the small variants on the proxy data set, fine-tuned from the shipped
stand-ins (dlib.nets.standins): the ImageNet stand-in for every row, the COCO stand-in (the whole model,
classifier included) for the +COCO rows, as the paper does.

Statistics: every row runs with the seeds of ``ablation.seeds``; an increment is the mean of the
per-seed paired differences with a 95% t-interval (n - 1 degrees of freedom), and its verdict follows
from the interval (:mod:`dlib.experiments.stats`). Figures and diagnoses of the tables are in
:mod:`dlib.experiments.ablation_analysis`.

The CRF's w1, theta_alpha, theta_beta are chosen per CRF row (each training of a CRF row has its own
search) by :func:`dlib.crf.crossval.cross_validate`, on the images ``ablation.crf_tune_on`` names:

* ``"val100"`` (the ``gpu`` profile; the paper's protocol, DeepLab v2, Sec. 4.1): the first 100 images of
  the val split. Those 100 images are then also among the scored ones, as in the paper.
* ``"heldout_train"`` (``cpu``/``smoke``; ours): ``ablation.crf_holdout`` training images kept out of
  training; the evaluation images are never touched.

Table 3 trains without scale augmentation (``data.scale_aug`` False; scale augmentation is a Table-4
component) and without MSC or COCO, each row's VGG-16 network from ImageNet weights.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dlib import data as dlib_data
from dlib.core.config import Config
from dlib.core.datasets import dataset_info
from dlib.core.io import atomic_write_text, cache_root, load_probs, read_json
from dlib.crf.crossval import CVResult, cross_validate
from dlib.crf.dense import DenseCRF
from dlib.crf.tuning import refine_and_score
from dlib.evaluation.evaluate import dataset_id, evaluate, predict
from dlib.experiments.ablation_tables import TABLES, Training, training_config
from dlib.experiments.convergence import convergence_scores
from dlib.experiments.results import ABLATION_FOLDER, jsonable
from dlib.nets import network
from dlib.nets.caffe import is_caffemodel, load_caffemodel
from dlib.nets.standins import resolve_coco
from dlib.nets.weights import load_pretrained, read_state_dict
from dlib.training import train as dlib_train


class Subset(torch.utils.data.Subset):
    """Some items of a data set (torch's Subset), keeping the ``ids`` and ``classes`` evaluation and the CRF read."""

    @property
    def ids(self) -> list[str]:
        return [dataset_id(self.dataset, i) for i in self.indices]

    @property
    def classes(self) -> Any:
        return getattr(self.dataset, "classes", None)


PAPER_CRF_TUNE_IMAGES = 100  # DeepLab v2, Sec. 4.1: "cross-validation on 100 images from val"


def split_holdout(dataset: Any, holdout: int) -> tuple[Subset, Subset]:
    """(training part, held-out part): the last ``holdout`` images are kept out of training for CRF tuning."""
    n = len(dataset)
    if not 0 < holdout < n:
        raise ValueError(f"ablation.crf_holdout must be between 1 and {n - 1} (the training set has {n} images)")
    return Subset(dataset, list(range(n - holdout))), Subset(dataset, list(range(n - holdout, n)))


# --------------------------------------------------------------------------------------------
# One training, evaluated (with and without the CRF)
# --------------------------------------------------------------------------------------------

CACHE_VERSION = 2  # in every cache key and run folder name of the ablation: bumped, every older cache is retired


def cached(path: Path, key: dict[str, Any], compute: Callable[[], Any]) -> Any:
    """The value cached at ``path`` for ``key`` (with :data:`CACHE_VERSION`), else ``compute()``, written there
    atomically first. The ablation's one cache: scores, CRF scores and CRF searches all go through it, so an
    interrupted notebook picks up where it stopped and a changed setting never reads an old value."""
    wanted = _canonical({"version": CACHE_VERSION, **key})
    record = read_json(path, default=None)
    if record is not None and record.get("key") == wanted:
        return record["value"]
    value = _canonical(compute())
    atomic_write_text(path, json.dumps({"key": wanted, "value": value}, indent=1) + "\n")
    return value


def config_tag(cfg: Config) -> str:
    """8 hex digits of the resolved config and :data:`CACHE_VERSION`: a changed setting trains into a new folder,
    never over an old run.

    The CRF settings are left out: they do not change a training (the CRF scores are cached by the whole config
    and the CRF's parameters, so a changed CRF setting re-scores the trained network instead of training it again).
    """
    d = cfg.to_dict()
    d.pop("crf", None)
    d["cache_version"] = CACHE_VERSION
    return hashlib.sha1(json.dumps(d, sort_keys=True).encode()).hexdigest()[:8]


def run_dir_of(cfg: Config, training: Training, seed: int, run_root: str | os.PathLike) -> Path:
    """``<run_root>/<network>_s<seed>_<config tag>``: checkpoints, cached scores, CRF outputs.

    Named by the network actually trained (model and components), so rows of different tables that train
    the same network (e.g. Table 3's heads and the one-at-a-time heads on cpu) share one training.
    """
    tcfg = training_config(cfg, training, seed)
    parts = [tcfg.model.name] + [c for c in ("msc", "coco", "aug", "control") if getattr(training, c)]
    return Path(run_root) / f"{'_'.join(parts)}_s{seed}_{config_tag(tcfg)}"


def _canonical(value: Any) -> Any:
    """As it reads back from JSON (tuples become lists, numpy numbers plain ones), so a cached value compares
    equal and reads the same whether it was just computed or read back."""
    return json.loads(json.dumps(jsonable(value)))


def has_crf_row(training: Training) -> bool:
    """Whether some table refines ``training``'s output with the CRF (then its val probabilities are kept)."""
    return any(r.crf and r.training == training for rows in TABLES.values() for r in rows)


def load_coco_checkpoint(model, path: str) -> None:
    """A COCO-pretrained DeepLab model (the stand-in on cpu, a user's file on gpu): backbone *and* head.

    DeepLab v2's +COCO rows fine-tune the whole COCO model, classifier included (same 21 classes here).
    A released ``init.caffemodel`` (dlib.nets.caffe) loads into a Caffe-layout model; its classifier (COCO's
    classes, another layer name) is not copied, as in Caffe, and the report says so.
    """

    if is_caffemodel(path):
        if getattr(model.backbone, "caffe_layout", True) is False:
            raise ValueError(f"{path} is a Caffe model: build {model.name} with model.caffe_layout=true")
        print(load_caffemodel(model, path, head="optional").summary())
        return
    report = load_pretrained(model, read_state_dict(path), source=path)
    if not any(k.startswith("backbone.") for k in report.loaded):
        raise ValueError(f"{path} holds no backbone weights for {model.name}; is it a DeepLab checkpoint?")
    if not any(k.startswith("head.") for k in report.loaded):
        raise ValueError(f"{path} holds no head of {model.name}'s shape: the +COCO rows start from the whole COCO "
                         "model; give the COCO checkpoint of this same network")


def run_training(cfg: Config, training: Training, seed: int, run_root: str | os.PathLike, *,
                 crf_params: dict[str, float] | None = None, progress: bool = False) -> dict[str, Any]:
    """One training as a composition: train (or resume) -> evaluate on the val set (its probabilities cached when
    a CRF row needs them) -> with ``crf_params``, refine the cached probabilities with the CRF and score.

    Returns ``{"status": "ok", "mean_iou": ..., "train_seconds": ..., ...}`` (with ``crf_params`` also
    ``"mean_iou_crf"`` and the rest of the CRF's scores) or ``{"status": "not run: ..."}``. Each stage is cached
    in the run folder (:func:`cached`): ``scores.json``, ``crf_scores.json``.
    """
    tcfg = training_config(cfg, training, seed)
    run_dir = run_dir_of(cfg, training, seed, run_root)
    keep_probs = crf_params is not None or has_crf_row(training)
    key = {"config": tcfg.to_dict(), "val_probs": keep_probs}
    scores = cached(run_dir / "scores.json", key,
                    lambda: train_and_score(cfg, tcfg, training, seed, run_dir, keep_probs, progress))
    if scores["status"] != "ok" or crf_params is None:
        return scores
    crf = cached(run_dir / "crf_scores.json", {"config": tcfg.to_dict(), "crf_params": crf_params},
                 lambda: crf_score(tcfg, run_dir, crf_params))
    return {**scores, **{f"{k}_crf": crf[k] for k in ("mean_iou", "pixel_acc", "class_iou")}, "crf_params": crf_params}


def train_and_score(cfg: Config, tcfg: Config, training: Training, seed: int, run_dir: Path, keep_probs: bool,
                    progress: bool = False) -> dict[str, Any]:
    """Train (or resume) one network and score it on the val set; with ``keep_probs`` the softmax of every val
    image stays in ``<run>/val_probs`` for the CRF. The uncached stage of :func:`run_training`."""
    import torch

    coco = resolve_coco(tcfg) if training.coco or training.control else None
    if (training.coco or training.control) and not (coco and Path(coco).is_file()):
        return {"status": "not run: no COCO-pretrained init (set model.coco_checkpoint to a local file)"}
    # The initial weights come from the global RNG: seed it here, or a training's result would depend on what
    # ran before it in the same worker process.
    torch.manual_seed(seed)
    model = network.build(tcfg)
    if coco:
        load_coco_checkpoint(model, coco)
    train_set = dlib_data.build_dataset(tcfg, "train")
    if cfg.ablation.crf_tune_on == "heldout_train":  # the CRF's tuning images stay out of training
        train_set, _ = split_holdout(train_set, cfg.ablation.crf_holdout)
    result = dlib_train.train(tcfg, run_dir, model=model, dataset=train_set, progress=progress)
    val = dlib_data.build_dataset(tcfg, "val")
    scores = evaluate(tcfg, result.model, val, cache_dir=run_dir / VAL_PROBS if keep_probs else None,
                      progress=progress)
    return {"status": "ok", "mean_iou": scores["mean_iou"], "pixel_acc": scores["pixel_acc"],
            "class_iou": scores["class_iou"], "train_seconds": result.seconds,
            "model": tcfg.model.name, "seed": seed, "run_dir": str(run_dir),
            "threads": torch.get_num_threads(),  # CPU results repeat exactly for the same threads
            "convergence": convergence_scores(tcfg, result.model, run_dir)}


VAL_PROBS = "val_probs"  # <run>/val_probs/<image id>.npz: the val softmax the CRF refines (dlib.core.io.save_probs)


def crf_score(cfg: Config, run_dir: Path, params: dict[str, float]) -> dict[str, Any]:
    """Refine the run's cached val probabilities with the CRF (``dlib.crf.tuning.refine_and_score``) and score."""

    dataset = dlib_data.build_dataset(cfg, "val")
    n = len(dataset) if cfg.eval.max_images is None else min(len(dataset), cfg.eval.max_images)
    s = refine_and_score(run_dir / VAL_PROBS, run_dir / "val_crf", dataset, crf=DenseCRF.from_config(cfg, **params),
                         num_classes=cfg.model.num_classes, ids=dataset.ids[:n], workers=1, progress=False)
    return {"mean_iou": s["mean_iou"], "pixel_acc": s["pixel_acc"], "class_iou": s["class_iou"]}


def crf_tuning_images(cfg: Config, tcfg: Config) -> Subset:
    """The images a CRF row's parameters are cross-validated on (``ablation.crf_tune_on``).

    ``"val100"``: the first 100 images of the val split, the paper's protocol (DeepLab v2, Sec. 4.1); they are
    then also scored, as in the paper. ``"heldout_train"``: the ``ablation.crf_holdout`` training images that
    :func:`run_training` keeps out of training (ours; never the evaluation images).
    """

    if cfg.ablation.crf_tune_on == "val100":
        val = dlib_data.build_dataset(tcfg, "val")
        return Subset(val, list(range(min(PAPER_CRF_TUNE_IMAGES, len(val)))))
    _, held = split_holdout(dlib_data.build_dataset(tcfg, "train"), cfg.ablation.crf_holdout)
    return held


def crf_tuning_description(cfg: Config) -> str:
    """One line saying where the CRF rows are tuned (``ablation.crf_tune_on``), for tables and notebooks."""
    if cfg.ablation.crf_tune_on == "val100":
        return (f"CRF cross-validated on the first {PAPER_CRF_TUNE_IMAGES} val images (the paper's protocol, "
                "DeepLab v2 Sec. 4.1; those images are also scored)")
    return f"CRF cross-validated on {cfg.ablation.crf_holdout} training images held out from training"


def tune_crf(cfg: Config, training: Training, seed: int, run_root: str | os.PathLike, *,
             grid: dict[str, Sequence[float]] | None = None):
    """Cross-validate w1, theta_alpha, theta_beta on :func:`crf_tuning_images` (``ablation.crf_tune_on``), with
    the trained model of (``training``, ``seed``) (trained first if needed). Returns a
    :class:`dlib.crf.crossval.CVResult`, cached in ``<run>/crf_cv.json`` (:func:`cached`)."""
    import pandas as pd

    run_training(cfg, training, seed, run_root)  # trains the model and caches its val probabilities
    tcfg = training_config(cfg, training, seed)
    run_dir = run_dir_of(cfg, training, seed, run_root)
    grid = grid or crf_grid(cfg)
    widen = 0 if dataset_info(cfg.data.dataset).paper else CRF_WIDEN
    key = {"config": tcfg.to_dict(), "grid": {k: list(map(float, v)) for k, v in grid.items()},
           "holdout": cfg.ablation.crf_holdout, "widen": widen}

    def search() -> dict[str, Any]:
        images, probs, labels = tuning_inputs(cfg, tcfg, training, run_dir)
        cv = cross_validate(images, probs, labels, w1_grid=grid["w1"], theta_alpha_grid=grid["theta_alpha"],
                            theta_beta_grid=grid["theta_beta"], w2=cfg.crf.w2, theta_gamma=cfg.crf.theta_gamma,
                            iterations=cfg.crf.iterations, refine=dataset_info(cfg.data.dataset).paper,
                            widen=widen, workers=max(1, cfg.ablation.workers), progress=False,
                            backend=cfg.crf.backend, normalization=cfg.crf.normalization, device=cfg.crf.device)
        return {"table": cv.table.to_dict("records"), "best": cv.best, "baseline": cv.baseline}

    found = cached(run_dir / "crf_cv.json", key, search)
    return CVResult(pd.DataFrame(found["table"]), found["best"], found["baseline"])


def tuning_inputs(cfg: Config, tcfg: Config, training: Training, run_dir: Path) -> tuple[list, list, list]:
    """(images, softmax maps, labels) of :func:`crf_tuning_images`. On ``"val100"`` the softmax is the one the
    evaluation cached (``<run>/val_probs``), so the CRF is tuned on exactly what it refines; held-out training
    images were never evaluated, so the trained network predicts them here."""
    import torch

    held = crf_tuning_images(cfg, tcfg)
    items = [held[i] for i in range(len(held))]
    images, labels = [image for image, _ in items], [np.asarray(label) for _, label in items]
    if cfg.ablation.crf_tune_on == "val100":
        return images, [load_probs(run_dir / VAL_PROBS / f"{i}.npz") for i in held.ids], labels
    model = network.load_run(tcfg, run_dir).eval()
    with torch.no_grad():
        probs = [predict(model, image, tcfg, msc=training.msc) for image in images]
    return images, probs, labels


CRF_WIDEN = 3  # proxy: how many times a grid may grow past an edge optimum (dlib.crf.crossval.cross_validate)


def crf_grid(cfg: Config) -> dict[str, list[float]]:
    """The search grid: the paper's (DeepLab v2, Sec. 4.1) for VOC-sized images, searched coarse then fine as
    the paper did; on the proxy (cpu/smoke) one grid, widened past any edge optimum (:data:`CRF_WIDEN` steps) and
    without the fine stage, with theta_alpha (a distance in pixels) scaled from ~500-px images to the proxy's size
    (40, 80 and 160 px at 500 px)."""
    if dataset_info(cfg.data.dataset).paper:
        return {"w1": [3, 4, 5, 6], "theta_alpha": list(range(30, 101, 10)), "theta_beta": [3, 4, 5, 6]}
    if cfg.profile == "smoke":
        return {"w1": [4], "theta_alpha": [8], "theta_beta": [3, 5]}
    # Centred where the previous proxy searches ended (w1 8-24, theta_alpha 7-56 px, theta_beta 12-30) in steps
    # of 2x, so most searches bracket their optimum without widening; widening still covers the rest.
    scale = cfg.data.proxy_image_size / 500
    return {"w1": [8, 16, 24], "theta_alpha": [round(f * scale) for f in (40, 80, 160)], "theta_beta": [6, 12, 24]}


def default_run_root(cfg: Config) -> Path:
    """Where notebooks 05-07 keep the ablation's trainings (checkpoints, cached scores): under the cache."""

    return cache_root() / "runs" / cfg.profile / ABLATION_FOLDER
