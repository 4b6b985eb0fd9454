"""Pretraining the cpu profile's stand-ins: ``python -m dlib pretrain imagenet|coco`` (dlib.nets.standins loads them).

* "ImageNet": each small backbone learns to segment the pretext classes below (7 shapes x 3 colour groups, each
  plain or textured, in any colour on noisy backgrounds at 96 px), a different task and distribution from the
  proxy set; the card records the held-out pretext scores.
* "COCO": the whole DeepLab model of each Table-4 head, from the ImageNet stand-in, on the larger proxy set
  (dlib.data.proxy.PROXY_RECIPE_LARGE: another distribution of the same classes), without scale augmentation (a
  Table-4 row of its own); the card records the held-out large-set scores.
* "control": the +COCO row's network pretrained exactly as its COCO stand-in (same settings, iterations and
  initialisation) on the task's own training images instead (the cpu profile's proxy train split, less the
  images held out for CRF tuning): what the extra iterations alone give, without another data set.

Training is resumable (under ``<cache>/standins``) and deterministic for a given thread count; each weights file
is written atomically with its card (config, data seed, iterations, final scores, sha256, commit).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dlib import data as dlib_data
from dlib.core.config import Config, resolve
from dlib.core.datasets import DATASETS
from dlib.core.io import atomic_write_bytes, atomic_write_text, cache_root
from dlib.data import proxy as dlib_proxy
from dlib.data import proxy_drawing
from dlib.evaluation.evaluate import evaluate
from dlib.experiments.ablation import split_holdout
from dlib.experiments.results import git_commit, jsonable
from dlib.nets.standins import (
    CARD_FIELDS,
    COCO_MODELS,
    CONTROL_MODELS,
    IMAGENET_MODELS,
    card_path,
    coco_path,
    control_path,
    imagenet_path,
    sha256,
)
from dlib.training import train as dlib_train

# The pretext task of the ImageNet stand-in: segment 7 shapes x 3 colour groups x (plain, textured). Like ImageNet's
# classes, its labels depend on shape, colour and texture, but its classes, colours and backgrounds are not the
# proxy set's: any colour (its group is the strongest RGB channel), 6 textures, noise backgrounds, 96 px.
PRETEXT_SHAPES = ("disc", "ellipse", "rect", "triangle", "cross", "diamond", "trapezoid")
PRETEXT_TEXTURES = ("flat", "hstripes", "vstripes", "checker", "dots", "rings")
PRETEXT_COLOUR_GROUPS = ("red", "green", "blue")  # the strongest channel of the object's colour
PRETEXT_CLASSES = DATASETS["pretext"].num_classes  # background + each shape x colour group x plain/textured
assert PRETEXT_CLASSES == 1 + 2 * len(PRETEXT_SHAPES) * len(PRETEXT_COLOUR_GROUPS)
PRETEXT_SIZE = 96
PRETEXT_SEED = 1000  # data seed of the pretext images (disjoint from the proxy set's seeds)

# How each stand-in is trained (dotted config overrides on the cpu profile). Both families pretrain at lr 0.05
# (the lr is chosen by family, dlib.training.schedule.base_lr_for).
IMAGENET_SETTINGS: dict[str, Any] = {
    "data.dataset": "pretext", "data.crop_size": 89, "data.scale_aug": True, "model.pretrained": None,
    "model.num_classes": PRETEXT_CLASSES,
    "train.batch_size": 16, "train.base_lr": 0.05, "train.base_lr_vgg": 0.05, "train.head_lr_mult": 1.0,
    "train.head_bias_lr_mult": 2.0, "train.msc": False, "train.checkpoint_every": 500, "train.warmup": 0,
    "train.channels_last": False,  # the committed stand-ins were built in NCHW: their rebuilds stay bit-identical
}
IMAGENET_ITERATIONS = {"small_resnet": 3000, "small_vgg": 2000}  # the VGG shape is 3x slower per image
IMAGENET_IMAGES = 3000
COCO_SETTINGS: dict[str, Any] = {
    "data.scale_aug": False, "data.crop_size": 145, "model.pretrained": "imagenet", "model.coco_checkpoint": None,
    "train.base_lr": 1e-2, "train.batch_size": 8, "train.iterations": 1500, "train.msc": False,
    "train.checkpoint_every": 500, "train.warmup": 0, "train.channels_last": False,  # as IMAGENET_SETTINGS
}
COCO_IMAGES = 3000
EVAL_IMAGES = 200


def pretext_class(shape: str, texture: str, colour: np.ndarray) -> int:
    """Label of an object: 1 + 6 * shape index + 2 * colour group (strongest RGB channel) + 1 when textured."""
    group = int(np.argmax(colour))
    return 1 + 2 * len(PRETEXT_COLOUR_GROUPS) * PRETEXT_SHAPES.index(shape) + 2 * group + int(texture != "flat")


def make_pretext_sample(rng: np.random.Generator, size: int = PRETEXT_SIZE) -> tuple[np.ndarray, np.ndarray]:
    """One pretext image (uint8 (size, size, 3)) and label (uint8 (size, size), 0 background, 1..42)."""
    image = rng.uniform(40, 215, 3)[None, None, :] + 30 * proxy_drawing.smooth_field(rng, size, 5)[..., None]
    image = image + rng.normal(0, 12, (size, size, 3))  # textured noise background: no gradient, unlike the proxy
    label = np.zeros((size, size), np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        shape = PRETEXT_SHAPES[int(rng.integers(len(PRETEXT_SHAPES)))]
        texture = PRETEXT_TEXTURES[int(rng.integers(len(PRETEXT_TEXTURES)))]
        r = float(np.exp(rng.uniform(np.log(0.12 * size), np.log(0.4 * size))))
        cls = dlib_proxy.ProxyClass(0, "pretext", shape, float(rng.uniform(0.5, 2.0)), "red", texture)
        cy, cx = rng.uniform(0.15 * size, 0.85 * size, 2)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
        dx, dy = xx - cx, yy - cy
        mask = proxy_drawing.shape_mask(cls, dx, dy, r)
        colour = rng.uniform(0, 255, 3)  # any colour; its group (strongest channel) is part of the class
        tex = proxy_drawing.texture(texture, dx, dy, r, 2.5)
        image[mask] = (colour[None, None, :] * (1 + 0.3 * tex[..., None]))[mask]
        label[mask] = pretext_class(shape, texture, colour)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8), label


class PretextSegmentation:
    """``count`` pretext images (``make_pretext_sample``), image i drawn from ``default_rng([seed, i])``."""

    classes = ("background",) + tuple(f"{s}/{c}/{t}" for s in PRETEXT_SHAPES for c in PRETEXT_COLOUR_GROUPS
                                      for t in ("plain", "textured"))

    def __init__(self, count: int, *, seed: int = PRETEXT_SEED, size: int = PRETEXT_SIZE):
        pairs = [make_pretext_sample(np.random.default_rng([seed, i]), size) for i in range(count)]
        self.images = np.stack([p[0] for p in pairs])
        self.labels = np.stack([p[1] for p in pairs])
        self.ids = [f"pretext_{seed}_{i:05d}" for i in range(count)]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, i: int):
        return self.images[i], self.labels[i]


# --------------------------------------------------------------------------------------------
# Files and cards
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# Pretraining
# --------------------------------------------------------------------------------------------

def imagenet_config(family: str) -> Config:
    """The resolved config of ``family``'s ImageNet stand-in pretraining."""
    return resolve("cpu", seed=0, overrides={**IMAGENET_SETTINGS, "model.name": IMAGENET_MODELS[family],
                                             "train.iterations": IMAGENET_ITERATIONS[family],
                                             "data.proxy_image_size": PRETEXT_SIZE})


def coco_config(model_name: str) -> Config:
    """The resolved config of a COCO stand-in pretraining (the cpu profile's data and lr, the large set)."""
    if model_name not in COCO_MODELS:
        raise ValueError(f"no COCO stand-in for {model_name!r}; choose from {', '.join(COCO_MODELS)}")
    return resolve("cpu", seed=0, overrides={**COCO_SETTINGS, "model.name": model_name,
                                             "data.proxy_large_train": COCO_IMAGES})


def _score(cfg: Config, model, dataset) -> dict[str, float]:

    s = evaluate(cfg, model, dataset, progress=False)
    return {"mean_iou": float(s["mean_iou"]), "pixel_acc": float(s["pixel_acc"])}


def _save(model, path: Path, card: dict[str, Any]) -> Path:
    import io

    import torch

    # The shipped weights are tracked files that every build rewrites: they are outputs, not code changes.
    commit = git_commit(outputs=("results", "dlib/weights"))
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu().clone() for k, v in model.state_dict().items()}, buf)
    atomic_write_bytes(path, buf.getvalue())
    card = {**card, "file": path.name, "sha256": sha256(path), "bytes": path.stat().st_size, "commit": commit}
    missing = CARD_FIELDS - set(card)
    if missing:
        raise ValueError(f"the card of {path.name} lacks {', '.join(sorted(missing))} (dlib.nets.standins.CARD_FIELDS)")
    atomic_write_text(card_path(path), json.dumps(jsonable(card), indent=1, sort_keys=True) + "\n")
    return path


def _train_and_save(cfg: Config, run_dir: Path, dataset, held, path: Path, card: dict[str, Any], *,
                    progress: bool) -> Path:
    """Train ``cfg`` on ``dataset`` (resumable in ``run_dir``), score it on ``held`` and write it with its card."""
    import torch

    torch.manual_seed(cfg.seed)
    result = dlib_train.train(cfg, run_dir, dataset=dataset, progress=progress)
    scores_key = card.pop("scores_on")
    card = {**card, "config": cfg.to_dict(), "iterations": cfg.train.iterations,
            "final_scores": {scores_key: _score(cfg, result.model, held)}, "eval_images": EVAL_IMAGES,
            "threads": torch.get_num_threads(), "train_seconds": result.seconds}
    return _save(result.model, path, card)


def _run_root(run_root: Path | None) -> Path:
    return Path(run_root or cache_root() / "standins")


def pretrain_imagenet(family: str, *, run_root: Path | None = None, progress: bool = True) -> Path:
    """Train ``family``'s ImageNet stand-in (resumable, under ``run_root``) and write it with its card."""
    cfg = imagenet_config(family)
    card = {"stand_in_for": "ImageNet", "family": family, "model": cfg.model.name,
            "task": f"segment {PRETEXT_CLASSES - 1} classes (7 shapes x 3 colour groups, plain or textured) in "
                    f"any colour, {PRETEXT_SIZE} px",
            "data_seed": PRETEXT_SEED, "images": IMAGENET_IMAGES, "scores_on": "heldout_pretext"}
    return _train_and_save(cfg, _run_root(run_root) / f"imagenet_{family}", PretextSegmentation(IMAGENET_IMAGES),
                           PretextSegmentation(EVAL_IMAGES, seed=PRETEXT_SEED + 1), imagenet_path(family), card,
                           progress=progress)


def pretrain_coco(model_name: str, *, run_root: Path | None = None, progress: bool = True) -> Path:
    """Train one COCO stand-in (from the ImageNet stand-in) and write it with its card."""
    cfg = coco_config(model_name)
    held = dlib_proxy.ProxySegmentation("val", size=cfg.data.proxy_image_size, count=EVAL_IMAGES,
                                       seed=cfg.data.proxy_seed, large=True)
    card = {"stand_in_for": "MS-COCO", "model": model_name,
            "task": "the 21 proxy classes drawn from another distribution (dlib.data.proxy.PROXY_RECIPE_LARGE: busy "
                    "backgrounds, clutter, more and smaller objects), no scale augmentation",
            "data_seed": cfg.data.proxy_seed, "images": COCO_IMAGES,
            "initialised_from": imagenet_path("small_resnet").name, "scores_on": "heldout_large_set"}
    return _train_and_save(cfg, _run_root(run_root) / f"coco_{model_name}",
                           dlib_data.build_dataset(cfg, "train", large=True), held, coco_path(model_name), card,
                           progress=progress)


def pretrain_control(model_name: str, *, run_root: Path | None = None, progress: bool = True) -> Path:
    """The +COCO control: ``model_name`` pretrained as its COCO stand-in, on the task's own training images."""

    if model_name not in CONTROL_MODELS:
        raise ValueError(f"no +COCO control for {model_name!r}; choose from {', '.join(CONTROL_MODELS)}")
    cfg = coco_config(model_name)
    task = resolve("cpu")
    train_set = dlib_data.build_dataset(task, "train")
    train_set, _ = split_holdout(train_set, task.ablation.crf_holdout)  # the CRF's tuning images stay out
    held = dlib_data.build_dataset(task.replace({"data.val_split": "val"}), "val")
    card = {"stand_in_for": "the +COCO control: the COCO stand-in's pretraining on the task's own data",
            "model": model_name, "task": "the 21 proxy classes on the cpu profile's own training images",
            "data_seed": task.data.proxy_seed, "images": len(train_set),
            "initialised_from": imagenet_path("small_resnet").name, "scores_on": "development_split"}
    return _train_and_save(cfg, _run_root(run_root) / f"control_{model_name}", train_set, held,
                           control_path(model_name), card, progress=progress)

