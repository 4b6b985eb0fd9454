"""The ablation tables of DeepLab v2: every row trained and evaluated, the paper's number beside it.

Table 4 (ResNet-101, PASCAL VOC 2012 val; the components are cumulative, top to bottom):

    baseline 68.72 | +MSC 71.27 | +COCO 73.28 | +Aug 74.87 | +LargeFOV 75.54 | ASPP 76.35 | +CRF 77.69

Table 3 (VGG-16, no scale augmentation, before / after CRF): LargeFOV 65.76 / 69.84, ASPP-S 66.98 / 69.73,
ASPP-L 68.96 / 71.57.

A row is a *training* (backbone + head, MSC or not, COCO init or not, scale augmentation or not) plus
whether the fully connected CRF post-processes its output. Trainings shared by several rows run once.
Every training goes to its own folder under ``run_root`` and resumes there (``dlib.train``); every
scored row is cached as JSON beside it, so an interrupted notebook picks up where it stopped. Beside the
cumulative Table 4, :data:`ONE_AT_A_TIME` adds each component alone to the baseline.

Profiles: ``gpu`` uses the paper's networks on VOC from ImageNet weights; the COCO rows start from the
COCO-pretrained DeepLab model at ``model.coco_checkpoint`` (without one they are reported as not run,
never faked). ``cpu``/``smoke`` use the small variants on the proxy data set, fine-tuned from the shipped
stand-ins (dlib.standins): the ImageNet stand-in for every row, the COCO stand-in (the whole model,
classifier included) for the +COCO rows, as the paper does.

Statistics: every row runs with the seeds of ``ablation.seeds``; an increment is the mean of the
per-seed paired differences with a 95% t-interval (n - 1 degrees of freedom), and its verdict follows
from the interval (:func:`increment_stats`).

The CRF's w1, theta_alpha, theta_beta are chosen per CRF row (each training of a CRF row has its own
search) by :func:`dlib.crf_tuning.cross_validate`, on the images ``ablation.crf_tune_on`` names:

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
import math
import multiprocessing as mp
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .config import Config, identity_dict
from .io import read_json
from .results import atomic_write_text, jsonable


@dataclass(frozen=True)
class Training:
    """One network to train: which backbone family and head, and the training-time components."""

    backbone: str  # "resnet" or "vgg"
    head: str  # "baseline", "largefov", "aspp_s", "aspp_l"
    msc: bool = False
    coco: bool = False
    aug: bool = False

    @property
    def key(self) -> str:
        parts = [self.backbone, self.head] + [c for c in ("msc", "coco", "aug") if getattr(self, c)]
        return "_".join(parts)


@dataclass(frozen=True)
class Row:
    table: str  # "table4" or "table3"
    name: str
    training: Training
    crf: bool
    paper_miou: float  # the paper's number (percent)

    @property
    def components(self) -> str:
        t = self.training
        used = [c.upper() if c != "aug" else "Aug" for c in ("msc", "coco", "aug") if getattr(t, c)]
        used.append({"baseline": "baseline head", "largefov": "LargeFOV", "aspp_s": "ASPP-S",
                     "aspp_l": "ASPP-L"}[t.head])
        if self.crf:
            used.append("CRF")
        return " + ".join(used)


def _t4(msc=False, coco=False, aug=False, head="baseline") -> Training:
    return Training("resnet", head, msc=msc, coco=coco, aug=aug)


# DeepLab v2, Table 4 (ResNet-101, VOC 2012 val, mIoU %).
TABLE4 = (
    Row("table4", "baseline", _t4(), False, 68.72),
    Row("table4", "+MSC", _t4(msc=True), False, 71.27),
    Row("table4", "+COCO", _t4(msc=True, coco=True), False, 73.28),
    Row("table4", "+Aug", _t4(msc=True, coco=True, aug=True), False, 74.87),
    Row("table4", "+LargeFOV", _t4(msc=True, coco=True, aug=True, head="largefov"), False, 75.54),
    Row("table4", "ASPP (instead of LargeFOV)", _t4(msc=True, coco=True, aug=True, head="aspp_l"), False, 76.35),
    Row("table4", "+CRF", _t4(msc=True, coco=True, aug=True, head="aspp_l"), True, 77.69),
)

# DeepLab v2, Table 3 (VGG-16, VOC 2012 val, mIoU % before / after CRF): no MSC, no COCO, no scale
# augmentation (a Table-4 component), each row with its own cross-validated CRF.
TABLE3 = tuple(
    Row("table3", f"{name}{' +CRF' if crf else ''}", Training("vgg", head), crf, paper)
    for name, head, before, after in (("LargeFOV", "largefov", 65.76, 69.84), ("ASPP-S", "aspp_s", 66.98, 69.73),
                                      ("ASPP-L", "aspp_l", 68.96, 71.57))
    for crf, paper in ((False, before), (True, after))
)

# Model names per profile family. Paper networks for gpu, small variants for cpu/smoke.
_PAPER_MODELS = {("resnet", "baseline"): "deeplab_v2_resnet101_baseline",
                 ("resnet", "largefov"): "deeplab_v2_resnet101_largefov",
                 ("resnet", "aspp_l"): "deeplab_v2_resnet101_aspp",
                 ("vgg", "largefov"): "deeplab_v1_largefov",
                 ("vgg", "aspp_s"): "deeplab_v2_vgg16_aspp_s",
                 ("vgg", "aspp_l"): "deeplab_v2_vgg16_aspp_l"}
# Deviation from paper (cpu/smoke): Table 3's heads run on the small ResNet backbone. The VGG-16-shaped small
# network (small_vgg_*, with its shipped ImageNet stand-in) did not leave the all-background solution when
# fine-tuned in this budget: 4.5% mIoU at lr 1e-2 and 4.3% at 3e-3 after 500 iterations on the development
# split, against 35-46% for the small ResNet; its stand-in reached only 14% mIoU on the pretext task.
_SMALL_MODELS = {("resnet", "baseline"): "small_resnet_baseline",
                 ("resnet", "largefov"): "small_resnet_largefov",
                 ("resnet", "aspp_l"): "small_resnet_aspp",
                 ("vgg", "largefov"): "small_resnet_largefov",
                 ("vgg", "aspp_s"): "small_resnet_aspp_s",
                 ("vgg", "aspp_l"): "small_resnet_aspp"}

# Each component added alone to the Table-4 baseline (not in the paper, which adds them cumulatively).
ONE_AT_A_TIME = (
    Row("ofat", "baseline", _t4(), False, math.nan),
    Row("ofat", "+MSC", _t4(msc=True), False, math.nan),
    Row("ofat", "+COCO", _t4(coco=True), False, math.nan),
    Row("ofat", "+Aug", _t4(aug=True), False, math.nan),
    Row("ofat", "+LargeFOV", _t4(head="largefov"), False, math.nan),
    Row("ofat", "+ASPP", _t4(head="aspp_l"), False, math.nan),
    Row("ofat", "+CRF", _t4(), True, math.nan),
)


def model_name(cfg: Config, training: Training) -> str:
    table = _PAPER_MODELS if cfg.data.dataset == "voc" else _SMALL_MODELS
    return table[(training.backbone, training.head)]


def training_config(cfg: Config, training: Training, seed: int) -> Config:
    """The resolved config of one training: the profile's, with the row's components switched.

    The base lr follows the model's family at training time (:func:`dlib.train.base_lr_for`: ``train.base_lr``
    for ResNet, ``train.base_lr_vgg`` for VGG-16; DeepLab's released solvers use 2.5e-4 and 1e-3). Every
    checkpoint is kept, for the convergence curve of notebook 06.
    """
    name = model_name(cfg, training)
    overrides: dict[str, Any] = {
        "seed": seed,
        "model.name": name,
        "train.msc": training.msc,
        "eval.msc": training.msc,  # MSC: multi-scale inputs with max fusion, in training and at test
        "data.scale_aug": training.aug,
        "train.keep_checkpoints": 0,
    }
    if not training.coco:
        overrides["model.coco_checkpoint"] = None
    elif str(cfg.model.coco_checkpoint).endswith(".caffemodel"):  # dlib.caffe.is_caffemodel, without torch
        # The released COCO model (dlib.caffe) fits the prototxt's network and the Caffe input convention.
        overrides.update({"model.caffe_layout": True, "data.input_convention": "caffe"})
    if cfg.ablation.width is not None:
        overrides["model.width"] = cfg.ablation.width
    if cfg.ablation.iterations is not None:
        overrides["train.iterations"] = cfg.ablation.iterations
        overrides["train.checkpoint_every"] = max(1, cfg.ablation.iterations // 5)  # one at 80%: last_fifth_gain
    return cfg.replace(overrides)


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
    since runs were cached count only away from their neutral value (:func:`dlib.config.identity_dict`).
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
    parts = [tcfg.model.name] + [c for c in ("msc", "coco", "aug") if getattr(training, c)]
    return Path(run_root) / f"{'_'.join(parts)}_s{seed}_{config_tag(tcfg)}"


def _canonical(value: Any) -> Any:
    """As it reads back from JSON (tuples become lists), so a cached key compares equal."""
    return json.loads(json.dumps(jsonable(value)))


def load_coco_checkpoint(model, path: str) -> None:
    """A COCO-pretrained DeepLab model (the stand-in on cpu, a user's file on gpu): backbone *and* head.

    DeepLab v2's +COCO rows fine-tune the whole COCO model, classifier included (same 21 classes here).
    A released ``init.caffemodel`` (dlib.caffe) loads into a Caffe-layout model; its classifier (COCO's classes,
    another layer name) is not copied, as in Caffe, and the report says so.
    """
    from .models import load_pretrained, read_state_dict

    from .caffe import is_caffemodel, load_caffemodel

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
    from . import data as dlib_data
    from . import train as dlib_train
    from .evaluate import evaluate

    run_root = Path(run_root)
    tcfg = training_config(cfg, training, seed)
    run_dir = run_dir_of(cfg, training, seed, run_root)
    cache = run_dir / "scores.json"
    wanted = _canonical({"config": identity_dict(tcfg), "crf_params": crf_params})
    cached = read_json(cache, default=None)
    if cached is not None and cached["key"]["config"] == wanted["config"] and (
            crf_params is None or cached["key"]["crf_params"] == wanted["crf_params"]):
        return cached["scores"]  # (scores with the CRF also hold the scores without it)

    from .standins import resolve_coco

    coco = resolve_coco(tcfg) if training.coco else None
    if training.coco and not (coco and Path(coco).is_file()):
        return {"status": "not run: no COCO-pretrained init (set model.coco_checkpoint to a local file)"}
    import torch

    # The initial weights come from the global RNG: seed it here, or a training's result would depend on what
    # ran before it in the same worker process.
    torch.manual_seed(seed)
    model = dlib_train.build_model(tcfg)
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
                           "threads": torch.get_num_threads()}  # CPU results repeat exactly for the same threads
    if crf_params:
        crf_scores = crf_score(tcfg, val, probs_dir, run_dir / "val_crf", crf_params)
        out.update({"mean_iou_crf": crf_scores["mean_iou"], "pixel_acc_crf": crf_scores["pixel_acc"],
                    "class_iou_crf": crf_scores["class_iou"], "crf_params": crf_params})
    atomic_write_text(cache, json.dumps(jsonable({"key": wanted, "scores": out}), indent=1) + "\n")
    return out


def crf_score(cfg: Config, dataset: Any, probs_dir: Path, out_dir: Path, params: dict[str, float]) -> dict[str, Any]:
    """Refine the cached val probabilities with the CRF (``dlib.crf_tuning.refine_and_score``) and score the labels."""
    from .crf import DenseCRF
    from .crf_tuning import refine_and_score

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
    from . import data as dlib_data

    if cfg.ablation.crf_tune_on == "val100":
        val = dlib_data.build_dataset(tcfg, "val")
        return Subset(val, range(min(PAPER_CRF_TUNE_IMAGES, len(val))))
    _, held = split_holdout(dlib_data.build_dataset(tcfg, "train"), cfg.ablation.crf_holdout)
    return held


def crf_tuning_description(cfg: Config) -> str:
    """One line saying where the CRF rows are tuned (``ablation.crf_tune_on``), for tables and notebooks."""
    if cfg.ablation.crf_tune_on == "val100":
        return (f"CRF cross-validated on the first {PAPER_CRF_TUNE_IMAGES} val images (the paper's protocol, DeepLab v2 "
                "Sec. 4.1; those images are also scored)")
    return f"CRF cross-validated on {cfg.ablation.crf_holdout} training images held out from training"


def tune_crf(cfg: Config, training: Training, seed: int, run_root: str | os.PathLike, *,
             grid: dict[str, Sequence[float]] | None = None):
    """Cross-validate w1, theta_alpha, theta_beta on :func:`crf_tuning_images` (``ablation.crf_tune_on``), with
    the trained model of (``training``, ``seed``) (trained first if needed). Returns a
    :class:`dlib.crf_tuning.CVResult`."""
    import torch

    import pandas as pd

    from . import train as dlib_train
    from .crf_tuning import CVResult, cross_validate
    from .evaluate import predict

    run_training(cfg, training, seed, run_root)  # ensures the model is trained
    tcfg = training_config(cfg, training, seed)
    grid = grid or crf_grid(cfg)
    cache = run_dir_of(cfg, training, seed, run_root) / "crf_cv.json"
    wanted = _canonical({"config": identity_dict(tcfg), "grid": {k: list(map(float, v)) for k, v in grid.items()},
                         "holdout": cfg.ablation.crf_holdout, "crf": asdict(cfg.crf)})
    cached = read_json(cache, default=None)
    if cached is not None and cached.get("key") == wanted:
        return CVResult(pd.DataFrame(cached["table"]), cached["best"], cached["baseline"])
    model = dlib_train.build_model(tcfg)
    dlib_train.load_weights(model, run_dir_of(cfg, training, seed, run_root))
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
                        iterations=cfg.crf.iterations, refine=cfg.data.dataset == "voc",
                        workers=max(1, cfg.ablation.workers), progress=False, backend=cfg.crf.backend,
                        normalization=cfg.crf.normalization, device=cfg.crf.device)
    record = {"key": wanted, "table": cv.table.to_dict("records"), "best": cv.best, "baseline": cv.baseline}
    atomic_write_text(cache, json.dumps(jsonable(record), indent=1) + "\n")
    return cv


def crf_grid(cfg: Config) -> dict[str, list[float]]:
    """The search grid: the paper's (DeepLab v2, Sec. 4.1) for VOC-sized images, searched coarse then fine as
    the paper did; on the proxy (cpu/smoke) one fixed grid without the fine stage, with theta_alpha (a distance
    in pixels) scaled from ~500-px images to the proxy's size (the paper's 40, 80, 120 px)."""
    if cfg.data.dataset == "voc":
        return {"w1": [3, 4, 5, 6], "theta_alpha": list(range(30, 101, 10)), "theta_beta": [3, 4, 5, 6]}
    if cfg.profile == "smoke":
        return {"w1": [4], "theta_alpha": [8], "theta_beta": [3, 5]}
    scale = cfg.data.proxy_image_size / 500
    return {"w1": [4, 6, 8], "theta_alpha": [round(f * scale) for f in (40, 80, 120)], "theta_beta": [3, 6]}


# --------------------------------------------------------------------------------------------
# Whole tables
# --------------------------------------------------------------------------------------------

def _job(args: tuple) -> tuple[str, int, dict[str, Any]]:
    cfg_dict, training, seed, run_root, crf_params, threads = args
    import torch

    torch.set_num_threads(threads)
    cfg = Config.from_dict(cfg_dict)
    return training.key, seed, run_training(cfg, training, seed, run_root, crf_params=crf_params)


def run_trainings(cfg: Config, jobs: Sequence[tuple[Training, int, dict | None]], run_root: str | os.PathLike, *,
                  workers: int | None = None) -> dict[tuple[str, int], dict[str, Any]]:
    """Run (training, seed, crf_params) jobs, ``workers`` at a time in separate processes (1: in this one).

    On a small CPU two single-threaded trainings side by side beat one two-threaded training. Results are
    deterministic for a given number of threads per training.
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
    if workers <= 1:
        for training, seed, crf_params in unique.values():
            done[(training.key, seed)] = run_training(cfg, training, seed, run_root, crf_params=crf_params)
    else:
        threads = max(1, (os.cpu_count() or 2) // workers)
        args = [(cfg.to_dict(), t, s, str(run_root), p, threads) for t, s, p in unique.values()]
        # Longest first (MSC trainings cost about twice the others), so the pool ends together.
        args.sort(key=lambda a: (not a[1].msc, a[1].head == "baseline"))
        ctx = mp.get_context("spawn")
        with ctx.Pool(workers, maxtasksperchild=4) as pool:
            for key, seed, res in pool.imap_unordered(_job, args):
                done[(key, seed)] = res
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for ident, (training, seed, _) in unique.items():
        for key in keys[ident]:
            out[key] = done[(training.key, seed)]
    return out


def increment_stats(diffs: Sequence[float], level: float = 0.95) -> dict[str, float]:
    """Mean of paired per-seed differences and its two-sided t-interval (n - 1 degrees of freedom).

    ``mean +- t_{(1+level)/2, n-1} * sd / sqrt(n)``; with one seed the interval is undefined (nan).
    """
    from scipy import stats

    d = np.asarray(list(diffs), dtype=float)
    n = len(d)
    if n == 0:
        return {"mean": math.nan, "sd": math.nan, "n": 0, "ci_low": math.nan, "ci_high": math.nan}
    mean = float(d.mean())
    if n == 1:
        return {"mean": mean, "sd": math.nan, "n": 1, "ci_low": math.nan, "ci_high": math.nan}
    sd = float(d.std(ddof=1))
    half = float(stats.t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return {"mean": mean, "sd": sd, "n": n, "ci_low": mean - half, "ci_high": mean + half}


def verdict(ci_low: float, ci_high: float, paper: float = math.nan) -> str:
    """What a 95% interval of an increment says: its sign (or none), and whether that is the paper's."""
    if math.isnan(ci_low) or math.isnan(ci_high):
        return "not measured (fewer than 2 seeds)"
    if ci_low > 0:
        sign = "helps (interval above 0)"
    elif ci_high < 0:
        sign = "hurts (interval below 0)"
    else:
        return "not resolved (interval contains 0)"
    if math.isnan(paper):
        return sign
    return sign + ("; as in the paper" if (ci_low > 0) == (paper > 0) else "; the paper's sign is the opposite")


def _row_values(row: Row, results: dict[tuple[str, int], dict[str, Any]], seeds: Sequence[int]):
    values: dict[int, float] = {}
    status = "not run"
    for seed in seeds:
        res = results.get((row.training.key, seed))
        if res is None or res.get("status") != "ok":
            status = (res or {}).get("status", "not run")
            continue
        values[seed] = 100 * res["mean_iou_crf" if row.crf else "mean_iou"]
    return values, status


def summarise(rows: Sequence[Row], results: dict[tuple[str, int], dict[str, Any]], seeds: Sequence[int], *,
              reference: str = "previous"):
    """The table: one line per row, the paper's mIoU beside the measured mean and std over seeds (percent).

    Increments (Table 4 and the one-at-a-time table): each row against the row above (``reference=
    "previous"``, cumulative Table 4) or against the first row (``"first"``), as the mean of the paired
    per-seed differences with its 95% t-interval (columns ``increment_ci_low``/``increment_ci_high``) and
    :func:`verdict`. Table 3 (``reference=None``) has no increments.
    """
    import pandas as pd

    lines, by_seed = [], []
    for row in rows:
        values, status = _row_values(row, results, seeds)
        by_seed.append(values)
        arr = np.asarray(list(values.values()), dtype=float)
        lines.append({
            "table": row.table, "row": row.name, "components": row.components,
            "model": (results.get((row.training.key, seeds[0])) or {}).get("model", ""),
            "paper_miou": row.paper_miou,
            "measured_mean": float(arr.mean()) if len(arr) else math.nan,
            "measured_std": float(arr.std(ddof=1)) if len(arr) > 1 else (0.0 if len(arr) else math.nan),
            "seeds": len(arr), "status": "ok" if len(arr) else status,
            "per_seed": ";".join(f"{v:.2f}" for v in arr),
        })
    for i, line in enumerate(lines):
        j = None if reference is None or i == 0 else (i - 1 if reference == "previous" else 0)
        if j is None:
            line.update({"paper_increment": math.nan, "measured_increment": math.nan, "increment_std": math.nan,
                         "increment_ci_low": math.nan, "increment_ci_high": math.nan, "verdict": ""})
            continue
        line["paper_increment"] = line["paper_miou"] - lines[j]["paper_miou"]
        st = increment_stats([v - by_seed[j][s] for s, v in by_seed[i].items() if s in by_seed[j]])
        line.update({"measured_increment": st["mean"], "increment_std": st["sd"], "increment_ci_low": st["ci_low"],
                     "increment_ci_high": st["ci_high"],
                     "verdict": verdict(st["ci_low"], st["ci_high"], line["paper_increment"])})
    return pd.DataFrame(lines)


TABLES = {"table4": TABLE4, "table3": TABLE3, "ofat": ONE_AT_A_TIME}
_REFERENCE = {"table4": "previous", "table3": None, "ofat": "first"}


@dataclass
class AblationResult:
    tables: dict[str, Any]  # "table4"/"table3"/"ofat" -> pandas DataFrame (see summarise)
    crf: dict[str, Any]  # training key -> dlib.crf_tuning.CVResult of its CRF tuning (ablation.crf_tune_on's images)
    runs: dict[tuple[str, int], dict[str, Any]]  # (training key, seed) -> scores


def run_tables(cfg: Config, run_root: str | os.PathLike, tables: Sequence[str] = ("table4", "table3", "ofat")
               ) -> AblationResult:
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
    trainings = list(dict.fromkeys(row.training for name in tables for row in TABLES[name]))
    runs = run_trainings(cfg, [(t, s, None) for t in trainings for s in seeds], run_root)
    crf, crf_jobs = {}, []
    for training in dict.fromkeys(r.training for name in tables for r in TABLES[name] if r.crf):
        if runs[(training.key, seeds[0])].get("status") != "ok":
            continue  # e.g. the COCO rows on VOC without a COCO checkpoint: reported as not run
        crf[training.key] = tune_crf(cfg, training, seeds[0], run_root)
        params = {k: float(crf[training.key].best[k]) for k in ("w1", "theta_alpha", "theta_beta")}
        crf_jobs += [(training, seed, params) for seed in seeds]
    runs.update(run_trainings(cfg, crf_jobs, run_root))
    return AblationResult({name: summarise(TABLES[name], runs, seeds, reference=_REFERENCE[name])
                           for name in tables}, crf, runs)


def short_name(row: str) -> str:
    """A row name short enough for an axis label ("ASPP (instead of LargeFOV)" -> "ASPP")."""
    return row.replace(" (instead of LargeFOV)", "")


def plot_increments(table, ax=None, *, paper: bool = True):
    """Bars of each component's increment (points): the paper's beside the measured mean with its 95% interval."""
    import matplotlib.pyplot as plt

    df = table.iloc[1:]
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.6))
    x = np.arange(len(df))
    mean = df["measured_increment"].to_numpy(float)
    err = np.vstack([mean - df["increment_ci_low"].to_numpy(float), df["increment_ci_high"].to_numpy(float) - mean])
    if paper:
        ax.bar(x - 0.2, df["paper_increment"], 0.4, label="paper (DeepLab v2, Table 4)", color="0.6")
    ax.bar(x + (0.2 if paper else 0), mean, 0.4, yerr=np.nan_to_num(err), capsize=3,
           label="measured (mean of the per-seed paired differences, 95% interval)", color="tab:red")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, [short_name(r) for r in df["row"]], rotation=15)
    ax.set_ylabel("mIoU increment (points)")
    ax.legend()
    return ax


def verdicts(table) -> Any:
    """For each increment: the paper's, ours with its 95% interval, and the verdict that interval gives."""
    cols = ["row", "paper_increment", "measured_increment", "increment_ci_low", "increment_ci_high", "verdict"]
    return table.iloc[1:][cols].rename(columns={"row": "component"}).reset_index(drop=True)


def runs_record(result: AblationResult) -> dict[str, Any]:
    """Every (training, seed) score of a run, JSON-ready (what ``dlib.check`` compares against)."""
    runs = {}
    for (key, seed), res in sorted(result.runs.items()):
        runs[f"{key}_s{seed}"] = {k: v for k, v in res.items() if k not in ("class_iou", "class_iou_crf", "run_dir")}
    best = {name: {k: float(cv.best[k]) for k in ("w1", "theta_alpha", "theta_beta", "mean_iou")}
            for name, cv in result.crf.items()}
    return {"runs": runs, "crf_best": best}


def msc_diagnosis(cfg: Config, run_root: str | os.PathLike, seed: int | None = None):
    """Where MSC's effect comes from: the Table-4 baseline and +MSC networks, each scored single-scale and
    with MSC max fusion at test time (mIoU %, val set). Uses the trained runs of ``run_tables``."""
    import pandas as pd

    from . import data as dlib_data
    from . import train as dlib_train
    from .evaluate import evaluate

    seed = cfg.ablation.seeds[0] if seed is None else seed
    lines = []
    for row in TABLE4[:2]:
        tcfg = training_config(cfg, row.training, seed)
        model = dlib_train.build_model(tcfg)
        dlib_train.load_weights(model, run_dir_of(cfg, row.training, seed, run_root))
        val = dlib_data.build_dataset(tcfg, "val")
        scores = {msc: 100 * evaluate(tcfg, model, val, msc=msc, progress=False)["mean_iou"] for msc in (False, True)}
        lines.append({"trained": f"{row.name} ({'with' if row.training.msc else 'without'} MSC losses)",
                      "test single-scale": scores[False], "test MSC (max fusion)": scores[True]})
    return pd.DataFrame(lines).set_index("trained")


def convergence(cfg: Config, training: Training, seeds: Sequence[int], run_root: str | os.PathLike, *,
                split: str = "val"):
    """mIoU (%) of every kept checkpoint of one training, for each seed, on the proxy ``split`` (default the
    development split): the curve that shows whether ``train.iterations`` reaches a plateau. One line per
    (seed, iteration). Uses the trained runs."""
    import pandas as pd

    from . import data as dlib_data
    from . import train as dlib_train
    from .evaluate import evaluate

    lines = []
    for seed in seeds:
        tcfg = training_config(cfg, training, seed)
        folder = run_dir_of(cfg, training, seed, run_root) / dlib_train.CHECKPOINT_DIR
        val = dlib_data.build_dataset(tcfg.replace({"data.val_split": split}) if cfg.data.dataset == "proxy"
                                      else tcfg, "val")
        for ckpt in sorted(folder.glob("ckpt_*.pt")):
            model = dlib_train.build_model(tcfg)
            dlib_train.load_weights(model, ckpt)
            score = evaluate(tcfg, model, val, progress=False)["mean_iou"]
            lines.append({"seed": seed, "iteration": int(ckpt.stem.split("_")[1]), "mean_iou": 100 * score})
    return pd.DataFrame(lines)


def last_fifth_gain(curve) -> float:
    """mIoU gained over the last fifth of training (points), on the mean over seeds: the final checkpoint minus
    the checkpoint at 80% of the run. Raises when no checkpoint sits at 80% (set ``train.checkpoint_every`` to
    a fifth of ``train.iterations``)."""
    mean = curve.groupby("iteration")["mean_iou"].mean()
    last = int(mean.index.max())
    if 0.8 * last not in mean.index:
        raise ValueError(f"no checkpoint at 80% of {last} iterations (have {list(mean.index)}); set "
                         f"train.checkpoint_every to a fifth of train.iterations")
    return float(mean.loc[last] - mean.loc[0.8 * last])


def default_run_root(cfg: Config) -> Path:
    """Where notebooks 05-07 keep the ablation's trainings (checkpoints, cached scores): under the cache."""
    from .data import cache_root

    return cache_root() / "runs" / cfg.profile / "06_ablation"


def _paired(runs: dict[tuple[str, int], dict[str, Any]], a: Row, b: Row, seeds: Sequence[int]) -> dict[str, float]:
    """Per-seed paired differences a - b (percent) and their 95% interval (:func:`increment_stats`)."""
    va, _ = _row_values(a, runs, seeds)
    vb, _ = _row_values(b, runs, seeds)
    return increment_stats([va[s] - vb[s] for s in seeds if s in va and s in vb])


def table3_comparisons(table3, runs: dict[tuple[str, int], dict[str, Any]], seeds: Sequence[int]):
    """Table 3's questions, paired per seed: ASPP-S / ASPP-L against LargeFOV before the CRF, and each CRF gain."""
    import pandas as pd

    by_name = {r.name: r for r in TABLE3}
    paper = table3.set_index("row")["paper_miou"]
    pairs = [("ASPP-S", "LargeFOV"), ("ASPP-L", "LargeFOV")]
    pairs += [(f"{h} +CRF", h) for h in ("LargeFOV", "ASPP-S", "ASPP-L")]
    lines = []
    for a, b in pairs:
        st = _paired(runs, by_name[a], by_name[b], seeds)
        diff = float(paper[a] - paper[b])
        lines.append({"comparison": f"{a} - {b}", "paper_difference": diff, "measured_difference": st["mean"],
                      "ci_low": st["ci_low"], "ci_high": st["ci_high"], "seeds": st["n"],
                      "verdict": verdict(st["ci_low"], st["ci_high"], diff)})
    return pd.DataFrame(lines)


def plot_table3(table3, axes) -> None:
    """Two panels: the paper's Table 3 and ours (mean +- std over seeds), each head before and after its CRF."""
    heads = ["LargeFOV", "ASPP-S", "ASPP-L"]
    t = table3.set_index("row")
    for ax, col, label in ((axes[0], "paper_miou", "paper (DeepLab v2, Table 3; VGG-16, VOC val)"),
                           (axes[1], "measured_mean", "measured (mean +- std over seeds)")):
        before = [t.loc[h, col] for h in heads]
        after = [t.loc[f"{h} +CRF", col] for h in heads]
        xs = np.arange(len(heads))
        err = ([t.loc[h, "measured_std"] for h in heads], [t.loc[f"{h} +CRF", "measured_std"] for h in heads])
        ax.bar(xs - 0.2, before, 0.4, label="before CRF", yerr=err[0] if col == "measured_mean" else None, capsize=3)
        ax.bar(xs + 0.2, after, 0.4, label="after CRF", yerr=err[1] if col == "measured_mean" else None, capsize=3)
        values = [v for v in before + after if not math.isnan(v)]
        if values:
            ax.set_ylim(max(0, min(values) - 8), max(values) + 3)
        ax.set_xticks(xs, heads)
        ax.set(ylabel="mIoU %", title=label)
        ax.legend(fontsize=8)


def class_group_iou(class_iou: Sequence[float], num_classes: int) -> dict[str, float]:
    """Mean IoU (%) of the proxy's look-alike classes (the ``CONTEXT_PAIRS``, told apart only by a context
    ring) and of the other foreground classes, from one per-class IoU vector (NaN classes skipped)."""
    from .data import CONTEXT_PAIRS

    context = sorted({c for pair in CONTEXT_PAIRS for c in pair})
    others = [c for c in range(1, num_classes) if c not in context]
    iou = np.asarray(class_iou, dtype=float)
    return {"look-alike classes IoU %": 100 * float(np.nanmean(iou[context])),
            "other classes IoU %": 100 * float(np.nanmean(iou[others]))}


def context_diagnosis(cfg: Config, runs: dict[tuple[str, int], dict[str, Any]], *, seed: int):
    """:func:`class_group_iou` of each head: alone on the baseline (one-at-a-time rows) and in Table 4
    (after +Aug), first seed, before the CRF."""
    import pandas as pd

    rows = [("alone on the baseline", r) for r in ONE_AT_A_TIME if r.name in ("baseline", "+LargeFOV", "+ASPP")]
    rows += [("Table 4", r) for r in TABLE4[3:6]]
    lines = []
    for where, row in rows:
        res = runs.get((row.training.key, seed)) or {}
        if res.get("status") != "ok" or res.get("class_iou") is None:
            continue
        lines.append({"setting": where, "row": row.name, "head": row.training.head,
                      **class_group_iou(res["class_iou"], cfg.model.num_classes), "mIoU %": 100 * res["mean_iou"]})
    return pd.DataFrame(lines).set_index(["setting", "row"]) if lines else pd.DataFrame(lines)


def training_curves(cfg: Config, rows: Sequence[Row], seeds: Sequence[int], run_root: str | os.PathLike):
    """The logged training loss of each row's training for each seed (``train_log.csv``): one line per log entry."""
    import pandas as pd

    from .train import read_log

    frames = []
    for row in rows:
        for seed in seeds:
            log = read_log(run_dir_of(cfg, row.training, seed, run_root))
            if log:
                frames.append(pd.DataFrame(log).assign(row=row.name, seed=seed))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def collapsed(results: dict[tuple[str, int], dict[str, Any]], trivial_miou: float, *, tolerance: float = 0.005):
    """The (training key, seed) runs whose mIoU is the all-background predictor's (within ``tolerance``):
    trainings that collapsed to predicting background everywhere."""
    return sorted(key for key, res in results.items()
                  if res.get("status") == "ok" and abs(res["mean_iou"] - trivial_miou) <= tolerance)
