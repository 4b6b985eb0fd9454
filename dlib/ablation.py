"""The ablation tables of DeepLab v2: every row trained and evaluated, the paper's number beside it.

Table 4 (ResNet-101, PASCAL VOC 2012 val; the components are cumulative, top to bottom):

    baseline 68.72 | +MSC 71.27 | +COCO 73.28 | +Aug 74.87 | +LargeFOV 75.54 | ASPP 76.35 | +CRF 77.69

Table 3 (VGG-16, before / after CRF): LargeFOV 65.76 / 69.84, ASPP-S 66.98 / 69.73, ASPP-L 68.96 / 71.57.

A row is a *training* (backbone + head, MSC or not, COCO init or not, scale augmentation or not) plus
whether the fully connected CRF post-processes its output. Trainings shared by several rows run once.
Every training goes to its own folder under ``run_root`` and resumes there (``dlib.train``); every
scored row is cached as JSON beside it, so an interrupted notebook picks up where it stopped.

Profiles: ``gpu`` uses the paper's networks on VOC (the COCO rows need a COCO-pretrained DeepLab
checkpoint at ``model.coco_checkpoint``; without one they are reported as not run, never faked).
``cpu``/``smoke`` use the small variants on the proxy data set, and the larger proxy set stands in for
MS-COCO: one pretraining (shared by every seed, as the paper fine-tunes from one COCO model) whose
*backbone* initialises the "+COCO" rows (deviation from the paper: the proxy pretraining transfers the
backbone only; the head starts afresh).

The CRF's w1, theta_alpha, theta_beta are chosen by :func:`dlib.crf.cross_validate` on training images
held out from training (``ablation.crf_holdout``), never on the evaluation images.
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

from .config import Config
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

# DeepLab v2, Table 3 (VGG-16, VOC 2012 val, mIoU % before / after CRF). Trained like our
# Table-4 baseline (no MSC, no COCO); scale augmentation as in the profile's default.
TABLE3 = tuple(
    Row("table3", f"{name}{' +CRF' if crf else ''}", Training("vgg", head, aug=True), crf, paper)
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
# Deviation from paper (cpu/smoke): Table 3's heads run on the small ResNet backbone, as single 3x3 classifiers
# per rate. The small VGG-16 (and DeepLab-VGG's fc6-fc7-fc8 branches on the small ResNet) trained from scratch
# stay near the all-background solution for the ablation's few hundred iterations (measured 4-16% mIoU against
# 27% for these heads); DeepLab's VGG-16 and its fc6/fc7 start from ImageNet, which the proxy has no stand-in for.
_SMALL_MODELS = {("resnet", "baseline"): "small_resnet_baseline",
                 ("resnet", "largefov"): "small_resnet_largefov",
                 ("resnet", "aspp_l"): "small_resnet_aspp",
                 ("vgg", "largefov"): "small_resnet_largefov",
                 ("vgg", "aspp_s"): "small_resnet_aspp_s",
                 ("vgg", "aspp_l"): "small_resnet_aspp"}


def model_name(cfg: Config, training: Training) -> str:
    table = _PAPER_MODELS if cfg.data.dataset == "voc" else _SMALL_MODELS
    return table[(training.backbone, training.head)]


def training_config(cfg: Config, training: Training, seed: int) -> Config:
    """The resolved config of one training: the profile's, with the row's components switched."""
    base_lr = cfg.train.base_lr
    if cfg.data.dataset == "voc" and training.backbone == "vgg":
        base_lr = 1e-3  # DeepLab's released VGG-16 solver; ResNet-101 uses 2.5e-4
    overrides: dict[str, Any] = {
        "seed": seed,
        "model.name": model_name(cfg, training),
        "train.msc": training.msc,
        "eval.msc": training.msc,  # MSC: multi-scale inputs with max fusion, in training and at test
        "data.scale_aug": training.aug,
        "train.base_lr": base_lr,
    }
    if cfg.ablation.width is not None:
        overrides["model.width"] = cfg.ablation.width
    if cfg.ablation.iterations is not None:
        overrides["train.iterations"] = cfg.ablation.iterations
        overrides["train.checkpoint_every"] = max(1, min(cfg.train.checkpoint_every, cfg.ablation.iterations))
    return cfg.replace(overrides)


COCO_SEED = 0  # the one proxy "COCO" pretraining


def coco_config(cfg: Config) -> Config:
    """The proxy "COCO" pretraining: the table-4 backbone on the larger proxy set (cpu/smoke only)."""
    iters = cfg.ablation.coco_iterations or cfg.train.iterations
    if cfg.ablation.width is not None:
        cfg = cfg.replace({"model.width": cfg.ablation.width})  # the backbone the rows start from
    return cfg.replace({"seed": COCO_SEED, "model.name": _SMALL_MODELS[("resnet", "aspp_l")], "train.msc": False,
                        "data.scale_aug": True, "train.iterations": iters,
                        "train.checkpoint_every": max(1, min(cfg.train.checkpoint_every, iters))})


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
    """8 hex digits of the resolved config: a changed setting trains into a new folder, never over an old run."""
    return hashlib.sha1(cfg.to_json().encode()).hexdigest()[:8]


def run_dir_of(cfg: Config, training: Training, seed: int, run_root: str | os.PathLike) -> Path:
    """``<run_root>/<training key>_s<seed>_<config tag>``: checkpoints, cached scores, CRF outputs."""
    return Path(run_root) / f"{training.key}_s{seed}_{config_tag(training_config(cfg, training, seed))}"


def _canonical(value: Any) -> Any:
    """As it reads back from JSON (tuples become lists), so a cached key compares equal."""
    return json.loads(json.dumps(jsonable(value)))


def _json_read(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _transfer_backbone(model, source_dir: Path) -> int:
    """Copy the backbone weights of the latest checkpoint in ``source_dir`` into ``model``; returns tensors copied."""
    import torch

    from .train import latest_checkpoint

    ckpt = latest_checkpoint(source_dir)
    if ckpt is None:
        raise FileNotFoundError(f"no pretraining checkpoint in {source_dir}")
    state = torch.load(ckpt, map_location="cpu", weights_only=False)["model"]
    own = model.state_dict()
    backbone = {k: v for k, v in state.items() if k.startswith("backbone.") and k in own and own[k].shape == v.shape}
    if not backbone:
        raise ValueError(f"the checkpoint in {source_dir} has no backbone weights that fit {model.name}")
    model.load_state_dict(backbone, strict=False)
    return len(backbone)


def _load_coco_checkpoint(model, path: str) -> None:
    """A COCO-pretrained DeepLab checkpoint (gpu profile): backbone and, where shapes fit, head."""
    import torch

    state = torch.load(path, map_location="cpu", weights_only=False)
    state = state.get("model", state.get("state_dict", state))
    state = {k.removeprefix("module."): v for k, v in state.items()}
    own = model.state_dict()
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    if not any(k.startswith("backbone.") for k in fitting):
        raise ValueError(f"{path} holds no backbone weights for {model.name}; is it a DeepLab checkpoint?")
    model.load_state_dict(fitting, strict=False)


def coco_pretrain(cfg: Config, run_root: str | os.PathLike, *, progress: bool = False) -> Path:
    """Train (or resume) the proxy "COCO" pretraining on the larger proxy set; returns its run folder."""
    from . import data as dlib_data
    from . import train as dlib_train

    pcfg = coco_config(cfg)
    pre_dir = Path(run_root) / f"coco_pretrain_{config_tag(pcfg)}"
    dlib_train.train(pcfg, pre_dir, dataset=dlib_data.build_dataset(pcfg, "train", large=True), progress=progress)
    return pre_dir


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
    wanted = _canonical({"config": tcfg.to_dict(), "crf_params": crf_params})
    cached = _json_read(cache)
    if cached is not None and cached["key"]["config"] == wanted["config"] and (
            crf_params is None or cached["key"]["crf_params"] == wanted["crf_params"]):
        return cached["scores"]  # (scores with the CRF also hold the scores without it)

    if training.coco and cfg.data.dataset == "voc" and not (
            cfg.model.coco_checkpoint and Path(cfg.model.coco_checkpoint).is_file()):
        return {"status": "not run: no COCO-pretrained init (set model.coco_checkpoint to a local file)"}
    import torch

    # The initial weights come from the global RNG: seed it here, or a training's result would depend on what
    # ran before it in the same worker process.
    torch.manual_seed(seed)
    model = dlib_train.build_model(tcfg)
    if training.coco:
        if cfg.data.dataset == "voc":
            _load_coco_checkpoint(model, cfg.model.coco_checkpoint)
        else:
            _transfer_backbone(model, coco_pretrain(cfg, run_root, progress=progress))
    train_set, _ = split_holdout(dlib_data.build_dataset(tcfg, "train"), cfg.ablation.crf_holdout)
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
    """Refine the cached val probabilities with the CRF (``dlib.crf.refine_dataset``) and score the labels."""
    from .crf import DenseCRF, read_label, refine_dataset
    from .metrics import confusion_matrix, scores

    crf = DenseCRF(**params, w2=cfg.crf.w2, theta_gamma=cfg.crf.theta_gamma, iterations=cfg.crf.iterations,
                   backend=cfg.crf.backend, normalization=cfg.crf.normalization, device=cfg.crf.device)
    index = {name: i for i, name in enumerate(dataset.ids)}
    n = len(dataset) if cfg.eval.max_images is None else min(len(dataset), cfg.eval.max_images)
    ids = list(dataset.ids[:n])
    paths = refine_dataset(probs_dir, out_dir, lambda name: dataset[index[name]][0], crf=crf, ids=ids,
                           workers=1, progress=False)
    k = cfg.model.num_classes
    conf = np.zeros((k, k), dtype=np.int64)
    for name, path in zip(ids, paths):
        conf += confusion_matrix(read_label(path), np.asarray(dataset[index[name]][1]), k)
    s = scores(conf)
    return {"mean_iou": s["mean_iou"], "pixel_acc": s["pixel_acc"], "class_iou": [float(v) for v in s["class_iou"]]}


def tune_crf(cfg: Config, training: Training, seed: int, run_root: str | os.PathLike, *,
             grid: dict[str, Sequence[float]] | None = None):
    """Cross-validate w1, theta_alpha, theta_beta on the held-out training images, with the trained model
    of (``training``, ``seed``) (trained first if needed). Returns a :class:`dlib.crf.CVResult`."""
    import torch

    import pandas as pd

    from . import data as dlib_data
    from . import train as dlib_train
    from .crf import CVResult, cross_validate
    from .evaluate import predict

    run_training(cfg, training, seed, run_root)  # ensures the model is trained
    tcfg = training_config(cfg, training, seed)
    grid = grid or crf_grid(cfg)
    cache = run_dir_of(cfg, training, seed, run_root) / "crf_cv.json"
    wanted = _canonical({"config": tcfg.to_dict(), "grid": {k: list(map(float, v)) for k, v in grid.items()},
                         "holdout": cfg.ablation.crf_holdout, "crf": asdict(cfg.crf)})
    cached = _json_read(cache)
    if cached is not None and cached.get("key") == wanted:
        return CVResult(pd.DataFrame(cached["table"]), cached["best"], cached["baseline"])
    model = dlib_train.build_model(tcfg)
    dlib_train.load_weights(model, run_dir_of(cfg, training, seed, run_root))
    _, held = split_holdout(dlib_data.build_dataset(tcfg, "train"), cfg.ablation.crf_holdout)
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
                        iterations=cfg.crf.iterations, refine=cfg.profile != "smoke",
                        workers=max(1, cfg.ablation.workers), progress=False, backend=cfg.crf.backend,
                        normalization=cfg.crf.normalization, device=cfg.crf.device)
    record = {"key": wanted, "table": cv.table.to_dict("records"), "best": cv.best, "baseline": cv.baseline}
    atomic_write_text(cache, json.dumps(jsonable(record), indent=1) + "\n")
    return cv


def crf_grid(cfg: Config) -> dict[str, list[float]]:
    """The search grid: the paper's (DeepLab v2, Sec. 4.1) for VOC-sized images; scaled to the proxy's
    128-px images for cpu/smoke (theta_alpha is a distance in pixels: 30..100 px on ~500-px images)."""
    if cfg.data.dataset == "voc":
        return {"w1": [3, 4, 5, 6], "theta_alpha": list(range(30, 101, 10)), "theta_beta": [3, 4, 5, 6]}
    if cfg.profile == "smoke":
        return {"w1": [4], "theta_alpha": [8], "theta_beta": [3, 5]}
    scale = cfg.data.proxy_image_size / 500
    return {"w1": [3, 5], "theta_alpha": [round(30 * scale * f) for f in (1, 3)], "theta_beta": [3, 5]}


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
    out: dict[tuple[str, int], dict[str, Any]] = {}
    if cfg.data.dataset != "voc" and any(t.coco for t, _, _ in jobs):
        coco_pretrain(cfg, run_root)  # the "+COCO" rows start from it: train it once, before them
    if workers <= 1:
        for training, seed, crf_params in jobs:
            out[(training.key, seed)] = run_training(cfg, training, seed, run_root, crf_params=crf_params)
        return out
    threads = max(1, (os.cpu_count() or 2) // workers)
    args = [(cfg.to_dict(), t, s, str(run_root), p, threads) for t, s, p in jobs]
    # Longest first (MSC trainings cost about twice the others), so the pool ends together.
    args.sort(key=lambda a: (not a[1].msc, a[1].backbone != "vgg"))
    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, maxtasksperchild=4) as pool:
        for key, seed, res in pool.imap_unordered(_job, args):
            out[(key, seed)] = res
    return out


def summarise(rows: Sequence[Row], results: dict[tuple[str, int], dict[str, Any]], seeds: Sequence[int]):
    """The table: one line per row, the paper's mIoU beside the measured mean and std over seeds (percent).

    Table 4 is cumulative, so it also gets each row's increment over the row above: the paper's, and the
    measured one as the mean and std of the per-seed differences (the two rows share their seeds).
    """
    import pandas as pd

    lines, by_seed = [], []
    for row in rows:
        values: dict[int, float] = {}
        status = "not run"
        for seed in seeds:
            res = results.get((row.training.key, seed))
            if res is None or res.get("status") != "ok":
                status = (res or {}).get("status", "not run")
                continue
            values[seed] = 100 * res["mean_iou_crf" if row.crf else "mean_iou"]
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
    cumulative = bool(rows) and rows[0].table == "table4"  # Table 4 adds one component per row
    for i, line in enumerate(lines):
        line["paper_increment"] = line["paper_miou"] - lines[i - 1]["paper_miou"] if cumulative and i else math.nan
        diffs = np.asarray([v - by_seed[i - 1][s] for s, v in by_seed[i].items() if s in by_seed[i - 1]]
                           if cumulative and i else [], dtype=float)
        line["measured_increment"] = float(diffs.mean()) if len(diffs) else math.nan
        line["increment_std"] = float(diffs.std(ddof=1)) if len(diffs) > 1 else math.nan
    return pd.DataFrame(lines)


TABLES = {"table4": TABLE4, "table3": TABLE3}


@dataclass
class AblationResult:
    tables: dict[str, Any]  # "table4"/"table3" -> pandas DataFrame (see summarise)
    crf: dict[str, Any]  # table -> dlib.crf.CVResult of the CRF tuning (held-out training images)
    crf_model: dict[str, str]  # table -> the training the CRF was tuned with
    runs: dict[tuple[str, int], dict[str, Any]]  # (training key, seed) -> scores


def run_tables(cfg: Config, run_root: str | os.PathLike, tables: Sequence[str] = ("table4", "table3")
               ) -> AblationResult:
    """Every training of ``tables`` for every seed of ``cfg.ablation.seeds``, then the CRF rows.

    The CRF parameters of a table are cross-validated once, on the held-out training images, with the
    first seed's model of the table's last CRF row (Table 4: ASPP; Table 3: ASPP-L), and applied to every
    CRF row of that table (the paper tuned on 100 val images; we never touch the evaluation images).
    """
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise ValueError(f"unknown tables {unknown}; valid: {sorted(TABLES)}")
    seeds = tuple(cfg.ablation.seeds)
    if not seeds:
        raise ValueError("ablation.seeds is empty; give at least one seed")
    trainings = list(dict.fromkeys(row.training for name in tables for row in TABLES[name]))
    runs = run_trainings(cfg, [(t, s, None) for t in trainings for s in seeds], run_root)
    crf, crf_model, crf_jobs = {}, {}, {}
    for name in tables:
        crf_rows = [r for r in TABLES[name] if r.crf]
        target = crf_rows[-1].training
        if runs[(target.key, seeds[0])].get("status") != "ok":
            continue  # e.g. the COCO rows on VOC without a COCO checkpoint: reported as not run
        crf[name] = tune_crf(cfg, target, seeds[0], run_root)
        crf_model[name] = target.key
        params = {k: float(crf[name].best[k]) for k in ("w1", "theta_alpha", "theta_beta")}
        for row in crf_rows:
            for seed in seeds:
                crf_jobs[(row.training.key, seed)] = (row.training, seed, params)
    runs.update(run_trainings(cfg, list(crf_jobs.values()), run_root))
    return AblationResult({name: summarise(TABLES[name], runs, seeds) for name in tables}, crf, crf_model, runs)


def short_name(row: str) -> str:
    """A row name short enough for an axis label ("ASPP (instead of LargeFOV)" -> "ASPP")."""
    return row.replace(" (instead of LargeFOV)", "")


def plot_increments(table4, ax=None):
    """Bars of each component's increment (percentage points), the paper's beside the measured mean +- std."""
    import matplotlib.pyplot as plt

    df = table4.iloc[1:]
    if ax is None:
        _, ax = plt.subplots(figsize=(9, 3.6))
    x = np.arange(len(df))
    ax.bar(x - 0.2, df["paper_increment"], 0.4, label="paper (DeepLab v2, Table 4)", color="0.6")
    ax.bar(x + 0.2, df["measured_increment"], 0.4, yerr=df["increment_std"].fillna(0), capsize=3,
           label="measured (mean +- std of the per-seed differences)", color="tab:red")
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(x, [short_name(r) for r in df["row"]], rotation=15)
    ax.set_ylabel("mIoU increment (points)")
    ax.legend()
    return ax



def verdicts(table4) -> Any:
    """For each Table-4 component: the paper's increment, ours, and whether it reproduces.

    A measured increment is *resolved* when it is at least two standard errors of the per-seed
    differences away from zero; a resolved increment reproduces *in sign* when it has the paper's
    sign, and *in size* when it is also within a factor of two of the paper's.
    """
    import pandas as pd

    lines = []
    for _, r in table4.iloc[1:].iterrows():
        delta, paper, n = r["measured_increment"], r["paper_increment"], int(r["seeds"])
        se = r["increment_std"] / math.sqrt(n) if n > 1 and not math.isnan(r["increment_std"]) else math.nan
        if math.isnan(delta):
            verdict = "not measured"
        elif math.isnan(se) or abs(delta) < 2 * se:
            verdict = "not resolved: within seed noise"
        elif np.sign(delta) != np.sign(paper):
            verdict = "does not reproduce: opposite sign"
        elif 0.5 <= delta / paper <= 2:
            verdict = "reproduces in sign and size"
        else:
            verdict = "reproduces in sign, not in size"
        lines.append({"component": r["row"], "paper_increment": paper, "measured_increment": delta,
                      "standard_error": se, "verdict": verdict})
    return pd.DataFrame(lines)


def runs_record(result: AblationResult) -> dict[str, Any]:
    """Every (training, seed) score of a run, JSON-ready (what ``dlib.check`` compares against)."""
    runs = {}
    for (key, seed), res in sorted(result.runs.items()):
        runs[f"{key}_s{seed}"] = {k: v for k, v in res.items() if k not in ("class_iou", "class_iou_crf", "run_dir")}
    best = {name: {k: float(cv.best[k]) for k in ("w1", "theta_alpha", "theta_beta", "mean_iou")}
            for name, cv in result.crf.items()}
    return {"runs": runs, "crf_best": best, "crf_model": result.crf_model}


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
