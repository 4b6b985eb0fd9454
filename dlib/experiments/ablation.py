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
search) by :func:`dlib.crf.tuning.cross_validate`, on the images ``ablation.crf_tune_on`` names:

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
import multiprocessing as mp
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dlib.core.config import Config, available_cpus, identity_dict
from dlib.core.datasets import dataset_info
from dlib.core.io import atomic_write_text, read_json
from dlib.experiments.ablation_tables import REFERENCES, TABLES, Training, training_config, trainings_of
from dlib.experiments.convergence import convergence_scores
from dlib.experiments.results import ABLATION_FOLDER, jsonable
from dlib.experiments.stats import summarise


class Subset:
    """Some items of a data set, keeping its ``ids`` and ``classes``."""

    def __init__(self, dataset: Any, indices: Sequence[int]):
        self.dataset, self.indices = dataset, list(indices)
        ids = getattr(dataset, "ids", None)
        self.ids = [ids[i] for i in self.indices] if ids is not None else [f"{i:06d}" for i in self.indices]
        self.classes = getattr(dataset, "classes", None)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        return self.dataset[self.indices[i]]


PAPER_CRF_TUNE_IMAGES = 100  # DeepLab v2, Sec. 4.1: "cross-validation on 100 images from val"


def split_holdout(dataset: Any, holdout: int) -> tuple[Subset, Subset]:
    """(training part, held-out part): the last ``holdout`` images are kept out of training for CRF tuning."""
    n = len(dataset)
    if not 0 < holdout < n:
        raise ValueError(f"ablation.crf_holdout must be between 1 and {n - 1} (the training set has {n} images)")
    return Subset(dataset, range(n - holdout)), Subset(dataset, range(n - holdout, n))


# --------------------------------------------------------------------------------------------
# One training, evaluated (with and without the CRF)
# --------------------------------------------------------------------------------------------

def config_tag(cfg: Config) -> str:
    """8 hex digits of the resolved config: a changed setting trains into a new folder, never over an old run.

    The CRF settings are left out: they do not change a training (the cached scores are keyed by the whole
    config, so a changed CRF setting re-scores the trained network instead of training it again). Keys added
    since runs were cached count only away from their neutral value (:func:`dlib.core.config.identity_dict`).
    """
    d = identity_dict(cfg)
    d.pop("crf", None)
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
    """As it reads back from JSON (tuples become lists), so a cached key compares equal."""
    return json.loads(json.dumps(jsonable(value)))


def load_coco_checkpoint(model, path: str) -> None:
    """A COCO-pretrained DeepLab model (the stand-in on cpu, a user's file on gpu): backbone *and* head.

    DeepLab v2's +COCO rows fine-tune the whole COCO model, classifier included (same 21 classes here).
    A released ``init.caffemodel`` (dlib.nets.caffe) loads into a Caffe-layout model; its classifier (COCO's classes,
    another layer name) is not copied, as in Caffe, and the report says so.
    """
    from dlib.nets.caffe import is_caffemodel, load_caffemodel
    from dlib.nets.weights import load_pretrained, read_state_dict

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
    """Train (or resume) one network and score it on the val set, without and (with ``crf_params``) with the CRF.

    Returns ``{"status": "ok", "mean_iou": ..., "mean_iou_crf": ..., "train_seconds": ..., ...}`` or
    ``{"status": "not run: ..."}``. Scores are cached in ``<run>/scores.json``.
    """
    from dlib import data as dlib_data
    from dlib.evaluation.evaluate import evaluate
    from dlib.nets import network
    from dlib.training import train as dlib_train

    run_root = Path(run_root)
    tcfg = training_config(cfg, training, seed)
    run_dir = run_dir_of(cfg, training, seed, run_root)
    cache = run_dir / "scores.json"
    wanted = _canonical({"config": identity_dict(tcfg), "crf_params": crf_params})
    cached = read_json(cache, default=None)
    if cached is not None and cached["key"]["config"] == wanted["config"] and (
            crf_params is None or cached["key"]["crf_params"] == wanted["crf_params"]):
        return cached["scores"]  # (scores with the CRF also hold the scores without it)

    from dlib.nets.standins import resolve_coco

    coco = resolve_coco(tcfg) if training.coco or training.control else None
    if (training.coco or training.control) and not (coco and Path(coco).is_file()):
        return {"status": "not run: no COCO-pretrained init (set model.coco_checkpoint to a local file)"}
    import torch

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
    probs_dir = run_dir / "val_probs"
    scores = evaluate(tcfg, result.model, val, cache_dir=probs_dir if crf_params else None, progress=progress)
    out: dict[str, Any] = {"status": "ok", "mean_iou": scores["mean_iou"], "pixel_acc": scores["pixel_acc"],
                           "class_iou": scores["class_iou"], "train_seconds": result.seconds,
                           "model": tcfg.model.name, "seed": seed, "run_dir": str(run_dir),
                           "threads": torch.get_num_threads(),  # CPU results repeat exactly for the same threads
                           "convergence": convergence_scores(tcfg, result.model, run_dir)}
    if crf_params:
        crf_scores = crf_score(tcfg, val, probs_dir, run_dir / "val_crf", crf_params)
        out.update({"mean_iou_crf": crf_scores["mean_iou"], "pixel_acc_crf": crf_scores["pixel_acc"],
                    "class_iou_crf": crf_scores["class_iou"], "crf_params": crf_params})
    atomic_write_text(cache, json.dumps(jsonable({"key": wanted, "scores": out}), indent=1) + "\n")
    return out


def crf_score(cfg: Config, dataset: Any, probs_dir: Path, out_dir: Path, params: dict[str, float]) -> dict[str, Any]:
    """Refine the cached val probabilities with the CRF (``dlib.crf.tuning.refine_and_score``) and score the labels."""
    from dlib.crf.dense import DenseCRF
    from dlib.crf.tuning import refine_and_score

    n = len(dataset) if cfg.eval.max_images is None else min(len(dataset), cfg.eval.max_images)
    s = refine_and_score(probs_dir, out_dir, dataset, crf=DenseCRF.from_config(cfg, **params),
                         num_classes=cfg.model.num_classes, ids=dataset.ids[:n], workers=1, progress=False)
    return {"mean_iou": s["mean_iou"], "pixel_acc": s["pixel_acc"], "class_iou": s["class_iou"]}


def crf_tuning_images(cfg: Config, tcfg: Config) -> Subset:
    """The images a CRF row's parameters are cross-validated on (``ablation.crf_tune_on``).

    ``"val100"``: the first 100 images of the val split, the paper's protocol (DeepLab v2, Sec. 4.1); they are
    then also scored, as in the paper. ``"heldout_train"``: the ``ablation.crf_holdout`` training images that
    :func:`run_training` keeps out of training (ours; never the evaluation images).
    """
    from dlib import data as dlib_data

    if cfg.ablation.crf_tune_on == "val100":
        val = dlib_data.build_dataset(tcfg, "val")
        return Subset(val, range(min(PAPER_CRF_TUNE_IMAGES, len(val))))
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
    :class:`dlib.crf.tuning.CVResult`."""
    import pandas as pd
    import torch

    from dlib.crf.tuning import CVResult, cross_validate
    from dlib.evaluation.evaluate import predict
    from dlib.nets import network

    run_training(cfg, training, seed, run_root)  # ensures the model is trained
    tcfg = training_config(cfg, training, seed)
    grid = grid or crf_grid(cfg)
    cache = run_dir_of(cfg, training, seed, run_root) / "crf_cv.json"
    wanted = _canonical({"config": identity_dict(tcfg), "grid": {k: list(map(float, v)) for k, v in grid.items()},
                         "holdout": cfg.ablation.crf_holdout, "crf": asdict(cfg.crf),
                         "widen": 0 if dataset_info(cfg.data.dataset).paper else CRF_WIDEN})
    cached = read_json(cache, default=None)
    if cached is not None and cached.get("key") == wanted:
        return CVResult(pd.DataFrame(cached["table"]), cached["best"], cached["baseline"])
    model = network.load_run(tcfg, run_dir_of(cfg, training, seed, run_root))
    held = crf_tuning_images(cfg, tcfg)
    images, probs, labels = [], [], []
    model.eval()
    with torch.no_grad():
        for i in range(len(held)):
            image, label = held[i]
            images.append(image)
            labels.append(np.asarray(label))
            probs.append(predict(model, image, tcfg, msc=training.msc))
    cv = cross_validate(images, probs, labels, w1_grid=grid["w1"], theta_alpha_grid=grid["theta_alpha"],
                        theta_beta_grid=grid["theta_beta"], w2=cfg.crf.w2, theta_gamma=cfg.crf.theta_gamma,
                        iterations=cfg.crf.iterations, refine=dataset_info(cfg.data.dataset).paper,
                        widen=wanted["widen"],
                        workers=max(1, cfg.ablation.workers), progress=False, backend=cfg.crf.backend,
                        normalization=cfg.crf.normalization, device=cfg.crf.device)
    record = {"key": wanted, "table": cv.table.to_dict("records"), "best": cv.best, "baseline": cv.baseline}
    atomic_write_text(cache, json.dumps(jsonable(record), indent=1) + "\n")
    return cv


CRF_WIDEN = 3  # proxy: how many times a grid may grow past an edge optimum (dlib.crf.tuning.cross_validate)


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


# --------------------------------------------------------------------------------------------
# Whole tables
# --------------------------------------------------------------------------------------------

def _job(args: tuple) -> tuple[str, int, dict[str, Any], float]:
    cfg_dict, training, seed, run_root, crf_params, threads = args
    import time

    import torch

    torch.set_num_threads(threads)
    cfg = Config.from_dict(cfg_dict)
    start = time.time()
    res = run_training(cfg, training, seed, run_root, crf_params=crf_params)
    return training.key, seed, res, time.time() - start


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def training_label(training: Training) -> str:
    """The first table row that trains ``training``, e.g. "+MSC (table4)"."""
    row = next((r for rows in TABLES.values() for r in rows if r.training == training), None)
    return f"{row.name} ({row.table})" if row else training.key


def progress_line(done: int, total: int, training: Training, seed: int, res: dict[str, Any], seconds: float) -> str:
    """One line per finished training: ``[12/33] +MSC (table4) seed 1: 51.1% (61 s)``."""
    if res.get("status") != "ok":
        score = res.get("status", "not run")
    else:
        crf = f", {100 * res['mean_iou_crf']:.1f}% with the CRF" if "mean_iou_crf" in res else ""
        score = f"{100 * res['mean_iou']:.1f}%{crf}"
    return f"[{done}/{total}] {training_label(training)} seed {seed}: {score} ({seconds:.0f} s)"


def run_trainings(cfg: Config, jobs: Sequence[tuple[Training, int, dict | None]], run_root: str | os.PathLike, *,
                  workers: int | None = None, progress: Callable[[str], None] | None = None
                  ) -> dict[tuple[str, int], dict[str, Any]]:
    """Run (training, seed, crf_params) jobs, ``workers`` at a time in separate processes (1: in this one).

    On a small CPU two single-threaded trainings side by side beat one two-threaded training. Results are
    deterministic for a given number of threads per training. ``progress`` gets one :func:`progress_line` per
    finished job.
    """
    workers = cfg.ablation.workers if workers is None else workers
    # Jobs that train the same network (same run folder) run once; every row key gets the result.
    unique: dict[tuple[Path, str], tuple[Training, int, dict | None]] = {}
    keys: dict[tuple[Path, str], list[tuple[str, int]]] = {}
    for training, seed, crf_params in jobs:
        ident = (run_dir_of(cfg, training, seed, run_root), json.dumps(crf_params, sort_keys=True))
        unique.setdefault(ident, (training, seed, crf_params))
        keys.setdefault(ident, []).append((training.key, seed))
    done: dict[tuple[str, int], dict[str, Any]] = {}
    trainings = {t.key: t for t, _, _ in unique.values()}

    def finished(key: str, seed: int, res: dict[str, Any], seconds: float) -> None:
        done[(key, seed)] = res
        if progress:
            progress(progress_line(len(done), len(unique), trainings[key], seed, res, seconds))

    if workers <= 1:
        for training, seed, crf_params in unique.values():
            finished(*_job((cfg.to_dict(), training, seed, str(run_root), crf_params, _threads())))
    else:
        threads = max(1, available_cpus() // workers)
        args = [(cfg.to_dict(), t, s, str(run_root), p, threads) for t, s, p in unique.values()]
        # Longest first (MSC trainings cost about twice the others), so the pool ends together.
        args.sort(key=lambda a: (not a[1].msc, a[1].head == "baseline"))
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, maxtasksperchild=4) as pool:
            for key, seed, res, seconds in pool.imap_unordered(_job, args):
                finished(key, seed, res, seconds)
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for ident, (training, seed, _) in unique.items():
        for key in keys[ident]:
            out[key] = done[(training.key, seed)]
    return out


@dataclass
class AblationResult:
    tables: dict[str, Any]  # "table4"/"table3"/"ofat" -> pandas DataFrame (see dlib.experiments.stats.summarise)
    crf: dict[str, Any]  # training key -> dlib.crf.tuning.CVResult of its CRF tuning (ablation.crf_tune_on's images)
    runs: dict[tuple[str, int], dict[str, Any]]  # (training key, seed) -> scores


def run_tables(cfg: Config, run_root: str | os.PathLike,
               tables: Sequence[str] = ("table4", "table3", "ofat", "coco_control"), *,
               progress: Callable[[str], None] | None = None) -> AblationResult:
    """Every training of ``tables`` for every seed of ``cfg.ablation.seeds``, then the CRF rows.

    Each training that has a CRF row gets its own CRF parameters (:func:`tune_crf`), cross-validated with its
    first seed's model on the images ``ablation.crf_tune_on`` names and applied to every seed: 100 val images
    on gpu, as the paper (which are then also scored), held-out training images on cpu/smoke.
    """
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise ValueError(f"unknown tables {unknown}; valid: {sorted(TABLES)}")
    seeds = tuple(cfg.ablation.seeds)
    if not seeds:
        raise ValueError("ablation.seeds is empty; give at least one seed")
    trainings = trainings_of(tables)
    runs = run_trainings(cfg, [(t, s, None) for t in trainings for s in seeds], run_root, progress=progress)
    crf, crf_jobs = {}, []
    for training in dict.fromkeys(r.training for name in tables for r in TABLES[name] if r.crf):
        if runs[(training.key, seeds[0])].get("status") != "ok":
            continue  # e.g. the COCO rows on VOC without a COCO checkpoint: reported as not run
        crf[training.key] = tune_crf(cfg, training, seeds[0], run_root)
        params = {k: float(crf[training.key].best[k]) for k in ("w1", "theta_alpha", "theta_beta")}
        crf_jobs += [(training, seed, params) for seed in seeds]
    runs.update(run_trainings(cfg, crf_jobs, run_root, progress=progress))
    return AblationResult({name: summarise(TABLES[name], runs, seeds, reference=REFERENCES[name])
                           for name in tables}, crf, runs)


def runs_record(result: AblationResult) -> dict[str, Any]:
    """Every (training, seed) score of a run, JSON-ready (what ``dlib.tools.check`` compares against)."""
    runs = {}
    for (key, seed), res in sorted(result.runs.items()):
        runs[f"{key}_s{seed}"] = {k: v for k, v in res.items() if k not in ("class_iou", "class_iou_crf", "run_dir")}
    best = {name: {k: float(cv.best[k]) for k in ("w1", "theta_alpha", "theta_beta", "mean_iou")}
            for name, cv in result.crf.items()}
    return {"runs": runs, "crf_best": best}


def default_run_root(cfg: Config) -> Path:
    """Where notebooks 05-07 keep the ablation's trainings (checkpoints, cached scores): under the cache."""
    from dlib.core.io import cache_root

    return cache_root() / "runs" / cfg.profile / ABLATION_FOLDER
